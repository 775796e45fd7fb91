"""The plan: which rows of this run to send, and which records to delete.

The source (coerced Arrow batches) streams into an on-disk DuckDB database under
``work_dir`` with a memory limit, so a model of tens of millions of rows is planned in
bounded memory; classification is one SQL join against the state, never Python per row.

Every source row gets ``__hash``: md5 of ``__payload``, the canonical serialisation of
its field columns: a JSON object whose keys are the Salesforce field names in sorted
order (so reordering ``fields:`` in the model file changes nothing), nulls written as
``null``, values as the coerced canonical types print in JSON. The payload is kept in
state (see state.py), which lets a plan show field-level before/after and lets a
future change of serialisation re-hash from state instead of re-sending everything.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sf_activation.state import STATE_COLUMNS, StateStore, _safe_setting, _sql_str, fold_sql

META_COLUMNS = ("__pk", "__error_code", "__error_message")
CLASSES = ("invalid", "added", "changed", "unchanged", "pending", "removed")
NULL_PRIMARY_KEY = "NULL_PRIMARY_KEY"
DUPLICATE_PRIMARY_KEY = "DUPLICATE_PRIMARY_KEY"


class DiffError(Exception):
    """The source cannot be planned (missing meta columns, unreadable state)."""


class DeleteRateExceeded(Exception):
    """A mirror plan would delete more of the synced records than the model allows."""

    def __init__(
        self, message: str, *, model: str, removed: int, synced: int, max_delete_rate: float
    ) -> None:
        super().__init__(message)
        self.model = model
        self.removed = removed
        self.synced = synced
        self.max_delete_rate = max_delete_rate


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + _sql_str(value) + "'"


def payload_sql(fields: Iterable[str]) -> str:
    """DuckDB expression: the canonical JSON payload of the given field columns."""
    names = sorted(fields)
    if not names:
        return "'{}'::VARCHAR"
    pairs = ", ".join(f"{_lit(n)}, {_q(n)}" for n in names)
    return f"json_object({pairs})::VARCHAR"


class Plan:
    """The result of :func:`plan_changes`; holds an open DuckDB database until closed.

    Use as a context manager (or call :meth:`close`), which removes the database.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        db_dir: Path,
        fields: list[str],
        full_resync: bool,
        counts: dict[str, int],
    ) -> None:
        self._con = con
        self._db_dir = db_dir
        self.fields = fields
        self.full_resync = full_resync
        self.counts = counts

    # Classes sent this run, in the order they go out.
    @property
    def send_classes(self) -> tuple[str, ...]:
        base = ("added", "changed", "pending")
        return (*base, "unchanged") if self.full_resync else base

    @property
    def to_send(self) -> int:
        return sum(self.counts[c] for c in self.send_classes)

    def _reader(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # A cursor per iterator: DuckDB allows one open result per connection.
        cur = self._con.cursor()
        try:
            reader = cur.sql(sql).to_arrow_reader(batch_rows)
            for batch in reader:
                if batch.num_rows:
                    yield batch
        finally:
            cur.close()

    def iter_to_send(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Rows to send: ``__pk, __hash, __sf_id, __class``, the field columns (mapping
        order), then ``__payload`` (the canonical JSON the hash is of, for state)."""
        classes = ", ".join(_lit(c) for c in self.send_classes)
        cols = ", ".join(_q(f) for f in self.fields)
        sep = ", " if cols else ""
        yield from self._reader(
            f"SELECT __pk, __hash, __sf_id, __class{sep}{cols}, __payload FROM planned "
            f"WHERE __class IN ({classes}) ORDER BY __seq",
            batch_rows,
        )

    def iter_removed(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Records whose rows left the model: ``__pk, __sf_id`` (mirror deletes these)."""
        yield from self._reader("SELECT __pk, __sf_id FROM removed ORDER BY __pk", batch_rows)

    def iter_invalid(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Rows never sent: ``__pk, __error_code, __error_message`` + the field columns."""
        cols = ", ".join(_q(f) for f in self.fields)
        sep = ", " if cols else ""
        yield from self._reader(
            f"SELECT __pk, __error_code, __error_message{sep}{cols} FROM planned "
            "WHERE __class = 'invalid' ORDER BY __seq",
            batch_rows,
        )

    def sample_changes(self, n: int = 5) -> list[dict[str, Any]]:
        """Up to ``n`` rows to send, changed first, with field-level before/after.

        Each item: ``pk, class, sf_id, changes: {field: {before, after}}`` where
        ``before`` comes from the payload recorded in state (absent for added rows, or
        when state holds no payload).
        """
        cur = self._con.cursor()
        try:
            rows = cur.sql(
                "SELECT __pk, __class, __sf_id, __payload, __prev_payload FROM planned "
                "WHERE __class IN ('changed', 'pending', 'added') "
                "ORDER BY CASE __class WHEN 'changed' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, "
                f"__seq LIMIT {int(n)}"
            ).fetchall()
        finally:
            cur.close()
        out: list[dict[str, Any]] = []
        for pk, cls, sf_id, payload, prev in rows:
            after = json.loads(payload) if payload else {}
            before = json.loads(prev) if prev else None
            changes: dict[str, dict[str, Any]] = {}
            for field in self.fields:
                new = after.get(field)
                if before is None:
                    changes[field] = {"after": new}
                elif field not in before or before[field] != new:
                    changes[field] = {"before": before.get(field), "after": new}
            out.append({"pk": pk, "class": cls, "sf_id": sf_id, "changes": changes})
        return out

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None  # type: ignore[assignment]
        shutil.rmtree(self._db_dir, ignore_errors=True)

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _source_reader(
    source: Iterable[pa.RecordBatch], schema: pa.Schema | None
) -> tuple[pa.RecordBatchReader, list[str]]:
    """A reader over the source batches (peeking the first for the schema) and the field
    column names. An empty source needs ``schema`` to know its fields, else has none."""
    it = iter(source)
    first = next(it, None)
    if first is None:
        schema = schema or pa.schema([(c, pa.string()) for c in META_COLUMNS])
        return pa.RecordBatchReader.from_batches(schema, iter(())), _field_names(schema)
    schema = first.schema
    missing = [c for c in META_COLUMNS if c not in schema.names]
    if missing:
        raise DiffError(
            f"source batches lack {', '.join(missing)}: pass coerce_batch output to plan_changes"
        )

    def chain() -> Iterator[pa.RecordBatch]:
        yield first
        for batch in it:
            if batch.schema != schema:
                # Coercion output has one schema per model; tolerate nullability noise.
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            yield batch

    return pa.RecordBatchReader.from_batches(schema, chain()), _field_names(schema)


def _field_names(schema: pa.Schema) -> list[str]:
    return [n for n in schema.names if n not in META_COLUMNS]


def plan_changes(
    source: Iterable[pa.RecordBatch],
    state: pa.Table | StateStore,
    *,
    full_resync: bool = False,
    work_dir: Path,
    detect_removed: bool = True,
    schema: pa.Schema | None = None,
    memory_limit: str = "1GB",
    threads: int | None = None,
) -> Plan:
    """Diff this run's rows against the state and return the :class:`Plan`.

    ``state`` is either a table (``StateStore.load()``) or the store itself, in which case
    its Parquet files are read by DuckDB directly (no copy of the state in Python memory,
    the path for large models). ``detect_removed`` (mirror) lists synced records whose
    rows left the model. ``schema`` gives the field columns when ``source`` may be empty.
    """
    work_dir = Path(work_dir)
    db_dir = work_dir / f"plan-{uuid.uuid4().hex[:12]}"
    db_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_dir / "plan.duckdb"))
    try:
        con.execute(f"SET memory_limit = '{_safe_setting(memory_limit)}'")
        con.execute(f"SET temp_directory = '{_sql_str(str(db_dir / 'spill'))}'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        # Insertion order is kept through __seq, so DuckDB may reorder freely elsewhere.
        con.execute("SET preserve_insertion_order = false")

        reader, fields = _source_reader(source, schema)
        field_cols = ", ".join(_q(f) for f in fields)
        sep = ", " if field_cols else ""
        con.register("src_reader", reader)
        con.execute(
            f"""
            CREATE TABLE src AS
            SELECT row_number() OVER () AS __seq,
                   __pk::VARCHAR AS __pk, __error_code::VARCHAR AS __error_code,
                   __error_message::VARCHAR AS __error_message{sep}{field_cols},
                   {payload_sql(fields)} AS __payload,
                   md5(__payload) AS __hash
            FROM src_reader
            """
        )
        con.unregister("src_reader")

        _load_state(con, state, work_dir=db_dir)

        con.execute(
            """
            CREATE TABLE dups AS
            SELECT __pk FROM src WHERE __pk IS NOT NULL GROUP BY __pk HAVING count(*) > 1
            """
        )
        con.execute(
            f"""
            CREATE TABLE planned AS
            SELECT s.__seq, s.__pk, s.__hash, s.__payload,
                   CASE
                     WHEN s.__pk IS NULL THEN '{NULL_PRIMARY_KEY}'
                     WHEN d.__pk IS NOT NULL THEN '{DUPLICATE_PRIMARY_KEY}'
                     ELSE s.__error_code
                   END AS __error_code,
                   CASE
                     WHEN s.__pk IS NULL THEN 'The primary key is null'
                     WHEN d.__pk IS NOT NULL
                       THEN 'The primary key ' || s.__pk || ' appears on more than one row'
                     ELSE s.__error_message
                   END AS __error_message,
                   CASE
                     WHEN s.__pk IS NULL OR d.__pk IS NOT NULL OR s.__error_code IS NOT NULL
                       THEN 'invalid'
                     WHEN st.pk IS NULL THEN 'added'
                     WHEN st.status = 'rejected' THEN 'pending'
                     WHEN st.hash IS NOT DISTINCT FROM s.__hash THEN 'unchanged'
                     ELSE 'changed'
                   END AS __class,
                   st.sf_id AS __sf_id,
                   st.payload AS __prev_payload{sep}{", ".join("s." + _q(f) for f in fields)}
            FROM src s
            LEFT JOIN dups d ON s.__pk = d.__pk
            LEFT JOIN st ON s.__pk = st.pk
            """
        )
        # Removed: records known to exist in Salesforce (an sf_id recorded by an earlier
        # sync; a later rejected update keeps it) whose key no longer appears at all.
        removed_where = "FALSE" if not detect_removed else "st.sf_id IS NOT NULL"
        con.execute(
            f"""
            CREATE TABLE removed AS
            SELECT st.pk AS __pk, st.sf_id AS __sf_id FROM st
            WHERE {removed_where} AND NOT EXISTS (SELECT 1 FROM src WHERE src.__pk = st.pk)
            """
        )
        con.execute("DROP TABLE src")
        counts = dict.fromkeys(("rows", *CLASSES), 0)
        for cls, n in con.sql("SELECT __class, count(*) FROM planned GROUP BY ALL").fetchall():
            counts[cls] = n
        counts["rows"] = sum(counts[c] for c in CLASSES if c != "removed")
        counts["removed"] = con.sql("SELECT count(*) FROM removed").fetchall()[0][0]
        state_rows, synced = con.sql(
            "SELECT count(*), count(*) FILTER (sf_id IS NOT NULL) FROM st"
        ).fetchall()[0]
        counts["state_rows"] = state_rows
        counts["state_synced"] = synced
        con.execute("DROP TABLE st")
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        shutil.rmtree(db_dir, ignore_errors=True)
        raise
    return Plan(con, db_dir, fields, full_resync, counts)


def _load_state(
    con: duckdb.DuckDBPyConnection, state: pa.Table | StateStore, work_dir: Path
) -> None:
    """Materialise the state as table ``st`` (pk, hash, sf_id, status, payload)."""
    cols = ", ".join(_q(c) for c in ("pk", "hash", "sf_id", "status", "payload"))
    if isinstance(state, StateStore):
        with state.local_files(work_dir) as (snap, commits):
            sql = fold_sql(snap, commits, ["pk", "hash", "sf_id", "status", "payload"])
            if sql is not None:
                con.execute(f"CREATE TABLE st AS {sql}")
                return
            state = pa.table(
                {c: pa.array([], pa.string()) for c in STATE_COLUMNS if c != "updated_at"}
            )
    missing = [c for c in ("pk", "hash", "sf_id", "status") if c not in state.column_names]
    if missing:
        raise DiffError(f"state table lacks {', '.join(missing)}")
    if "payload" not in state.column_names:
        state = state.append_column("payload", pa.nulls(state.num_rows, pa.string()))
    con.register("state_in", state)
    con.execute(
        f"CREATE TABLE st AS SELECT {cols} FROM state_in WHERE status <> 'deleted' "
        "QUALIFY row_number() OVER (PARTITION BY pk) = 1"
    )
    con.unregister("state_in")


def check_delete_rate(
    plan: Plan,
    *,
    max_delete_rate: float,
    model: str,
    synced_count: int | None = None,
    allow_deletes: bool = False,
    model_path: str | None = None,
) -> None:
    """Refuse a mirror plan that would delete more than ``max_delete_rate`` of the synced
    records, so an empty or broken query cannot wipe Salesforce. ``synced_count`` defaults
    to the records the state knows as synced."""
    removed = plan.counts["removed"]
    synced = plan.counts["state_synced"] if synced_count is None else synced_count
    if allow_deletes or removed == 0:
        return
    rate = removed / synced if synced else 1.0
    if rate <= max_delete_rate:
        return
    cur = plan._con.cursor()
    try:
        examples = [
            r[0] for r in cur.sql("SELECT __pk FROM removed ORDER BY __pk LIMIT 5").fetchall()
        ]
    finally:
        cur.close()
    where = model_path or f"models/{model}.yml"
    why = (
        "the query returned no rows"
        if plan.counts["rows"] == 0
        else f"the query returned {plan.counts['rows']} rows"
    )
    raise DeleteRateExceeded(
        f"{model}: refusing to delete {removed} of {synced} synced records ({rate:.1%}), "
        f"above max_delete_rate {max_delete_rate:.0%}; {why}. Keys that would be deleted "
        f"include: {', '.join(examples)}. If the query is right, raise max_delete_rate in "
        f"{where}, or run once with --allow-deletes (SF_ACTIVATION_ALLOW_DELETES=1).",
        model=model,
        removed=removed,
        synced=synced,
        max_delete_rate=max_delete_rate,
    )


__all__ = [
    "CLASSES",
    "DUPLICATE_PRIMARY_KEY",
    "DeleteRateExceeded",
    "DiffError",
    "NULL_PRIMARY_KEY",
    "Plan",
    "check_delete_rate",
    "payload_sql",
    "plan_changes",
]
