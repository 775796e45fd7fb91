"""Outcomes into counts, rejects and state: the one path every send of a run goes through.

Creates, updates, upserts, mirror deletes and the outcomes a run learns from the ledger
all end here: each outcome is matched to its planned row (`InFlight`), counted in the
summary, written to the reject file when Salesforce refused the row, and committed to
state when Salesforce confirmed it. Only then may a create's ledger entry be removed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.in_flight import InFlight
from sf_activation.ledger import LedgerTracker
from sf_activation.rejects import RejectSink
from sf_activation.salesforce.outcomes import OUTCOME_UNKNOWN, Outcomes, RecordOutcome
from sf_activation.state import StateStore, state_keys
from sf_activation.summary import SyncSummary
from sf_activation.sync_log import SyncLog, outcome_labels
from sf_activation.testhooks import kill_point  # test hook: no-op unless set

COMMIT_SECONDS = 0.5  # commit buffered rows at least this often (see Settings.commit_rows)
# Salesforce answers these when the record is already gone: the delete is done.
ALREADY_DELETED = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})


def field_columns(batch: pa.RecordBatch) -> list[str]:
    return [name for name in batch.schema.names if not name.startswith("__")]


def row_record(batch: pa.RecordBatch, row: int, columns: list[str]) -> dict[str, Any]:
    return {name: batch.column(name)[row].as_py() for name in columns}


class Settler:
    """Settles one run's outcomes; buffers idempotent ones, commits creates per call."""

    def __init__(
        self,
        *,
        state: StateStore,
        sink: RejectSink,
        summary: SyncSummary,
        ledger: LedgerTracker,
        commit_rows: int,
        sync_log: SyncLog | None = None,
    ) -> None:
        self.sync_log = sync_log
        self.state = state
        self.sink = sink
        self.summary = summary
        self.ledger = ledger
        self.commit_rows = commit_rows
        self._unsettled: list[Outcomes] = []
        self._unsettled_rows = 0
        self._last_commit = time.monotonic()

    def settle(
        self,
        outcomes: Outcomes | None,
        in_flight: InFlight,
        *,
        every_call: bool,
        force: bool = False,
    ) -> None:
        """Reconcile outcomes and commit the confirmed rows to state, a few calls at a time.

        Per 200-record call, a durable Parquet write and the Arrow work of matching outcomes
        to rows cost more CPU than sending the call. Idempotent operations are settled
        every `commit_rows` rows or COMMIT_SECONDS, so a killed run re-sends at most that
        much (upsert and update make that harmless); creates (`every_call`), which
        Salesforce cannot deduplicate, are settled after every call.
        """
        if outcomes is not None and len(outcomes):
            self._unsettled.append(outcomes)
            self._unsettled_rows += len(outcomes)
        due = (
            force
            or every_call
            or self._unsettled_rows >= self.commit_rows
            or time.monotonic() - self._last_commit >= COMMIT_SECONDS
        )
        if not due or not self._unsettled:
            return
        settled = Outcomes.concat(self._unsettled)
        self._unsettled, self._unsettled_rows = [], 0
        commits = self.apply(settled, in_flight)
        if commits:
            kill_point("after_send_before_commit")  # test hook
            self.state.commit(pa.concat_tables(commits))
            kill_point("after_commit")  # test hook
        if self.ledger.active:
            # Only now, with the outcomes durable, may their ledger entries go.
            unknown = [c == OUTCOME_UNKNOWN for c in settled.error_codes]
            self.ledger.settled(settled.keys, unknown)
        self._last_commit = time.monotonic()

    def apply(
        self, outcomes: Outcomes, in_flight: InFlight, *, count: bool = True
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
        attempts = np.asarray(outcomes.attempts, dtype=np.int32)
        # Most outcomes say nothing but "done": then no batch has a message or code to log.
        quiet = not any(outcomes.error_codes) and all(m is None for m in outcomes.messages)
        commits: list[pa.Table] = []
        for number, batch, mine in in_flight.by_batch(numbers):
            ok = mine & accepted
            if ok.any():
                taken = batch.take(pa.array(rows[ok]))
                ids = sf_ids.filter(pa.array(ok))
                if "__sf_id" in batch.schema.names:  # updates answer with the Id we sent
                    ids = pc.coalesce(ids, taken.column("__sf_id"))
                commits.append(state_rows(taken, ids, "synced"))
            bad = mine & refused
            if bad.any():
                for i in np.flatnonzero(bad).tolist():
                    self.reject(batch, int(rows[i]), outcomes[i])
                taken = batch.take(pa.array(rows[bad]))
                ids = taken.column("__sf_id") if "__sf_id" in batch.schema.names else None
                commits.append(state_rows(taken, ids, "rejected"))
            if self.sync_log is not None:
                self._log(batch, rows, mine, outcomes, sf_ids, accepted, retryable, attempts, quiet)
            in_flight.settle(number, int(np.count_nonzero(mine)))
        return commits

    def _log(
        self,
        batch: pa.RecordBatch,
        rows: np.ndarray,
        mine: np.ndarray,
        outcomes: Outcomes,
        sf_ids: pa.Array,
        accepted: np.ndarray,
        retryable: np.ndarray,
        attempts: np.ndarray,
        quiet: bool,
    ) -> None:
        """This batch's outcomes into the run's sync log; `quiet`: no outcome has an error
        code or message (no per-row message to mask, no dict of values to build)."""
        assert self.sync_log is not None
        idx = np.flatnonzero(mine)
        taken = batch.take(pa.array(rows[idx]))
        ids = sf_ids.take(pa.array(idx))
        if "__sf_id" in taken.schema.names:
            ids = pc.coalesce(ids, taken.column("__sf_id"))
        messages: list[str | None] | None = None
        error_codes: list[str | None] | None = None
        records: list[dict[str, Any]] | None = None
        if not quiet:
            chosen = idx.tolist()
            messages = [outcomes.messages[i] for i in chosen]
            error_codes = [outcomes.error_codes[i] for i in chosen]
            columns = field_columns(taken)
            records = [
                row_record(taken, j, columns) if m is not None else {}
                for j, m in enumerate(messages)
            ]
        self.sync_log.add(
            pks=taken.column("__pk"),
            sf_ids=ids,
            change=taken.column("__class") if "__class" in taken.schema.names else "added",
            outcome=outcome_labels(accepted[idx], retryable[idx]),
            error_codes=error_codes,
            messages=messages,
            attempts=attempts[idx],
            records=records,
        )

    def settle_deletes(self, outcomes: Outcomes, in_flight: InFlight) -> None:
        """Mirror deletes: a record gone (deleted now, or already) is committed `deleted`;
        one Salesforce refused to delete is a reject; the rest are tried next run."""
        numbers, rows = in_flight.locate(outcomes)
        codes = pa.array(outcomes.error_codes, pa.string())
        # Built here, not at import: converting Python values makes pyarrow import pandas,
        # which the sync path otherwise never needs (sf_activation_tests/test_startup.py).
        gone_codes = pa.array(sorted(ALREADY_DELETED), pa.string())
        already = pc.fill_null(pc.is_in(codes, value_set=gone_codes), False)
        gone = outcomes.success_mask() | np.asarray(already)
        refused = ~gone & ~outcomes.retryable_mask()
        pks: list[pa.Array] = []
        for number, batch, mine in in_flight.by_batch(numbers):
            if (mine & gone).any():
                pks.append(batch.column("__pk").take(pa.array(rows[mine & gone])))
            for i in np.flatnonzero(mine & refused).tolist():
                row = int(rows[i])
                self.reject(
                    batch, row, outcomes[i], record={"Id": batch.column("__sf_id")[row].as_py()}
                )
            if self.sync_log is not None:
                idx = np.flatnonzero(mine)
                taken = pa.array(rows[idx])
                labels = np.where(gone[idx], "deleted", np.where(refused[idx], "failed", "retried"))
                self.sync_log.add(
                    pks=batch.column("__pk").take(taken),
                    sf_ids=batch.column("__sf_id").take(taken),
                    change="removed",
                    outcome=pa.array(labels.tolist(), pa.string()),
                    error_codes=[outcomes.error_codes[i] for i in idx.tolist()],
                    messages=[outcomes.messages[i] for i in idx.tolist()],
                    attempts=[int(outcomes.attempts[i]) for i in idx.tolist()],
                )
            in_flight.settle(number, int(np.count_nonzero(mine)))
        self.summary.deleted += int(np.count_nonzero(gone))
        self.summary.delete_failed += int(np.count_nonzero(refused))
        if pks:
            kill_point("delete_before_commit")  # test hook
            deleted = pa.concat_arrays(pks).cast(pa.string())
            status = pa.array(["deleted"] * len(deleted), pa.string())
            self.state.commit(pa.table({"pk": deleted, "status": status}))

    def reject(
        self,
        batch: pa.RecordBatch,
        row: int,
        outcome: RecordOutcome,
        *,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.sink.add(
            primary_key=batch.column("__pk")[row].as_py(),
            record=record if record is not None else row_record(batch, row, field_columns(batch)),
            error_code=outcome.error_code or "UNKNOWN_ERROR",
            message=outcome.message or "",
            fields=list(outcome.fields or []),
            attempts=outcome.attempts,
            transport=self.summary.transport,
        )


def already_deleted_as_done(outcomes: Outcomes) -> Outcomes:
    """A delete Salesforce refuses because the record is already gone did what was asked."""
    for i, code in enumerate(outcomes.error_codes):
        if not outcomes.success[i] and code in ALREADY_DELETED:
            outcomes.success[i] = True
            outcomes.error_codes[i] = None
            outcomes.messages[i] = None
            outcomes.retryable[i] = False
    return outcomes


def state_rows(batch: pa.RecordBatch, ids: pa.Array | None, status: str) -> pa.Table:
    n = batch.num_rows
    columns = {
        # The key as state keeps it: its digest when the model's key is redacted.
        "pk": state_keys(batch),
        "hash": batch.column("__hash"),
        "sf_id": ids if ids is not None else pa.nulls(n, pa.string()),
        "status": pa.repeat(pa.scalar(status, pa.string()), n),
    }
    # The payload is what Salesforce accepted (`redact:` values masked); a rejected row
    # keeps none (its last accepted payload is superseded, and it is re-sent next run
    # whatever it holds).
    names = batch.schema.names
    stored = "__stored_payload" if "__stored_payload" in names else "__payload"
    if status == "synced" and stored in names:
        columns["payload"] = batch.column(stored)
    else:
        columns["payload"] = pa.nulls(n, pa.string())
    return pa.table(columns)
