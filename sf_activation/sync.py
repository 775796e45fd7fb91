"""One sync run of one model — the single code path behind the CLI and the Dagster assets.

load model → validate mapping against describe (fail before sending) → plan → send →
reconcile outcomes → commit confirmed rows to state batch by batch → publish rejects →
compact state → summary.
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
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.config import Settings
from sf_activation.diff import Plan, check_delete_rate, plan_changes
from sf_activation.in_flight import InFlight
from sf_activation.interrupts import SyncInterrupted, stop_on_signals
from sf_activation.lease import ModelLease
from sf_activation.ledger import LedgerEntry, LedgerTracker, SendLedger
from sf_activation.models import ModelSpec, check_columns
from sf_activation.reconcile import LedgerReconciler
from sf_activation.rejects import RejectSink, check_rejects_writable, mask_redacted
from sf_activation.salesforce.client import SalesforceClient
from sf_activation.salesforce.coerce import coerce_batch, output_schema
from sf_activation.salesforce.describe import validate_mapping
from sf_activation.salesforce.outcomes import (
    FIELDS_JSON_COLUMN,
    KEY_COLUMN,
    OUTCOME_UNKNOWN,
    Dispatch,
    Outcomes,
    RecordOutcome,
    SendReport,
    SendRequest,
    StopSignal,
    choose_transport,
)
from sf_activation.state import StateStore
from sf_activation.summary import SyncSummary
from sf_activation.testhooks import kill_point  # test hook: no-op unless set
from sf_activation.warehouse import Warehouse

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""progress(phase, done, total): phase is 'plan', 'send' or 'delete'; total may be 0 if unknown."""

META_COLUMNS = ("__pk", "__hash", "__sf_id", "__class", "__error_code", "__error_message")
# Salesforce answers these when the record is already gone: the delete is done.
ALREADY_DELETED = {"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"}
_ALREADY_DELETED = pa.array(sorted(ALREADY_DELETED), pa.string())
SEND_BATCH_ROWS = 10_000  # rows handed to the client at a time (bounded memory)
COMMIT_SECONDS = 0.5  # commit buffered rows at least this often (see Settings.commit_rows)
# DuckDB's memory while sending and compacting state (planning uses 1 GB): the plan and the
# state are on disk and read sequentially, so a small buffer pool costs little time.
SEND_PHASE_DUCKDB_MEMORY = "256MB"


class AccountingError(RuntimeError):
    """Rows went missing between plan, send and outcome: a bug, never a silent loss."""


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def _field_columns(batch: pa.RecordBatch) -> list[str]:
    return [name for name in batch.schema.names if not name.startswith("__")]


