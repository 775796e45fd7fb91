"""One sync run of one model — the single code path behind the CLI and the Dagster assets.

stores proven writable → the model's lease → what earlier runs left in the ledger
reconciled (`reconcile.py`) → validate mapping against describe (fail before sending) →
plan → send → outcomes settled (`settle.py`: counted, rejected, committed batch by batch)
→ this run's lost answers reconciled → publish rejects → compact state → summary.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation import staged_plan, synced_under
from sf_activation.config import Settings
from sf_activation.diff import Plan, check_delete_rate, plan_changes
from sf_activation.field_behaviours import FieldBehaviours, check_describe
from sf_activation.in_flight import InFlight
from sf_activation.insert_baseline import check_insert_baseline
from sf_activation.interrupts import SyncInterrupted, stop_on_signals
from sf_activation.lease import LeaseHeld, ModelLease, ObjectBusy
from sf_activation.ledger import LedgerTracker, SendLedger
from sf_activation.models import ModelError, ModelSpec, check_columns, load_models_isolated
from sf_activation.parents import (
    HELD_FOR_PARENT,
    ParentHold,
    parent_models,
    relationship_object,
)
from sf_activation.reconcile import LedgerPass
from sf_activation.record_types import write_switches
from sf_activation.rejects import REDACTED, RejectSink, check_rejects_writable, mask_redacted
from sf_activation.run_history import RunRecorder
from sf_activation.salesforce.client import SalesforceClient
from sf_activation.salesforce.coerce import coerce_batch, output_schema
from sf_activation.salesforce.describe import validate_mapping
from sf_activation.salesforce.outcomes import (
    FIELDS_JSON_COLUMN,
    KEY_COLUMN,
    Dispatch,
    Outcomes,
    SendReport,
    SendRequest,
    StopSignal,
    WriteSwitches,
    choose_transport,
)
from sf_activation.settle import (
    Settler,
    already_deleted_as_done,
    field_columns,
    row_record,
    state_rows,
)
from sf_activation.state import StateStore
from sf_activation.summary import SyncSummary
from sf_activation.sync_log import WAREHOUSE_TABLE as WAREHOUSE_SYNC_LOG
from sf_activation.sync_log import SyncLog, copy_to_warehouse
from sf_activation.testhooks import kill_point  # test hook: no-op unless set
from sf_activation.warehouse import DEFAULT_BATCH_ROWS, Warehouse, WarehouseError
from sf_activation.warehouse_diff import WAREHOUSE_COLUMNS, WarehouseDiff, WarehouseDiffError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""progress(phase, done, total): phase is 'plan', 'send' or 'delete'; total may be 0 if unknown."""

META_COLUMNS = ("__pk", "__hash", "__sf_id", "__class", "__error_code", "__error_message")
SEND_BATCH_ROWS = 10_000  # rows handed to the client at a time (bounded memory)


class MemoryLimitReached(RuntimeError):
    """DuckDB could not stay within the configured memory (one line: which setting)."""


