"""The sync log: one row per row a run sent, refused as invalid or deleted, and what became
of it — so a user can join failures to their data with SQL.

Written as Parquet beside the state, one file per run:

    {state_url}/{model}/sync_log/{YYYY-MM-DD}/{run_id}.parquet

Columns (`SYNC_LOG_SCHEMA`): run_id, model, object, operation, primary_key (masked when
the model redacts it), sf_id, change (added / changed / pending / unchanged on a full
resync / invalid / removed), outcome (succeeded / failed / retried / invalid / deleted),
error_code, message (values of `redact:` fields masked), attempts, logged_at (UTC).

Rows are buffered as Arrow batches and spooled to a local Parquet file while the run
sends (bounded memory), then uploaded once at the end of the run, also when it fails or
is interrupted (what it confirmed is logged). Days older than the retention
(`SF_ACTIVATION_SYNC_LOG_DAYS`) are removed when a run writes its log.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sf_activation.rejects import REDACTED
from sf_activation.state import StateError, StateStore

if TYPE_CHECKING:
    from sf_activation.warehouse import Warehouse

log = logging.getLogger(__name__)

SYNC_LOG_DIR = "sync_log"
MESSAGE_CHARS = 2000
FLUSH_ROWS = 50_000
KEY_FORM = "sf_activation.sync_log.primary_key"  # Parquet metadata: "clear" or "masked"
MASKED_MARKER = f"{SYNC_LOG_DIR}/keys_masked"

SYNC_LOG_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("object", pa.string()),
        pa.field("operation", pa.string()),
        pa.field("primary_key", pa.string()),
        pa.field("sf_id", pa.string()),
        pa.field("change", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("logged_at", pa.timestamp("us", tz="UTC")),
    ]
)


class SyncLog:
    """Collects one run's rows and writes them beside the state at the end."""

    def __init__(
        self,
        state: StateStore,
        *,
        run_id: str,
        model: str,
        object_name: str,
        operation: str,
        work_dir: Path,
        redact: list[str],
        redact_primary_key: bool,
        retention_days: int,
        copy_to: Callable[[Path], None] | None = None,
    ) -> None:
        self.state = state
        # Also given the run's finished log file (the warehouse engine's `sync_log` table).
        self.copy_to = copy_to
        self.run_id = run_id
        self.model = model
        self.object_name = object_name
        self.operation = operation
        self.redact = list(redact)
        self.redact_primary_key = redact_primary_key
        self.retention_days = retention_days
        self.started = dt.datetime.now(dt.UTC)
        self._path = work_dir / f"sync-log-{run_id}.parquet"
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0

    # ------------------------------------------------------------------ collecting

    def add(
        self,
        *,
        pks: pa.Array,
        sf_ids: pa.Array | None,
        change: pa.Array | str,
        outcome: pa.Array | str,
        error_codes: list[str | None] | None = None,
        messages: list[str | None] | None = None,
        attempts: Sequence[int] | np.ndarray | None = None,
        records: list[dict[str, Any]] | None = None,
    ) -> None:
        """Rows of one batch. `records` (the rows' field values, only for rows with a
        message) lets messages be masked where Salesforce echoed a redacted value."""
        n = len(pks)
        if n == 0:
            return
        pk = pks.cast(pa.string())
        if self.redact_primary_key:
            pk = pa.array([None if v is None else REDACTED for v in pk.to_pylist()], pa.string())
        if messages is not None:
            messages = [
                _mask(m, records[i] if records else None, self.redact)
                for i, m in enumerate(messages)
            ]
        batch = pa.RecordBatch.from_arrays(
            [
                _repeat(self.run_id, n),
                _repeat(self.model, n),
                _repeat(self.object_name, n),
                _repeat(self.operation, n),
                pk,
                sf_ids.cast(pa.string()) if sf_ids is not None else pa.nulls(n, pa.string()),
                _column(change, n),
                _column(outcome, n),
                pa.array(error_codes, pa.string()) if error_codes else pa.nulls(n, pa.string()),
                pa.array(messages, pa.string()) if messages else pa.nulls(n, pa.string()),
                pa.array(attempts, pa.int32())
                if attempts is not None and len(attempts)
                else pa.nulls(n, pa.int32()),
                pa.repeat(pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC")), n),
            ],
            schema=SYNC_LOG_SCHEMA,
        )
        self._pending.append(batch)
        self._pending_rows += n
        self.rows += n
        if self._pending_rows >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            schema = SYNC_LOG_SCHEMA.with_metadata({KEY_FORM: self._key_form})
            self._writer = pq.ParquetWriter(self._path, schema, compression="zstd")
        table = pa.Table.from_batches(self._pending, SYNC_LOG_SCHEMA)
        self._writer.write_table(table.replace_schema_metadata({KEY_FORM: self._key_form}))
        self._pending, self._pending_rows = [], 0

    # ------------------------------------------------------------------ writing

    @property
    def relative_path(self) -> str:
        day = self.started.strftime("%Y-%m-%d")
        return f"{SYNC_LOG_DIR}/{day}/{self.run_id}.parquet"

    def publish(self) -> str | None:
        """Upload the run's log (nothing when the run logged no row); its URL. A failure
        is logged, never raised: the log explains a run, it must not fail one."""
        self._flush()
        self._keep_keys_masked()
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        if self.copy_to is not None:
            try:
                self.copy_to(self._path)
            except Exception as exc:  # the warehouse's one-line error; the file still goes
                log.warning("%s: could not copy the sync log to the warehouse: %s", self.model, exc)
        try:
            self.state.upload_file(self._path, self.relative_path)
        except (OSError, StateError) as exc:
            log.warning("%s: could not write the sync log: %s", self.model, exc)
            return None
        finally:
            self._path.unlink(missing_ok=True)
        self._prune()
        return f"{self.state.url}/{self.relative_path}"

    @property
    def _key_form(self) -> str:
        return "masked" if self.redact_primary_key else "clear"

    def _keep_keys_masked(self) -> None:
        """The marker `sync_log/keys_masked` says every log holds masked keys: a model that
        now redacts its key rewrites its older logs once; one that stops removes it."""
        try:
            marked = True
            try:
                self.state.read_bytes(MASKED_MARKER)
            except FileNotFoundError:
                marked = False
            if self.redact_primary_key and not marked:
                self._mask_older_keys()
                self.state.write_bytes(MASKED_MARKER, b"masked\n")
            elif not self.redact_primary_key and marked:
                self.state.delete_files([MASKED_MARKER])
        except (OSError, StateError) as exc:
            log.warning("%s: could not mask the keys of older sync logs: %s", self.model, exc)

    def _mask_older_keys(self) -> None:
        """Logs from before the model redacted its key hold keys in clear: rewrite them
        masked (a file whose metadata says masked is left alone)."""
        for day, _ in self.state.list_dirs(SYNC_LOG_DIR):
            for name in self.state.list_files(f"{SYNC_LOG_DIR}/{day}"):
                self._mask_file(f"{SYNC_LOG_DIR}/{day}/{name}")

    def _mask_file(self, rel: str) -> None:
        local = self._path.with_name(f"older-{self._path.name}")
        try:
            self.state.download_file(rel, local)
            meta = pq.read_schema(local).metadata or {}
            if meta.get(KEY_FORM.encode()) == b"masked":
                return
            table = pq.read_table(local)
            keys = table.column("primary_key").to_pylist()
            masked = pa.array([None if k is None else REDACTED for k in keys], pa.string())
            table = table.set_column(
                table.schema.get_field_index("primary_key"), "primary_key", masked
            )
            pq.write_table(
                table.replace_schema_metadata({KEY_FORM: "masked"}), local, compression="zstd"
            )
            self.state.upload_file(local, rel)
        finally:
            local.unlink(missing_ok=True)

    def _prune(self) -> None:
        if self.retention_days <= 0:
            return
        cutoff = (self.started - dt.timedelta(days=self.retention_days)).strftime("%Y-%m-%d")
        try:
            for day, _ in self.state.list_dirs(SYNC_LOG_DIR):
                if day < cutoff:
                    self.state.delete_tree(f"{SYNC_LOG_DIR}/{day}")
        except (OSError, StateError) as exc:
            log.debug("could not prune the sync log: %s", exc)


WAREHOUSE_TABLE = "sync_log"


def copy_to_warehouse(
    path: Path, warehouse: Warehouse, schema: str, *, model: str, retention_days: int
) -> int:
    """Append a run's log file to ``<schema>.sync_log`` (made on first use; partitioned by
    day on BigQuery), and drop the model's rows older than the retention. Returns rows."""
    d = warehouse.dialect
    if d is None:
        return 0
    t = d.text_type
    stamp = {"postgresql": "TIMESTAMPTZ", "duckdb": "TIMESTAMPTZ", "snowflake": "TIMESTAMP_TZ"}
    columns = [
        (f.name, d.int_type if f.name == "attempts" else stamp.get(d.name, "TIMESTAMP")
         if f.name == "logged_at" else t)
        for f in SYNC_LOG_SCHEMA
    ]  # fmt: skip
    table = d.table(schema, WAREHOUSE_TABLE)
    suffix = " PARTITION BY DATE(logged_at) CLUSTER BY model" if d.name == "bigquery" else ""
    warehouse.ensure_table(schema, WAREHOUSE_TABLE, columns, suffix)
    rows = 0
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=FLUSH_ROWS):
        data = pa.Table.from_batches([batch])
        if d.name != "duckdb":  # literal or CSV loads: the instant as ISO text, in UTC
            stamps = data.column("logged_at").cast(pa.timestamp("us", tz="UTC"))
            text = pa.array(
                [None if v is None else v.isoformat() for v in stamps.to_pylist()], pa.string()
            )
            data = data.set_column(data.schema.get_field_index("logged_at"), "logged_at", text)
        warehouse.load_rows(table, data)
        rows += data.num_rows
    if retention_days > 0:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days)
        stamp_sql = d.literal(cutoff.isoformat())
        if d.name == "bigquery":
            stamp_sql = f"TIMESTAMP {stamp_sql}"
        warehouse.execute(
            f"DELETE FROM {table} WHERE model = {d.literal(model)} AND logged_at < {stamp_sql}"
        )
    return rows


def _repeat(value: str, n: int) -> pa.Array:
    # Filled in Arrow, not converted from a Python list: this runs for every row sent.
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _column(value: pa.Array | str, n: int) -> pa.Array:
    if isinstance(value, str):
        return _repeat(value, n)
    return value.cast(pa.string())


def _mask(message: str | None, record: dict[str, Any] | None, redact: list[str]) -> str | None:
    if message is None:
        return None
    if record:
        for name in redact:
            value = record.get(name)
            if value is not None and str(value):
                message = message.replace(str(value), REDACTED)
    return message[:MESSAGE_CHARS]


def outcome_labels(accepted: np.ndarray, retryable: np.ndarray) -> pa.Array:
    """succeeded / retried / failed per outcome."""
    labels = np.where(accepted, "succeeded", np.where(retryable, "retried", "failed"))
    return pa.array(labels.tolist(), pa.string())