def _row_record(batch: pa.RecordBatch, row: int, columns: list[str]) -> dict[str, Any]:
    return {name: batch.column(name)[row].as_py() for name in columns}


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
        progress: ProgressCallback | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.client = client or SalesforceClient.from_settings(settings.salesforce)
        self.run_id = run_id or new_run_id()
        self.full_resync = full_resync
        self.allow_deletes = allow_deletes or settings.allow_deletes
        self.progress = progress or (lambda phase, done, total: None)
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix=f"sf-activation-{spec.name}-"))
        self.state = StateStore(settings.state_url, spec.name, run_id=self.run_id)
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
        self._unsettled: list[Outcomes] = []
        self._unsettled_rows = 0
        self._last_commit = time.monotonic()
        self._api_calls_at_start = self.client.api_calls
        self.stop = StopSignal()
        self._active_lease: ModelLease | None = None
        self.ledger = LedgerTracker(SendLedger(self.state))
        # Primary keys whose create may have landed (ledger): never sent again blindly.
        self._held: set[str] = set()
        self._held_rows: list[tuple[pa.Table, str]] = []  # (rows, why) for the reject file

    # ---------------------------------------------------------------- plan
    def plan(self) -> Plan:
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
        with Warehouse.from_url(self.settings.warehouse_url.get_secret_value()) as warehouse:
            check_columns(spec, warehouse.columns(spec.sql_text))
            rows_read = 0

            def coerced() -> Iterator[pa.RecordBatch]:
                nonlocal rows_read
                for batch in warehouse.iter_batches(spec.sql_text):
                    kill_point("plan_batch")  # test hook
                    rows_read += batch.num_rows
                    self.progress("plan", rows_read, 0)
                    yield coerce_batch(
                        batch,
                        primary_key=spec.primary_key,
                        field_map=spec.fields,
                        describe=describe,
                    )

            plan = plan_changes(
                coerced(),
                self.state,
                full_resync=self.full_resync,
                work_dir=self.work_dir,
                detect_removed=spec.operation == "mirror",
                schema=output_schema(spec.fields, describe),
            )
        counts = plan.counts
        for name in ("rows", "invalid", "added", "changed", "unchanged", "pending", "removed"):
            setattr(self.summary, name, int(counts.get(name, 0)))
        if spec.operation != "mirror":
            self.summary.removed = 0
        # Samples reach terminals, JSON summaries and the Dagster UI: PII stays masked.
        self.summary.sample_changes = mask_redacted(plan.sample_changes(5), set(spec.redact))
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
            )
        to_send = self.summary.added + self.summary.changed + self.summary.pending
        if self.full_resync:
            to_send += self.summary.unchanged
        self.summary.transport = choose_transport(to_send, spec.transport, spec.bulk_threshold)
        plan.limit_memory(SEND_PHASE_DUCKDB_MEMORY)
        self._plan = plan
        return plan

    def dry_run(self) -> SyncSummary:
        start = time.monotonic()
        try:
            self.plan()
        finally:
            self._cleanup()
        self.summary.dry_run = True
        self.summary.api_calls = self.client.api_calls - self._api_calls_at_start
        self.summary.duration_s = round(time.monotonic() - start, 3)
        return self.summary

    # ---------------------------------------------------------------- send
    def execute(self) -> SyncSummary:
        """The whole run, under the model's lease: preflight, reconcile what earlier runs
        left in flight, plan, send, explain, compact. SIGINT/SIGTERM stop it cleanly."""
        start = time.monotonic()
        try:
            # The stores are proven writable first: nothing, not even the lease, is
            # written into a store that cannot take the run's commits.
            self._preflight()
            with self._lease(), stop_on_signals(self.stop, self.spec.name) as signals:
                self._log_takeover()
                self._run(signals)
            if signals:
                raise SyncInterrupted(self._interrupted_message(signals[0]), signals[0])
        finally:
            self.summary.api_calls = self.client.api_calls - self._api_calls_at_start
            self.summary.duration_s = round(time.monotonic() - start, 3)
            self._cleanup()
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
        )
        try:
            if self._reconcile_ledger(self.ledger.ledger.entries(), sink, this_run=False):
                self._cleanup_plan()  # state changed under a plan made earlier
            plan = self._plan or self.plan()
            self._reject_invalid(plan, sink)
            cpu_at_send, wall_at_send = time.process_time(), time.monotonic()
            self._send_changes(plan, sink)
            unknown = [e for e in self.ledger.ledger.entries() if e.name in self.ledger.unknown]
            self._reconcile_ledger(unknown, sink, this_run=True)
            self.summary.send_cpu_s = round(time.process_time() - cpu_at_send, 3)
            self.summary.send_s = round(time.monotonic() - wall_at_send, 3)
            if self.spec.operation == "mirror" and not self.stop.is_set():
                self._delete_removed(plan, sink)
            self._explain_held(sink)
            # Rejects are published before the state is compacted: if the store cannot be
            # written the run fails, and the rejected rows stay pending for the next run.
            self.summary.rejects_url = sink.publish()
        finally:
            sink.discard()
        # The plan is done with: free its buffers before folding the state.
        self._cleanup_plan()
        if not signals:  # an interrupted run leaves quickly; its commits are durable
            self.state.compact(work_dir=self.work_dir, memory_limit=SEND_PHASE_DUCKDB_MEMORY)
        self.summary.rejected = (
            self.summary.invalid + self.summary.failed + self.summary.delete_failed
        )
        self.summary.reject_codes = dict(sink.codes)
        self.summary.reject_sample = sink.sample
        if self.stop.is_set() and not self.summary.stopped_reason:
            self.summary.stopped_reason = self.stop.reason
        self.summary.stopped = self.stop.kind
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
            columns = _field_columns(batch)
            codes = batch.column("__error_code").to_pylist()
            messages = batch.column("__error_message").to_pylist()
            pks = batch.column("__pk").to_pylist()
            for row in range(batch.num_rows):
                sink.add(
                    primary_key=pks[row],
                    record=_row_record(batch, row, columns),
                    error_code=codes[row] or "INVALID_ROW",
                    message=messages[row] or "",
                    transport="none",
                    fields=[],
                )

    # The send path is shared by every operation; only the request and the rows differ.
    def _send_changes(self, plan: Plan, sink: RejectSink) -> None:
        spec = self.spec
        self._plan_fields = plan.fields
        lookups = [f for f in spec.fields.values() if "." in f]
        batches: Iterable[pa.RecordBatch] = plan.iter_to_send(SEND_BATCH_ROWS, group_by=lookups)
        operation = spec.write_operation
        if operation == "insert":
            # Rows already created once (changed, or pending with an Id) are updated by their
            # recorded Id; only rows Salesforce has never accepted are inserted. The plan is
            # on disk, so two passes cost a query each, not memory.
            creates = (self._not_held(_without_recorded_id(b)) for b in batches)
            self._send("insert", creates, sink, external_id=None)
            updates = plan.iter_to_send(SEND_BATCH_ROWS, group_by=lookups)
            self._send("update", map(_with_recorded_id, updates), sink, external_id=None)
            return
        if operation in ("update", "delete") and "Id" not in spec.fields.values():
            batches = self._resolve_ids(batches, sink)
        if operation == "delete":
            batches = (_only_id(b) for b in batches)
        self._send(operation, batches, sink, external_id=spec.external_id)

    def _send(
        self,
        operation: str,
        batches: Iterable[pa.RecordBatch],
        sink: RejectSink,
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
                yield self._for_client(batch, keys, plan_fields)

        def on_outcomes(outcomes: Outcomes) -> None:
            nonlocal done
            done += len(outcomes)
            self.progress("send", done, total)
            self._settle(outcomes, in_flight, sink)

        request = SendRequest(
            object=self.spec.object,
            operation=operation,
            external_id=external_id if operation == "upsert" else None,
            transport=self.summary.transport,
            nulls=self.spec.nulls,
            concurrency=self.spec.concurrency,
        )
        try:
            report = self.client.send(
                request,
                keyed(),
                on_outcomes,
                on_dispatch=self._recorder(in_flight, operation),
                stop=self.stop,
            )
        finally:
            # Whatever happened, rows Salesforce confirmed are recorded before we leave.
            self._settle(None, in_flight, sink, force=True)
        self.summary.bulk_job_ids.extend(report.bulk_job_ids)
        if report.stopped_reason and not self.summary.stopped_reason:
            self.summary.stopped_reason = report.stopped_reason
        return report

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

    def _not_held(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not self._held or batch.num_rows == 0:
            return batch
        held = pc.is_in(batch.column("__pk"), value_set=pa.array(sorted(self._held), pa.string()))
        return batch.filter(pc.invert(held))

    def _for_client(
        self, batch: pa.RecordBatch, keys: pa.Array, plan_fields: list[str]
    ) -> pa.RecordBatch:
        """The field columns and keys; with Composite, also the canonical payload when it
        holds exactly these fields (not when an Id was added), which saves encoding them."""
        fields = _field_columns(batch)
        out = batch.select(fields).append_column(KEY_COLUMN, keys)
        if self.summary.transport == "composite" and fields == plan_fields:
            out = out.append_column(FIELDS_JSON_COLUMN, batch.column("__payload"))
        return out

    def _settle(
        self,
        outcomes: Outcomes | None,
        in_flight: InFlight,
        sink: RejectSink,
        *,
        force: bool = False,
    ) -> None:
        """Reconcile outcomes and commit the confirmed rows to state, a few calls at a time.

        Per 200-record call, a durable Parquet write and the Arrow work of matching outcomes
        to rows cost more CPU than sending the call. Idempotent operations are settled
        every `commit_rows` rows or COMMIT_SECONDS, so a killed run re-sends at most that
        much (upsert and update make that harmless); insert, which Salesforce cannot
        deduplicate, is settled after every call.
        """
        if outcomes is not None and len(outcomes):
            self._unsettled.append(outcomes)
            self._unsettled_rows += len(outcomes)
        due = (
            force
            or self.spec.write_operation == "insert"
            or self._unsettled_rows >= self.settings.commit_rows
            or time.monotonic() - self._last_commit >= COMMIT_SECONDS
        )
        if not due or not self._unsettled:
            return
        settled = Outcomes.concat(self._unsettled)
        self._unsettled, self._unsettled_rows = [], 0
        commits = self._reconcile(settled, in_flight, sink)
        if commits:
            kill_point("after_send_before_commit")  # test hook
            self.state.commit(pa.concat_tables(commits))
            kill_point("after_commit")  # test hook
        if self.ledger.active:
            # Only now, with the outcomes durable, may their ledger entries go.
            unknown = [c == OUTCOME_UNKNOWN for c in settled.error_codes]
            self.ledger.settled(settled.keys, unknown)
        self._last_commit = time.monotonic()

    def _reconcile(
        self, outcomes: Outcomes, in_flight: InFlight, sink: RejectSink, *, count: bool = True
    ) -> list[pa.Table]:
        """Count the outcomes (unless `count`: outcomes learned from the ledger), record
        rejects; the state rows to commit."""
        numbers, rows = in_flight.locate(outcomes)
        accepted = outcomes.success_mask()
        # Retryable: not the row's fault (retries exhausted, job failed, budget reached);
        # it stays as it is in state and is sent again next run.
        retryable = outcomes.retryable_mask()
        refused = ~accepted & ~retryable
        if count:
            self.summary.sent += len(outcomes)
            self.summary.succeeded += int(np.count_nonzero(accepted))
            self.summary.retried += int(np.count_nonzero(retryable))
            self.summary.failed += int(np.count_nonzero(refused))
        sf_ids = pa.array(outcomes.sf_ids, pa.string())
        commits: list[pa.Table] = []
        for number, batch, mine in in_flight.by_batch(numbers):
            ok = mine & accepted
            if ok.any():
                taken = batch.take(pa.array(rows[ok]))
                ids = sf_ids.filter(pa.array(ok))
                if "__sf_id" in batch.schema.names:  # updates answer with the Id we sent
                    ids = pc.coalesce(ids, taken.column("__sf_id"))
                commits.append(_state_rows(taken, ids, "synced"))
            bad = mine & refused
            if bad.any():
                for i in np.flatnonzero(bad).tolist():
                    self._reject(sink, batch, int(rows[i]), outcomes[i])
                taken = batch.take(pa.array(rows[bad]))
                ids = taken.column("__sf_id") if "__sf_id" in batch.schema.names else None
                commits.append(_state_rows(taken, ids, "rejected"))
            in_flight.settle(number, int(np.count_nonzero(mine)))
        return commits

    # ---------------------------------------------------------------- ledger
    def _reconcile_ledger(
        self, entries: list[LedgerEntry], sink: RejectSink, *, this_run: bool
    ) -> bool:
        """Learn the outcome of creates whose answer was lost, commit what Salesforce holds
        and hold what it cannot tell yet. `this_run`: the entries are this run's own (their
        rows were counted as retried; they move to succeeded or failed as resolved).
        Returns whether state changed."""
        if not entries:
            return False
        log.warning(
            "%s: %d send(s) of %s left without a known outcome; asking Salesforce",
            self.spec.name, len(entries), "this run" if this_run else "an earlier run",
        )  # fmt: skip
        known = self.state.load(["pk", "sf_id", "status"], work_dir=self.work_dir)
        synced = pc.equal(known.column("status"), "synced")
        synced_pks = set(known.column("pk").filter(synced).to_pylist())
        known_ids = {i for i in known.column("sf_id").to_pylist() if i}
        changed = False
        synced_set = pa.array(sorted(synced_pks), pa.string())
        for entry in entries:
            rows = entry.rows
            # Rows a later commit already confirmed need nothing (their Ids are in state).
            # A Bulk job is read whole (its results are matched to all its rows), and the
            # outcomes of such rows are dropped afterwards.
            if entry.info.bulk_job_id is None:
                rows = rows.filter(pc.invert(pc.is_in(rows.column("__pk"), value_set=synced_set)))
            if rows.num_rows == 0:
                self.ledger.ledger.remove([entry.name])
                continue
            request = SendRequest(
                object=entry.info.object,
                operation="insert",
                transport="bulk" if entry.info.bulk_job_id else "composite",
                nulls=self.spec.nulls,
                concurrency=self.spec.concurrency,
            )
            describe = self.client.describe(entry.info.object)
            reconciler = LedgerReconciler(
                self.client, describe, request, grace_s=self.settings.unknown_outcome_grace_s
            )
            in_flight = InFlight()
            batch = rows.combine_chunks().to_batches()[0]
            keys = in_flight.keyed(0, batch)
            outcomes = reconciler.resolve(
                LedgerEntry(entry.name, entry.info, rows), keys.to_pylist(), known_ids
            )
            _, positions = InFlight.locate(outcomes)
            fresh = pc.invert(
                pc.is_in(batch.column("__pk").take(pa.array(positions)), value_set=synced_set)
            )
            outcomes = outcomes.take(np.flatnonzero(np.asarray(fresh)).tolist())
            if not this_run:
                # A row an earlier run's job refused is simply sent again by this run's
                # plan, which records the reason in this run's reject file.
                outcomes = outcomes.take(
                    np.flatnonzero(outcomes.success_mask() | outcomes.retryable_mask()).tolist()
                )
            unknown = np.asarray([c == OUTCOME_UNKNOWN for c in outcomes.error_codes], bool)
            accepted = outcomes.success_mask()
            refused = ~accepted & ~outcomes.retryable_mask()
            if this_run:
                self.summary.succeeded += int(np.count_nonzero(accepted))
                self.summary.failed += int(np.count_nonzero(refused))
                self.summary.retried -= int(np.count_nonzero(accepted | refused))
            self.summary.reconciled += int(np.count_nonzero(accepted | refused))
            commits = self._reconcile(outcomes, in_flight, sink, count=False)
            if commits:
                self.state.commit(pa.concat_tables(commits))
                changed = True
                known_ids.update(i for i in outcomes.sf_ids if i)
            if unknown.any():
                _, positions = InFlight.locate(outcomes.take(np.flatnonzero(unknown).tolist()))
                held = batch.take(pa.array(positions))
                message = outcomes.messages[int(np.flatnonzero(unknown)[0])] or ""
                self._held.update(held.column("__pk").to_pylist())
                self._held_rows.append((pa.Table.from_batches([held]), message))
            else:
                kill_point("ledger_resolved")  # test hook: committed, entry not yet removed
                self.ledger.ledger.remove([entry.name])
        return changed

    def _explain_held(self, sink: RejectSink) -> None:
        """Rows held because Salesforce has not told whether their create landed: one line
        each in the reject file (OUTCOME_UNKNOWN), counted as unconfirmed."""
        seen: set[str] = set()
        for rows, message in self._held_rows:
            for batch in rows.to_batches():
                columns = _field_columns(batch)
                for row, pk in enumerate(batch.column("__pk").to_pylist()):
                    if pk in seen:
                        continue
                    seen.add(pk)
                    sink.add(
                        primary_key=pk,
                        record=_row_record(batch, row, columns),
                        error_code=OUTCOME_UNKNOWN,
                        message=message,
                        fields=[],
                        transport=self.summary.transport,
                    )
        self.summary.unconfirmed = len(seen)

    def _reject(
        self, sink: RejectSink, batch: pa.RecordBatch, row: int, outcome: RecordOutcome
    ) -> None:
        sink.add(
            primary_key=batch.column("__pk")[row].as_py(),
            record=_row_record(batch, row, _field_columns(batch)),
            error_code=outcome.error_code or "UNKNOWN_ERROR",
            message=outcome.message or "",
            fields=list(outcome.fields or []),
            attempts=outcome.attempts,
            transport=self.summary.transport,
        )

    def _commit_deleted(self, pks: pa.Array) -> None:
        status = pa.array(["deleted"] * len(pks), pa.string())
        self.state.commit(pa.table({"pk": pks.cast(pa.string()), "status": status}))

    def _delete_removed(self, plan: Plan, sink: RejectSink) -> None:
        """Mirror: delete the records whose rows left the model, by their recorded Id."""
        in_flight = InFlight()
        counter = iter(range(1 << 62))

        def keyed() -> Iterator[pa.RecordBatch]:
            for batch in plan.iter_removed():
                if batch.num_rows == 0:
                    continue
                keys = in_flight.keyed(next(counter), batch)
                yield pa.RecordBatch.from_arrays(
                    [batch.column("__sf_id"), keys], names=["Id", "__key"]
                )

        def on_outcomes(outcomes: Outcomes) -> None:
            numbers, rows = in_flight.locate(outcomes)
            codes = pa.array(outcomes.error_codes, pa.string())
            already = pc.fill_null(pc.is_in(codes, value_set=_ALREADY_DELETED), False)
            gone = outcomes.success_mask() | np.asarray(already)
            refused = ~gone & ~outcomes.retryable_mask()
            pks: list[pa.Array] = []
            for number, batch, mine in in_flight.by_batch(numbers):
                if (mine & gone).any():
                    pks.append(batch.column("__pk").take(pa.array(rows[mine & gone])))
                for i in np.flatnonzero(mine & refused).tolist():
                    outcome, row = outcomes[i], int(rows[i])
                    sink.add(
                        primary_key=batch.column("__pk")[row].as_py(),
                        record={"Id": batch.column("__sf_id")[row].as_py()},
                        error_code=outcome.error_code or "UNKNOWN_ERROR",
                        message=outcome.message or "",
                        fields=list(outcome.fields or []),
                        attempts=outcome.attempts,
                        transport=self.summary.transport,
                    )
                in_flight.settle(number, int(np.count_nonzero(mine)))
            self.summary.deleted += int(np.count_nonzero(gone))
            self.summary.delete_failed += int(np.count_nonzero(refused))
            self.progress("delete", self.summary.deleted, self.summary.removed)
            if pks:
                kill_point("delete_before_commit")  # test hook
                self._commit_deleted(pa.concat_arrays(pks))

        request = SendRequest(
            object=self.spec.object,
            operation="delete",
            external_id=None,
            transport="bulk" if self.summary.removed >= self.spec.bulk_threshold else "composite",
            nulls=self.spec.nulls,
            concurrency=self.spec.concurrency,
        )
        report = self.client.send(request, keyed(), on_outcomes, stop=self.stop)
        self.summary.bulk_job_ids.extend(report.bulk_job_ids)

    def _resolve_ids(
        self, batches: Iterable[pa.RecordBatch], sink: RejectSink
    ) -> Iterator[pa.RecordBatch]:
        """update/delete by external id: look the Ids up by SOQL; missing records are rejected."""
        ext = self.spec.external_id
        if ext is None:
            raise ValueError(f"{self.spec.name}: update/delete needs an Id column or external_id")
        for batch in batches:
            wanted = batch.column(ext).to_pylist()
            found = self.client.ids_by_external_id(
                self.spec.object, ext, (str(v) for v in wanted if v is not None)
            )
            ids = pa.array(
                [found.get(str(v)) if v is not None else None for v in wanted],
                pa.string(),
            )
            missing = pc.is_null(ids)
            if pc.any(missing).as_py():
                columns = _field_columns(batch)
                for row in pc.indices_nonzero(missing).to_pylist():
                    self.summary.sent += 1
                    self.summary.failed += 1
                    sink.add(
                        primary_key=batch.column("__pk")[row].as_py(),
                        record=_row_record(batch, row, columns),
                        error_code="NOT_FOUND",
                        message=f"no {self.spec.object} with {ext} = {batch.column(ext)[row].as_py()!r}",
                        fields=[ext],
                        transport=self.summary.transport,
                    )
            batch = batch.append_column("Id", ids).filter(pc.invert(missing))
            yield batch


def _state_rows(batch: pa.RecordBatch, ids: pa.Array | None, status: str) -> pa.Table:
    n = batch.num_rows
    columns = {
        "pk": batch.column("__pk"),
        "hash": batch.column("__hash"),
        "sf_id": ids if ids is not None else pa.nulls(n, pa.string()),
        "status": pa.array([status] * n, pa.string()),
    }
    # The payload is what Salesforce accepted; a rejected row keeps none (its last accepted
    # payload is superseded, and it is re-sent next run whatever it holds).
    if status == "synced" and "__payload" in batch.schema.names:
        columns["payload"] = batch.column("__payload")
    else:
        columns["payload"] = pa.nulls(n, pa.string())
    return pa.table(columns)


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


def plan_sync(spec: ModelSpec, settings: Settings, **options: Any) -> SyncSummary:
    """Plan only: counts and sample changes, nothing sent."""
    return SyncRun(spec, settings, **options).dry_run()