class AccountingError(RuntimeError):
    """Rows went missing between plan, send and outcome: a bug, never a silent loss."""


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class SyncRun:
    """A run of one model. `plan()` touches nothing in Salesforce; `execute()` sends."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        *,
        client: SalesforceClient | None = None,
        run_id: str | None = None,
        full_resync: bool = False,
        allow_deletes: bool = False,
        allow_reinsert: bool = False,
        progress: ProgressCallback | None = None,
        work_dir: Path | None = None,
        use_staged_plan: bool = False,
        parents: dict[str, list[str]] | None = None,
        trigger: str | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.client = client or SalesforceClient.from_settings(settings.salesforce)
        self.run_id = run_id or new_run_id()
        self.full_resync = full_resync
        self.allow_deletes = allow_deletes or settings.allow_deletes
        self.allow_reinsert = allow_reinsert or settings.allow_reinsert
        self.progress = progress or (lambda phase, done, total: None)
        # Send the plan `stage()` left for this run id, when it still holds (Dagster).
        self.use_staged_plan = use_staged_plan
        # Parent object -> the models creating its records (`parents.parent_models`); read
        # from the models directory when not given, the first time a parent is missing.
        self._parents = parents
        # What started the run, for its run record: "cli", or None (a Dagster step's run
        # id is a UUID, and run_history infers the Dagster run from it).
        self.trigger = trigger
        self._hold: ParentHold | None = None
        self._held_reasons: dict[str, int] = {}
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix=f"sf-activation-{spec.name}-"))
        # A redacted primary key is kept in state as a digest only (state.KeyDigest).
        self.state = StateStore(
            settings.state_url,
            spec.name,
            run_id=self.run_id,
            redact_key=spec.primary_key_redacted,
            redact=spec.redact,
            state_key=settings.state_key,
            compact_ratio=settings.compact_ratio,
        )
        self.summary = SyncSummary(
            model=spec.name,
            object=spec.object,
            operation=spec.operation,
            run_id=self.run_id,
            transport=spec.transport,
            full_resync=full_resync,
        )
        self._plan: Plan | None = None
        self._plan_fields: list[str] = []
        self._switches: WriteSwitches | None = None  # record type, rules (record_types.py)
        self._api_calls_at_start = self.client.api_calls
        self.stop = StopSignal()
        self._active_lease: ModelLease | None = None
        self.ledger = LedgerTracker(SendLedger(self.state))
        # on_null / set_if_empty / send_fields: changed (field_behaviours.py)
        self._behaviours = FieldBehaviours(spec, self.client, self.summary)

    # ---------------------------------------------------------------- plan
    def plan(self) -> Plan:
        """This run's plan: made here, from the warehouse."""
        self._source_errors: list[Exception] = []
        try:
            made = self._make_plan()
        except duckdb.Error:
            # The warehouse's own one-line error, not DuckDB's wrapper of it.
            if self._source_errors:
                raise self._source_errors[0] from None
            raise
        return self._use_plan(made)

    def _use_plan(self, plan: Plan, transport: str | None = None) -> Plan:
        """Fill the summary from the plan and refuse it when it breaks a guard."""
        spec = self.spec
        counts = plan.counts
        for name in ("rows", "invalid", "added", "changed", "unchanged", "pending", "removed"):
            setattr(self.summary, name, int(counts.get(name, 0)))
        if spec.operation != "mirror":
            self.summary.removed = 0
        # Samples reach terminals, JSON summaries and the Dagster UI: PII stays masked.
        masked = set(spec.redact) | ({"pk"} if spec.primary_key_redacted else set())
        self.summary.sample_changes = mask_redacted(plan.sample_changes(5), masked)
        accounted = sum(
            self.summary.__dict__[k]
            for k in ("invalid", "added", "changed", "unchanged", "pending")
        )
        if accounted != self.summary.rows:
            raise AccountingError(
                f"{spec.name}: plan classified {accounted} of {self.summary.rows} rows"
            )
        if spec.operation == "mirror":
            check_delete_rate(
                plan,
                max_delete_rate=spec.max_delete_rate,
                model=spec.name,
                allow_deletes=self.allow_deletes,
                model_path=spec.display_path,
                mask_keys=spec.primary_key_redacted,
            )
        to_send = self.summary.added + self.summary.changed + self.summary.pending
        if self.full_resync:
            to_send += self.summary.unchanged
        self.summary.to_send = to_send
        # Bulk 2.0 has no duplicate rule header: allow_save models stay on Collections.
        allow_save = spec.duplicate_rules == "allow_save"
        self.summary.transport = transport or choose_transport(
            to_send, "composite" if allow_save else spec.transport, spec.bulk_threshold
        )
        plan.limit_memory(self.settings.send_memory)
        self._plan = plan
        return plan

    def _check_synced_under(self) -> None:
        """Refuse a model whose identity changed; a change of `nulls:` re-sends every row."""
        spec = self.spec
        if synced_under.check(spec, synced_under.read(self.state), self.state):
            if not self.full_resync:
                log.warning(
                    "%s: nulls: (or a field's on_null:) changed since the last sync; every "
                    "row is sent once so "
                    "Salesforce holds what the model now says",
                    spec.name,
                )
            self.full_resync = self.summary.full_resync = True

    def _make_plan(self) -> Plan:
        """Query the warehouse and diff against the state (describe validates the mapping
        first)."""
        spec = self.spec
        self._check_synced_under()
        with self._warehouse_while(self._check_mapping) as (warehouse, columns):
            describe = self.client.describe(spec.object)  # cached by the mapping check
            check_columns(spec, columns)
            rows_read = 0
            # DuckDB reads these batches itself and wraps an error raised while it does in
            # its own, with the Python traceback in the text: the original is kept here.
            source_errors = self._source_errors
            engine = self._warehouse_engine(warehouse, describe)
            delta: dict[str, Any] = {}
            if engine is None:
                raw: Iterable[pa.RecordBatch] = warehouse.iter_batches(spec.sql_text)
            else:
                engine.prepare()
                reason = engine.in_step(self.state, self.full_resync)
                full = reason is not None
                if full:
                    log.info("%s: the warehouse diff reads every row this run: %s",
                             spec.name, reason)  # fmt: skip
                self.summary.full_read_reason = reason
                raw = engine.iter_rows(full, DEFAULT_BATCH_ROWS)
                counted = engine
                delta = {
                    # Counted once the changed rows are read: the rest are unchanged.
                    "unchanged_elsewhere": (
                        0 if full else lambda: max(0, counted.count_rows() - rows_read)
                    ),
                    # Asked after the rows are read: a row that left in between is deleted
                    # on what the warehouse holds then, never on an older answer.
                    "removed_candidates": (
                        counted.removed if not full and spec.operation == "mirror" else None
                    ),
                    "warehouse_full": full,
                }

            def coerced() -> Iterator[pa.RecordBatch]:
                nonlocal rows_read
                try:
                    for batch in raw:
                        kill_point("plan_batch")  # test hook
                        rows_read += batch.num_rows
                        self.progress("plan", rows_read, 0)
                        out = coerce_batch(
                            batch,
                            primary_key=spec.primary_key,
                            field_map=spec.fields,
                            describe=describe,
                        )
                        if engine is not None:  # its columns ride along for the write-back
                            for name in WAREHOUSE_COLUMNS:
                                out = out.append_column(name, batch.column(name).cast(pa.string()))
                        yield out
                except Exception as exc:
                    source_errors.append(exc)
                    raise

            schema = output_schema(spec.fields, describe)
            if engine is not None:
                for name in WAREHOUSE_COLUMNS:
                    schema = schema.append(pa.field(name, pa.string()))
            plan = plan_changes(
                coerced(),
                self.state,
                full_resync=self.full_resync,
                work_dir=self.work_dir,
                memory_limit=self.settings.plan_memory,
                detect_removed=spec.operation == "mirror",
                schema=schema,
                match_field=self._match_field(),
                redact=spec.redact,
                match_case_sensitive=_case_sensitive(describe, spec.external_id),
                multi_select=[
                    name
                    for name in spec.fields.values()
                    if (field := describe.field(name)) is not None and field.type == "multipicklist"
                ],
                previous_payloads=spec.send_fields == "changed",
                **delta,
            )
            self.summary.rows_fetched = rows_read
        return plan

    def _check_mapping(self) -> None:
        """Fail before sending: the mapping against the object's describe."""
        spec = self.spec
        describe = self.client.describe(spec.object)
        validate_mapping(
            model=spec.name,
            describe=describe,
            operation=spec.write_operation,
            field_map=spec.fields,
            external_id=spec.external_id,
            parent_describe=self.client.describe,
        )
        check_describe(spec, describe)  # set_if_empty fields updateable
        self._write_switches()  # an unknown record type stops the run here

    @contextmanager
    def _warehouse_while(self, check: Callable[[], None]) -> Iterator[tuple[Warehouse, list[str]]]:
        """The warehouse, opened and asked for the query's columns in a thread while
        `check` (Salesforce's describe) runs here: a warehouse login and a describe call
        are each a round trip or more, and neither needs the other. `check`'s error comes
        first, as when they ran one after the other."""
        url = self.settings.warehouse_url.get_secret_value()

        def open_warehouse() -> tuple[Warehouse, list[str]]:
            warehouse = Warehouse.from_url(url)
            try:
                return warehouse, warehouse.columns(self.spec.sql_text)
            except BaseException:
                warehouse.close()
                raise

        with ThreadPoolExecutor(1, thread_name_prefix="sf-warehouse-open") as pool:
            opened = pool.submit(open_warehouse)
            try:
                check()
            except BaseException:
                with suppress(BaseException):
                    opened.result()[0].close()
                raise
            warehouse, columns = opened.result()
        with warehouse:
            yield warehouse, columns

    def _warehouse_engine(self, warehouse: Warehouse, describe: Any) -> WarehouseDiff | None:
        """The warehouse diff engine for this model, or None for the local one."""
        spec = self.spec
        schema = self._warehouse_schema()
        if schema is None:
            return None
        return WarehouseDiff(
            warehouse,
            schema,
            spec,
            describe,
            columns=spec.columns,
            match_field=self._match_field(),
            match_case_sensitive=_case_sensitive(describe, spec.external_id),
        )

    def _warehouse_schema(self) -> str | None:
        """The schema of the warehouse engine's tables when this model diffs there."""
        spec = self.spec
        schema = self.settings.warehouse_state_schema
        chosen = spec.diff or ("warehouse" if schema else "local")
        self.summary.diff_engine = chosen
        if chosen == "local":
            return None
        if schema is None:
            raise WarehouseDiffError(
                f"{spec.display_path}: diff: warehouse needs SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA, "
                "the schema (BigQuery: dataset) sf_activation may create its tables in; set it, "
                "or set diff: local"
            )
        if spec.partition_by is not None:
            # Each window is its own query; windows are already the way to read less.
            log.info("%s: partitioned models diff locally, window by window", spec.name)
            self.summary.diff_engine = "local"
            return None
        return schema

    def _copy_sync_log(self, path: Path) -> None:
        """The warehouse engine's models also log to `<schema>.sync_log`."""
        schema = self._warehouse_schema()
        if schema is None:
            return
        with Warehouse.from_url(self.settings.warehouse_url.get_secret_value()) as warehouse:
            copy_to_warehouse(
                path,
                warehouse,
                schema,
                model=self.spec.name,
                retention_days=self.settings.sync_log_days,
            )
        self.summary.sync_log_table = f"{schema}.{WAREHOUSE_SYNC_LOG}"

    def _write_back(self, plan: Plan) -> None:
        """Bring the warehouse engine's table in step with the state after the sends."""
        full = plan.warehouse_full
        if full is None:
            return
        describe = self.client.describe(self.spec.object)
        try:
            with Warehouse.from_url(self.settings.warehouse_url.get_secret_value()) as warehouse:
                engine = self._warehouse_engine(warehouse, describe)
                if engine is None:
                    return
                written = engine.write_back(
                    plan.connection, self.state, full=full, state_key=plan.state_key_column
                )
        except WarehouseError as exc:
            # What was sent is committed and explained; the tables are marked out of step
            # before they are touched, so the next run reads every row once.
            log.warning(
                "%s: could not update the warehouse diff tables (%s); the next run reads every "
                "row once",
                self.spec.name,
                exc,
            )
            return
        log.info("%s: warehouse diff table %s updated (%d rows)",
                 self.spec.name, engine.state_table, written)  # fmt: skip

    def _write_switches(self) -> WriteSwitches:
        """record_type / assignment_rules / duplicate_rules / delete_mode as the client
        sends them; record types are looked up once per run."""
        if self._switches is None:
            self._switches = write_switches(self.spec, self.client)
        return self._switches

    def _match_field(self) -> str | None:
        """The External ID field records are matched on, when it is one (not Id)."""
        spec = self.spec
        if spec.operation in ("upsert", "mirror") or (
            spec.operation == "update" and "Id" not in spec.fields.values()
        ):
            return spec.external_id
        return None

    @contextmanager
    def _memory_errors(self) -> Iterator[None]:
        """DuckDB's multi-line OutOfMemory error as one line naming the setting to raise."""
        try:
            yield
        except duckdb.OutOfMemoryException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            raise MemoryLimitReached(
                f"{self.spec.name}: DuckDB ran out of memory ({first}); raise "
                f"SF_ACTIVATION_PLAN_MEMORY (now {self.settings.plan_memory}) or "
                f"SF_ACTIVATION_SEND_MEMORY (now {self.settings.send_memory}); beyond them "
                "DuckDB spills to the run's work directory, so give it disk too"
            ) from exc

    def stage(self) -> SyncSummary:
        """Plan and stage the plan for this run's send step (`staged_plan`), sending
        nothing. What `warehouse/<model>` does in Dagster.

        A model with `redact:` values is only planned: the plan file holds its values in
        clear, and nothing redacted is kept beside the state."""
        if self.spec.redact or self.spec.primary_key_redacted:
            return self.dry_run()
        start = time.monotonic()
        try:
            version = self.state.version()  # before reading: a commit during the plan shows
            with self._memory_errors():
                plan = self.plan()
            info = staged_plan.StagedPlanInfo(
                run_id=self.run_id,
                model_digest=staged_plan.model_digest(self.spec),
                state_version=version,
                full_resync=self.full_resync,
                fields=plan.fields,
                counts=plan.counts,
                insert_only=plan.insert_only,
                redact=plan.redact,
                decimals=plan.decimals,
                transport=self.summary.transport,
                diff_engine=self.summary.diff_engine,
                rows_fetched=self.summary.rows_fetched,
                full_read_reason=self.summary.full_read_reason,
            )
            where = staged_plan.stage(plan, info, self.state)
            log.info("%s: plan staged in %s", self.spec.name, where)
        finally:
            self._cleanup()
        self.summary.dry_run = True
        self.summary.api_calls = self.client.api_calls - self._api_calls_at_start
        self.summary.duration_s = round(time.monotonic() - start, 3)
        return self.summary

    def _staged(self) -> Plan | None:
        """The plan this run's warehouse step staged, when it still holds (else None)."""
        if not self.use_staged_plan:
            return None
        self._check_synced_under()
        adopted = staged_plan.adopt(
            self.state,
            run_id=self.run_id,
            spec=self.spec,
            full_resync=self.full_resync,
            work_dir=self.work_dir,
        )
        if adopted is None:
            return None
        plan, info = adopted
        self.summary.plan_source = "staged"
        self.summary.diff_engine = info.diff_engine
        self.summary.rows_fetched = info.rows_fetched
        self.summary.full_read_reason = info.full_read_reason
        return self._use_plan(plan, transport=info.transport)

    def dry_run(self) -> SyncSummary:
        start = time.monotonic()
        try:
            with self._memory_errors():
                self._name_invalid(self.plan())
        finally:
            self._cleanup()
        self.summary.dry_run = True
        self.summary.api_calls = self.client.api_calls - self._api_calls_at_start
        self.summary.duration_s = round(time.monotonic() - start, 3)
        return self.summary

    def _name_invalid(self, plan: Plan, keys_per_code: int = 5) -> None:
        """A dry run's invalid rows by error code, with the first keys of each (masked when
        the key is redacted): what a sync would write to the reject file, named before."""
        codes: dict[str, int] = {}
        keys: dict[str, list[Any]] = {}
        for batch in plan.iter_invalid():
            pks = batch.column("__pk").to_pylist()
            for pk, code in zip(pks, batch.column("__error_code").to_pylist(), strict=True):
                code = code or "INVALID_ROW"
                codes[code] = codes.get(code, 0) + 1
                shown = keys.setdefault(code, [])
                if len(shown) < keys_per_code:
                    masked = pk is not None and self.spec.primary_key_redacted
                    shown.append(REDACTED if masked else pk)
        self.summary.invalid_codes = codes
        self.summary.invalid_keys = keys

    # ---------------------------------------------------------------- send
    def execute(self) -> SyncSummary:
        """The whole run (`_execute`), with its run record and request log written beside
        the state when it ends, however it ends (`run_history`)."""
        recorder = RunRecorder(self)
        error: BaseException | None = None
        try:
            return self._execute()
        except BaseException as exc:
            error = exc
            raise
        finally:
            recorder.finish(error)  # logs, never raises: the run's own error wins

    def _execute(self) -> SyncSummary:
        """The whole run, under the model's lease: preflight, reconcile what earlier runs
        left in flight, plan, send, explain, compact. SIGINT/SIGTERM stop it cleanly."""
        start = time.monotonic()
        try:
            # The stores are proven writable first: nothing, not even the lease, is
            # written into a store that cannot take the run's commits.
            self._preflight()
            with self._lease(), stop_on_signals(self.stop, self.spec.name) as signals:
                self._log_takeover()
                with self._memory_errors():
                    self._run(signals)
            if signals:
                raise SyncInterrupted(self._interrupted_message(signals[0]), signals[0])
        finally:
            self.summary.api_calls = self.client.api_calls - self._api_calls_at_start
            self.summary.duration_s = round(time.monotonic() - start, 3)
            self._cleanup()
            if self.use_staged_plan:
                # Sent, or re-planned here: a step retried later plans for itself.
                staged_plan.discard(self.state, self.run_id)
        return self.summary

    def _lease(self) -> ModelLease:
        self._active_lease = ModelLease(
            self.settings.state_url,
            self.spec.name,
            self.run_id,
            ttl_s=self.settings.lease_ttl_s,
            wait_s=self.settings.lease_wait_s,
            on_wait=lambda holder, waited: log.warning(
                "%s: waiting for run %s to finish (%.0f s)",
                self.spec.name, holder.run_id if holder else "?", waited,
            ),
        )  # fmt: skip
        return self._active_lease

    @contextmanager
    def _object_lease(self) -> Iterator[None]:
        """While this run sends, no other model's run sends to the same object: their
        writes would contend for the same records' (and parents') locks. Waits up to
        `object_wait_s` for the other send, then refuses with one line (ObjectBusy)."""
        obj = self.spec.object
        lease = ModelLease(
            self.settings.state_url,
            object_lease_name(obj),
            self.run_id,
            ttl_s=self.settings.lease_ttl_s,
            wait_s=self.settings.object_wait_s,
            poll_s=0.5,
            on_wait=lambda holder, waited: log.info(
                "%s: waiting for run %s, which is sending to %s (%.0f s)",
                self.spec.name, holder.run_id if holder else "?", obj, waited,
            ),
        )  # fmt: skip
        try:
            lease.acquire()
        except LeaseHeld as exc:
            raise ObjectBusy(
                self.spec.name, obj, exc.holder, wait_s=exc.wait_s, waited_s=exc.waited_s
            ) from None
        try:
            yield
        finally:
            lease.release()

    def _log_takeover(self) -> None:
        previous = self._active_lease.taken_over if self._active_lease else None
        if previous is not None:
            log.warning(
                "%s: run %s (host %s) ended without releasing the model; reconciling what it "
                "left in flight",
                self.spec.name, previous.run_id, previous.host,
            )  # fmt: skip

    def _preflight(self) -> None:
        """Fail before anything is sent if what the run must write cannot be written."""
        self.state.check_writable()
        check_rejects_writable(
            self.settings.rejects_url, self.spec.name, self.run_id, sse=self.settings.rejects_sse
        )

    def _run(self, signals: list[int]) -> None:
        sink = RejectSink(
            rejects_url=self.settings.rejects_url,
            model=self.spec.name,
            object_name=self.spec.object,
            operation=self.spec.operation,
            run_id=self.run_id,
            redact=self.spec.redact,
            sse=self.settings.rejects_sse,
            redact_primary_key=self.spec.primary_key_redacted,
        )
        self.sync_log = SyncLog(
            self.state,
            run_id=self.run_id,
            model=self.spec.name,
            object_name=self.spec.object,
            operation=self.spec.operation,
            work_dir=self.work_dir,
            redact=list(self.spec.redact),
            redact_primary_key=self.spec.primary_key_redacted,
            retention_days=self.settings.sync_log_days,
            copy_to=self._copy_sync_log,
        )
        settler = Settler(
            state=self.state,
            sink=sink,
            summary=self.summary,
            ledger=self.ledger,
            commit_rows=self.settings.commit_rows,
            sync_log=self.sync_log,
        )
        ledger_pass = LedgerPass(
            client=self.client,
            state=self.state,
            ledger=self.ledger,
            settler=settler,
            summary=self.summary,
            nulls=self.spec.nulls,
            concurrency=self.spec.concurrency,
            grace_s=self.settings.unknown_outcome_grace_s,
            work_dir=self.work_dir,
        )
        try:
            if ledger_pass.run(self.ledger.ledger.entries(), this_run=False):
                self._cleanup_plan()  # state changed under a plan made earlier
            plan = self._plan or self._staged() or self.plan()
            if not self.allow_reinsert:
                check_insert_baseline(
                    self.spec, plan, self.client, state_url=self.settings.state_url
                )
            self._reject_invalid(plan, sink)
            with self._object_lease():
                cpu_at_send, wall_at_send = time.process_time(), time.monotonic()
                self._send_changes(plan, settler, ledger_pass)
                unknown = [e for e in self.ledger.ledger.entries() if e.name in self.ledger.unknown]
                ledger_pass.run(unknown, this_run=True)
                self.summary.send_cpu_s = round(time.process_time() - cpu_at_send, 3)
                self.summary.send_s = round(time.monotonic() - wall_at_send, 3)
                if self.spec.operation == "mirror" and not self.stop.is_set():
                    self._delete_removed(plan, settler)
            ledger_pass.explain(sink)
            # Rejects are published before the state is compacted: if the store cannot be
            # written the run fails, and the rejected rows stay pending for the next run.
            self.summary.rejects_url = sink.publish()
            if not self.stop.is_set():
                # After the sends' commits, before the plan goes: what the next plan reads.
                self._write_back(plan)
        finally:
            sink.discard()
            # Whatever happened, what this run did is explained row by row.
            self.summary.sync_log_url = self.sync_log.publish()
        # The plan is done with: free its buffers before folding the state.
        self._cleanup_plan()
        if not signals:  # an interrupted run leaves quickly; its commits are durable
            self.state.compact(work_dir=self.work_dir, memory_limit=self.settings.send_memory)
        if not self.stop.is_set():
            synced_under.write(self.state, self.spec)
        self.summary.rejected = (
            self.summary.invalid + self.summary.failed + self.summary.delete_failed
        )
        self.summary.reject_codes = dict(sink.codes)
        self.summary.reject_sample = sink.sample
        if self.stop.is_set() and not self.summary.stopped_reason:
            self.summary.stopped_reason = self.stop.reason
        self.summary.stopped = self.stop.kind
        for reason, count in sorted(self._held_reasons.items()):
            log.warning("%s: %d rows held until their parent lands (%s); sent again next run",
                        self.spec.name, count, reason)  # fmt: skip
        self.summary.held_reasons = dict(self._held_reasons)
        self._check_accounting()

    def _interrupted_message(self, signum: int) -> str:
        s = self.summary
        name = signal.Signals(signum).name
        return (
            f"{s.model}: interrupted by {name}: {s.succeeded} rows confirmed by Salesforce and "
            f"saved, {s.retried} not sent or unconfirmed stay pending; rerun to resume"
        )

    def _cleanup_plan(self) -> None:
        if self._plan is not None:
            self._plan.close()
            self._plan = None

    def _cleanup(self) -> None:
        self._cleanup_plan()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _check_accounting(self) -> None:
        s = self.summary
        if s.sent != s.succeeded + s.failed + s.retried:
            raise AccountingError(
                f"{s.model}: sent {s.sent} but succeeded {s.succeeded} + failed {s.failed}"
                f" + retried {s.retried} = {s.succeeded + s.failed + s.retried}"
            )

    def _reject_invalid(self, plan: Plan, sink: RejectSink) -> None:
        for batch in plan.iter_invalid():
            columns = field_columns(batch)
            codes = batch.column("__error_code").to_pylist()
            messages = batch.column("__error_message").to_pylist()
            pks = batch.column("__pk").to_pylist()
            records = [row_record(batch, row, columns) for row in range(batch.num_rows)]
            for row in range(batch.num_rows):
                sink.add(
                    primary_key=pks[row],
                    record=records[row],
                    error_code=codes[row] or "INVALID_ROW",
                    message=messages[row] or "",
                    transport="none",
                    fields=[],
                )
            self.sync_log.add(
                pks=batch.column("__pk"),
                sf_ids=None,
                change="invalid",
                outcome="invalid",
                error_codes=[c or "INVALID_ROW" for c in codes],
                messages=messages,
                records=records,
            )

    # The send path is shared by every operation; only the request and the rows differ.
    def _send_changes(self, plan: Plan, settler: Settler, ledger_pass: LedgerPass) -> None:
        """Every row to send; with a self-referencing lookup, in waves by depth (parents
        confirmed by Salesforce before their children go out)."""
        waves = self._self_lookup_waves(plan)
        if waves == 1:
            self._send_wave(plan, settler, ledger_pass, None)
            return
        log.info("%s: %d waves of parents before children (%s)", self.spec.name, waves,
                 self._self_lookup()[0])  # fmt: skip
        for wave in range(waves):
            if self.stop.is_set():
                break  # the later waves' rows are simply pending
            self._send_wave(plan, settler, ledger_pass, wave)

    def _self_lookup(self) -> tuple[str, str] | None:
        """(lookup field, key field) of a lookup to this model's own object by a field the
        model writes (`Parent.External_Id__c` with `External_Id__c` mapped)."""
        spec = self.spec
        for target in spec.fields.values():
            rel, _, key = target.partition(".")
            if (
                key
                and relationship_object(spec, rel) == spec.object
                and key in spec.fields.values()
            ):
                return target, key
        return None

    def _self_lookup_waves(self, plan: Plan) -> int:
        found = self._self_lookup()
        return plan.plan_waves(*found) if found is not None else 1

    def _send_wave(
        self, plan: Plan, settler: Settler, ledger_pass: LedgerPass, wave: int | None
    ) -> None:
        spec = self.spec
        self._plan_fields = plan.fields
        lookups = [f for f in spec.fields.values() if "." in f]
        batches: Iterable[pa.RecordBatch] = plan.iter_to_send(
            SEND_BATCH_ROWS, group_by=lookups, wave=wave
        )
        operation = spec.write_operation
        if operation == "insert":
            # Rows already created once (changed, or pending with an Id) are updated by their
            # recorded Id; only rows Salesforce has never accepted are inserted. The plan is
            # on disk, so two passes cost a query each, not memory.
            creates = (ledger_pass.not_held(_without_recorded_id(b)) for b in batches)
            self._send("insert", creates, settler, external_id=None)
            updates = plan.iter_to_send(SEND_BATCH_ROWS, group_by=lookups, wave=wave)
            fixed = _set_on_create_only(self.client.describe(spec.object), plan.fields)
            self._send(
                "update",
                (_with_recorded_id(b).drop_columns(fixed) for b in updates),
                settler,
                external_id=None,
            )
            return
        if operation in ("update", "delete") and "Id" not in spec.fields.values():
            batches = self._resolve_ids(batches, settler)
        if operation == "delete":
            batches = (_only_id(b) for b in batches)
        self._send(operation, batches, settler, external_id=spec.external_id)

    def _send(
        self,
        operation: str,
        batches: Iterable[pa.RecordBatch],
        settler: Settler,
        *,
        external_id: str | None,
    ) -> SendReport | None:
        in_flight = InFlight()
        counter = iter(range(1 << 62))
        total = self.summary.added + self.summary.changed + self.summary.pending
        plan_fields = self._plan_fields
        done = 0

        def keyed() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                lease = self._active_lease
                if lease is not None and lease.lost and not self.stop.is_set():
                    self.stop.set(
                        f"lost the lease on {self.spec.name} ({lease.url}): another run may "
                        "be sending it",
                        "interrupted",
                    )
                if self.stop.is_set():
                    break  # nothing more is read; unread rows are simply pending
                keys = in_flight.keyed(next(counter), batch)
                kill_point("before_send")  # test hook
                out = self._for_client(batch, keys, plan_fields)
                yield self._behaviours.apply(operation, batch, out)  # fields left out

        every_call = operation == "insert"
        deletes = operation == "delete"
        has_lookups = any("." in f for f in self.spec.fields.values())

        def on_outcomes(outcomes: Outcomes) -> None:
            nonlocal done
            done += len(outcomes)
            self.progress("send", done, total)
            if deletes:
                outcomes = already_deleted_as_done(outcomes)
            elif has_lookups:
                outcomes = self._hold_for_parents(outcomes)
            settler.settle(outcomes, in_flight, every_call=every_call)

        request = SendRequest(
            object=self.spec.object,
            operation=operation,
            external_id=external_id if operation == "upsert" else None,
            transport=self.summary.transport,
            nulls=self.spec.nulls,
            field_nulls=self._behaviours.field_nulls,
            concurrency=self.spec.concurrency,
            switches=self._write_switches(),
        )
        try:
            report = self.client.send(
                request,
                keyed(),
                on_outcomes,
                on_dispatch=self._recorder(in_flight, operation),
                stop=self.stop,
                progress=self.progress,
            )
        finally:
            # Whatever happened, rows Salesforce confirmed are recorded before we leave.
            settler.settle(None, in_flight, every_call=every_call, force=True)
        self.summary.bulk_job_ids.extend(report.bulk_job_ids)
        if report.stopped_reason and not self.summary.stopped_reason:
            self.summary.stopped_reason = report.stopped_reason
        return report

    def _hold_for_parents(self, outcomes: Outcomes) -> Outcomes:
        """Rows refused because their parent record is missing while the parent model has
        not landed every row: left pending for the next run, not rejected (`parents`)."""
        for i, ok in enumerate(outcomes.success):
            if ok or outcomes.retryable[i]:
                continue
            code, message = outcomes.error_codes[i], outcomes.messages[i]
            if code != "INVALID_FIELD" or not message or "Foreign key" not in message:
                continue
            reason = self._parent_hold().reason(code, message)
            if reason is None:
                continue
            outcomes.retryable[i] = True
            outcomes.error_codes[i] = HELD_FOR_PARENT
            outcomes.messages[i] = f"held until its parent lands: {reason}"
            self.summary.held += 1
            self._held_reasons[reason] = self._held_reasons.get(reason, 0) + 1
        return outcomes

    def _parent_hold(self) -> ParentHold:
        if self._hold is None:
            parents = self._parents
            if parents is None:
                try:
                    specs = load_models_isolated(self.settings.models_dir).specs
                except ModelError:
                    specs = {}
                parents = parent_models(self.spec, specs)
            self._hold = ParentHold(self.settings.state_url, parents)
        return self._hold

    def _recorder(self, in_flight: InFlight, operation: str) -> Dispatch | None:
        """For creates, the ledger entry written before each call or Bulk upload."""
        if operation != "insert":
            return None

        def on_dispatch(keys: list[Any], bulk_job_id: str | None) -> None:
            self.ledger.record(
                keys,
                in_flight.rows(keys),
                object_name=self.spec.object,
                operation=operation,
                bulk_job_id=bulk_job_id,
            )

        return on_dispatch

    def _for_client(
        self, batch: pa.RecordBatch, keys: pa.Array, plan_fields: list[str]
    ) -> pa.RecordBatch:
        """The field columns and keys; with Composite, also the canonical payload when it
        holds exactly these fields (not when an Id was added), which saves encoding them."""
        fields = field_columns(batch)
        out = batch.select(fields).append_column(KEY_COLUMN, keys)
        if self.summary.transport == "composite" and fields == plan_fields:
            out = out.append_column(FIELDS_JSON_COLUMN, batch.column("__payload"))
        return out

    def _delete_removed(self, plan: Plan, settler: Settler) -> None:
        """Mirror: delete the records whose rows left the model, by their recorded Id —
        never a record a current row maps to (by its match key in the plan, or by the Id
        this run's upsert recorded for it): that old key is forgotten instead."""
        in_flight = InFlight()
        counter = iter(range(1 << 62))
        held_ids = self._ids_of_current_rows(plan)

        def keyed() -> Iterator[pa.RecordBatch]:
            for batch in plan.iter_removed():
                if batch.num_rows == 0:
                    continue
                current = pc.fill_null(pc.is_in(batch.column("__sf_id"), value_set=held_ids), False)
                if pc.any(current).as_py():
                    self._forget(batch.filter(current))
                    batch = batch.filter(pc.invert(current))
                    if batch.num_rows == 0:
                        continue
                keys = in_flight.keyed(next(counter), batch)
                yield pa.RecordBatch.from_arrays(
                    [batch.column("__sf_id"), keys], names=["Id", "__key"]
                )

        def on_outcomes(outcomes: Outcomes) -> None:
            settler.settle_deletes(outcomes, in_flight)
            self.progress("delete", self.summary.deleted, self.summary.removed)

        request = SendRequest(
            object=self.spec.object,
            operation="delete",
            external_id=None,
            transport="bulk" if self.summary.removed >= self.spec.bulk_threshold else "composite",
            nulls=self.spec.nulls,
            concurrency=self.spec.concurrency,
            switches=self._write_switches(),
        )
        for batch in plan.iter_superseded():
            self._forget(batch)
        report = self.client.send(request, keyed(), on_outcomes, stop=self.stop)
        self.summary.bulk_job_ids.extend(report.bulk_job_ids)

    def _ids_of_current_rows(self, plan: Plan) -> pa.Array:
        """Record Ids that state holds for keys still in the model (after the upsert)."""
        if not self.summary.removed:
            return pa.array([], pa.string())
        known = self.state.load(["pk", "sf_id", "status"], work_dir=self.work_dir)
        removed = pa.concat_arrays(
            [b.column("__pk") for b in plan.iter_removed()] or [pa.array([], pa.string())]
        )
        current = pc.and_(
            pc.equal(known.column("status"), "synced"),
            pc.invert(pc.is_in(known.column("pk"), value_set=removed)),
        )
        return pc.unique(pc.drop_null(known.column("sf_id").filter(current)))

    def _forget(self, batch: pa.RecordBatch) -> None:
        """Old keys whose record a current row carries: dropped from state, not deleted."""
        pks = batch.column("__pk").cast(pa.string())
        log.info("%s: %d key(s) left the model but their record is a current row's: kept",
                 self.spec.name, len(pks))  # fmt: skip
        self.state.commit(
            pa.table({"pk": pks, "status": pa.array(["deleted"] * len(pks), pa.string())})
        )
        self.summary.superseded += len(pks)

    def _resolve_ids(
        self, batches: Iterable[pa.RecordBatch], settler: Settler
    ) -> Iterator[pa.RecordBatch]:
        """update/delete by external id: the Id state recorded, else looked up by SOQL
        (compared as Salesforce compares the field). A record that does not exist is
        rejected `NOT_FOUND` for update, and counts as deleted for delete."""
        ext = self.spec.external_id
        if ext is None:
            raise ValueError(f"{self.spec.name}: update/delete needs an Id column or external_id")
        case_sensitive = _case_sensitive(self.client.describe(self.spec.object), ext)
        for batch in batches:
            # A row Salesforce refused last run (pending) is looked up again: its record
            # may have been deleted and re-created under the same External ID.
            recorded = pc.if_else(
                pc.equal(batch.column("__class"), "pending"),
                pa.scalar(None, pa.string()),
                batch.column("__sf_id"),
            ).to_pylist()
            wanted = batch.column(ext).to_pylist()
            lookup = [
                str(v)
                for v, known in zip(wanted, recorded, strict=True)
                if v is not None and not known
            ]
            found = self.client.ids_by_external_id(
                self.spec.object, ext, lookup, case_sensitive=case_sensitive
            )

            def key(value: Any) -> str:
                return str(value) if case_sensitive else str(value).lower()

            ids = pa.array(
                [
                    known or (found.get(key(v)) if v is not None else None)
                    for v, known in zip(wanted, recorded, strict=True)
                ],
                pa.string(),
            )
            missing = pc.is_null(ids)
            if pc.any(missing).as_py():
                gone = batch.filter(missing)
                if self.spec.operation == "delete":
                    # Nothing to delete: the record is already gone, which is what was asked.
                    self.summary.sent += gone.num_rows
                    self.summary.succeeded += gone.num_rows
                    self.state.commit(state_rows(gone, None, "synced"))
                else:
                    columns = field_columns(batch)
                    for row in pc.indices_nonzero(missing).to_pylist():
                        self.summary.sent += 1
                        self.summary.failed += 1
                        settler.sink.add(
                            primary_key=batch.column("__pk")[row].as_py(),
                            record=row_record(batch, row, columns),
                            error_code="NOT_FOUND",
                            message=f"no {self.spec.object} with {ext} = {batch.column(ext)[row].as_py()!r}",
                            fields=[ext],
                            transport=self.summary.transport,
                        )
            batch = batch.append_column("Id", ids).filter(pc.invert(missing))
            yield batch


def object_lease_name(object_name: str) -> str:
    """The lease one object's sends share, beside the models' state: ``_object_<Object>``
    (model names are lower-case by convention, so no model is named like it)."""
    return f"_object_{object_name}"[:100]


def _set_on_create_only(describe: Any, fields: list[str]) -> list[str]:
    """Fields an insert model may set when it creates a record but an update may not
    (createable, not updateable): its update pass for changed rows leaves them out."""
    out = []
    for name in fields:
        described = describe.field(name) if "." not in name else None
        if described is not None and described.createable and not described.updateable:
            out.append(name)
    return out


def _case_sensitive(describe: Any, field: str | None) -> bool:
    described = describe.field(field) if field else None
    return bool(described is not None and described.caseSensitive)


def _only_id(batch: pa.RecordBatch) -> pa.RecordBatch:
    keep = [n for n in batch.schema.names if n.startswith("__") or n == "Id"]
    return batch.select(keep)


def _has_recorded_id(batch: pa.RecordBatch) -> pa.Array:
    return pc.invert(pc.is_null(batch.column("__sf_id")))


def _without_recorded_id(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.filter(pc.invert(_has_recorded_id(batch)))


def _with_recorded_id(batch: pa.RecordBatch) -> pa.RecordBatch:
    chosen = batch.filter(_has_recorded_id(batch))
    return chosen.append_column("Id", chosen.column("__sf_id"))


def run_sync(spec: ModelSpec, settings: Settings, **options: Any) -> SyncSummary:
    """Plan and send one model; what `sf-activation sync` and the Dagster asset call."""
    return SyncRun(spec, settings, **options).execute()


def stage_sync(spec: ModelSpec, settings: Settings, **options: Any) -> SyncSummary:
    """Plan and stage the plan for the send step of the same run id (nothing sent)."""
    return SyncRun(spec, settings, **options).stage()


def plan_sync(spec: ModelSpec, settings: Settings, **options: Any) -> SyncSummary:
    """Plan only: counts and sample changes, nothing sent."""
    return SyncRun(spec, settings, **options).dry_run()
