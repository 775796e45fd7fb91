"""Finding out what became of creates whose answer never came back (ledger entries).

Every run does this before it plans, and again after its own send when an answer was
lost: for each entry of the ledger (`sf_activation/ledger.py`),

- a Bulk job is asked for by its id: it is waited for if still running, its results are
  read (Salesforce keeps them for 7 days), and a job that was never closed is aborted;
  rows its results, all read, still lack (results that do not add up, a job that failed
  or was aborted midway) are looked for in Salesforce like a create call's;
- a create call is looked for in Salesforce: by a unique or External ID field when the
  model maps one (an exact answer), otherwise by content among the records the
  integration user created since shortly before the call.

Each row gets an outcome: created (its Id, committed to state), refused by Salesforce
(a reject), not applied (sent again like any row not yet synced), or still unknown —
held, never sent again blindly, and explained in the reject file with `OUTCOME_UNKNOWN`.
A create call that Salesforce does not hold may still be running there when its answer
was lost to a timeout; its rows are held until `grace_s` after the call (Salesforce ends
a request within 10 minutes), then released.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.in_flight import InFlight
from sf_activation.ledger import LedgerEntry, LedgerTracker
from sf_activation.rejects import RejectSink
from sf_activation.salesforce.bulk import ABSENT_FROM_RESULTS
from sf_activation.salesforce.client import SalesforceClient
from sf_activation.salesforce.describe import FieldDescribe, ObjectDescribe
from sf_activation.salesforce.errors import SalesforceError
from sf_activation.salesforce.outcomes import (
    KEY_COLUMN,
    OUTCOME_UNKNOWN,
    Outcomes,
    SendRequest,
)
from sf_activation.salesforce.soql import format_soql  # simple-salesforce, imported on use
from sf_activation.settle import Settler, field_columns, row_record
from sf_activation.state import StateStore, state_keys
from sf_activation.summary import SyncSummary
from sf_activation.testhooks import kill_point  # test hook: no-op unless set

log = logging.getLogger(__name__)

NOT_APPLIED = "NOT_APPLIED"
# Records created this long before the call's recorded time still count: the sending
# worker's clock may be behind Salesforce's.
CLOCK_MARGIN = dt.timedelta(hours=24)
QUERY_CHUNK = 200
_TEXT_TYPES = {"string", "email", "phone", "url", "textarea", "picklist", "combobox", "id"}
_NUMBER_TYPES = {"int", "double", "currency", "percent", "long"}


class LedgerReconciler:
    """Resolves ledger entries of one model against what Salesforce holds."""

    def __init__(
        self,
        client: SalesforceClient,
        describe: ObjectDescribe,
        request: SendRequest,
        *,
        grace_s: float,
        now: dt.datetime | None = None,
    ) -> None:
        self.client = client
        self.describe = describe
        self.request = request
        self.grace_s = grace_s
        self._now = now
        self._user_id: str | None = None

    def resolve(self, entry: LedgerEntry, keys: list[Any], known_ids: set[str]) -> Outcomes:
        """One outcome per row of `entry` (keyed by `keys`). `known_ids`: Ids state already
        holds for other rows, never handed to a row here."""
        if entry.info.bulk_job_id:
            return self._resolve_job(entry, keys, known_ids)
        return self._resolve_call(entry, keys, known_ids)

    # -- Bulk jobs ---------------------------------------------------------------------

    def _resolve_job(self, entry: LedgerEntry, keys: list[Any], known_ids: set[str]) -> Outcomes:
        job_id = entry.info.bulk_job_id
        assert job_id is not None
        rows = entry.rows.select(field_columns(entry.rows)).append_column(
            KEY_COLUMN, pa.array(keys, pa.int64())
        )
        got = Outcomes.empty()
        try:
            self.client.resume_bulk_job(self.request, job_id, rows, got.extend)
        except SalesforceError as exc:
            log.warning("bulk job %s: outcome still unknown: %s", job_id, exc)
            return Outcomes.failed(
                keys, OUTCOME_UNKNOWN,
                f"bulk job {job_id} of run {entry.info.run_id}: outcome not known yet ({exc}); "
                "held, not sent again, until Salesforce answers",
                retryable=True, attempts=1,
            )  # fmt: skip
        got = self._look_for_absent(entry, keys, got, known_ids)
        # A job that failed or left rows unprocessed did not create them: they are sent
        # again like any other row; rows it refused are rejects.
        for i, (ok, code, again) in enumerate(
            zip(got.success, got.error_codes, got.retryable, strict=True)
        ):
            if not ok and again and code != OUTCOME_UNKNOWN:
                got.error_codes[i] = NOT_APPLIED
        return got

    def _look_for_absent(
        self, entry: LedgerEntry, keys: list[Any], got: Outcomes, known_ids: set[str]
    ) -> Outcomes:
        """`got` with the rows a finished job's results lack (read in full, they name
        neither a success, a failure nor an unprocessed row for them) resolved by asking
        Salesforce for the records, as for a create call whose answer was lost: found,
        they are created with that Id; not found, they were not applied, once the grace
        after the upload has passed (a job aborted midway may still be committing its
        last batch); until then, or when Salesforce cannot be asked, they stay held.
        Reading the job again would only tell the same thing."""
        absent = [
            i
            for i, (code, message) in enumerate(zip(got.error_codes, got.messages, strict=True))
            if code == OUTCOME_UNKNOWN and ABSENT_FROM_RESULTS in (message or "")
        ]
        if not absent:
            return got
        job_id = entry.info.bulk_job_id
        row_of = {key: i for i, key in enumerate(keys)}
        positions = [row_of[got.keys[i]] for i in absent]
        # Ids the job's results gave to its other rows are theirs, not these rows'.
        given = zip(got.success, got.sf_ids, strict=True)
        taken = known_ids | {sf_id for ok, sf_id in given if ok and sf_id}
        try:
            found = self.find_created(
                entry.rows.take(pa.array(positions, pa.int64())), entry.info.sent_at_dt, taken
            )
        except SalesforceError as exc:
            log.warning("bulk job %s: cannot look for rows its results lack: %s", job_id, exc)
            return got
        age = self._age(entry)
        keep = sorted(set(range(len(got))) - set(absent))
        out = got.take(keep)
        absent_keys = [got.keys[i] for i in absent]
        out.extend(
            self._found_or_held(
                absent_keys, found, age,
                not_applied=f"bulk job {job_id} of run {entry.info.run_id}: in none of its "
                f"result files and not in Salesforce {age:.0f} s after the upload: not applied",
                held=f"bulk job {job_id} of run {entry.info.run_id}: in none of its result "
                "files, and Salesforce does not hold the records yet; held, not sent again, "
                f"until {self.grace_s:.0f} s after the upload",
            )
        )  # fmt: skip
        hits = len(found)
        missing = len(absent) - hits
        log.warning(
            "bulk job %s: %d row(s) in none of its result files: %d found in Salesforce, %d %s",
            job_id, len(absent), hits, missing,
            "not applied" if age >= self.grace_s else "held",
        )  # fmt: skip
        return out

    # -- create calls ------------------------------------------------------------------

    def _resolve_call(self, entry: LedgerEntry, keys: list[Any], known_ids: set[str]) -> Outcomes:
        rows = entry.rows
        try:
            found = self.find_created(rows, entry.info.sent_at_dt, known_ids)
        except SalesforceError as exc:
            return Outcomes.failed(
                keys, OUTCOME_UNKNOWN,
                f"create call of run {entry.info.run_id} at {entry.info.sent_at}: cannot ask "
                f"Salesforce what it holds ({exc}); held, not sent again",
                retryable=True, attempts=1,
            )  # fmt: skip
        age = self._age(entry)
        return self._found_or_held(
            keys, found, age,
            not_applied=f"not in Salesforce {age:.0f} s after the create call: not applied",
            held=f"create call of run {entry.info.run_id} at {entry.info.sent_at} got no "
            "answer and Salesforce does not hold the records yet; held, not sent again, "
            f"until {self.grace_s:.0f} s after the call",
        )  # fmt: skip

    def _age(self, entry: LedgerEntry) -> float:
        """Seconds since the entry's call or upload, by this worker's clock."""
        now = self._now or dt.datetime.now(dt.UTC)
        return (now - entry.info.sent_at_dt).total_seconds()

    def _found_or_held(
        self, keys: list[Any], found: dict[int, str], age: float, *, not_applied: str, held: str
    ) -> Outcomes:
        """Rows of an unanswered write resolved by what Salesforce holds: `found` (index
        into `keys` -> Id) were created with that Id; the others were not applied once the
        grace has passed, and until then are held, never sent again (a write Salesforce
        accepted may not be visible to a query yet)."""
        out = Outcomes.empty()
        hits = sorted(found)
        if hits:
            out.extend(
                Outcomes.succeeded(
                    [keys[i] for i in hits], [found[i] for i in hits], [True] * len(hits), 1
                )
            )
        missing = [keys[i] for i in range(len(keys)) if i not in found]
        if missing and age >= self.grace_s:
            out.extend(
                Outcomes.failed(missing, NOT_APPLIED, not_applied, retryable=True, attempts=1)
            )
        elif missing:
            out.extend(
                Outcomes.failed(
                    missing, OUTCOME_UNKNOWN, f"{held} (SF_ACTIVATION_UNKNOWN_OUTCOME_GRACE_S)",
                    retryable=True, attempts=1,
                )
            )  # fmt: skip
        return out

    def user_id(self) -> str:
        if self._user_id is None:
            self._user_id = self.client.user_id()
        return self._user_id

    def find_created(
        self, rows: pa.Table, sent_at: dt.datetime, known_ids: set[str]
    ) -> dict[int, str]:
        """Row index -> Id of the record Salesforce holds for it."""
        columns = [
            c for c in field_columns(rows) if "." not in c and self.describe.field(c) is not None
        ]
        unique = [
            c
            for c in columns
            if (f := self.describe.field(c)) is not None
            and (f.unique or f.externalId)
            and f.type in _TEXT_TYPES | _NUMBER_TYPES
        ]
        if unique:
            return self._find_by_unique(rows, unique[0], known_ids)
        return self._find_by_content(rows, columns, sent_at, known_ids)

    def _find_by_unique(self, rows: pa.Table, column: str, known_ids: set[str]) -> dict[int, str]:
        field = self.describe.field(column)
        assert field is not None
        fold = field.type in _TEXT_TYPES and not field.caseSensitive
        values = rows.column(column).to_pylist()

        def norm(v: Any) -> Any:
            return _normalize(v, field, fold=fold)

        wanted = sorted({str(v) for v in values if v is not None})
        by_value: dict[Any, str] = {}
        for part in _chunks(wanted, QUERY_CHUNK):
            soql = format_soql(
                f"SELECT Id, {column} FROM {self.request.object} WHERE {column} IN {{}}", part
            )
            for record in self.client.query(soql):
                by_value[norm(record.get(column))] = record["Id"]
        return {
            i: by_value[norm(v)]
            for i, v in enumerate(values)
            if v is not None and norm(v) in by_value and by_value[norm(v)] not in known_ids
        }

    def _find_by_content(
        self, rows: pa.Table, columns: list[str], sent_at: dt.datetime, known_ids: set[str]
    ) -> dict[int, str]:
        fields = {c: self.describe.field(c) for c in columns}
        values = {c: rows.column(c).to_pylist() for c in columns}
        since = (sent_at - CLOCK_MARGIN).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Narrow the query by one text field the rows fill in, when there is one.
        narrow = next(
            (
                c
                for c in columns
                if fields[c] is not None
                and fields[c].type in _TEXT_TYPES  # type: ignore[union-attr]
                and all(v is not None for v in values[c])
            ),
            None,
        )
        select = ", ".join(["Id", *columns])
        base = (
            f"SELECT {select} FROM {self.request.object} "
            f"WHERE CreatedById = {{}} AND CreatedDate >= {since}"
        )
        records: list[dict[str, Any]] = []
        if narrow is None:
            records.extend(self.client.query(format_soql(base, self.user_id())))
        else:
            for part in _chunks(sorted({str(v) for v in values[narrow]}), QUERY_CHUNK):
                soql = format_soql(base + f" AND {narrow} IN {{}}", self.user_id(), part)
                records.extend(self.client.query(soql))
        candidates: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            if record["Id"] in known_ids:
                continue
            key = _normalize(record.get(narrow), fields[narrow]) if narrow else None
            candidates[key].append(record)
        found: dict[int, str] = {}
        taken: set[str] = set()
        for i in range(rows.num_rows):
            key = _normalize(values[narrow][i], fields[narrow]) if narrow else None
            for record in candidates.get(key, []):
                if record["Id"] in taken:
                    continue
                if all(
                    values[c][i] is None
                    or _normalize(values[c][i], fields[c]) == _normalize(record.get(c), fields[c])
                    for c in columns
                ):
                    found[i] = record["Id"]
                    taken.add(record["Id"])  # identical rows get distinct records
                    break
        return found


def _chunks(values: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _normalize(value: Any, field: FieldDescribe | None, *, fold: bool = False) -> Any:
    """A value as Salesforce compares it, whichever side (the plan's canonical value or a
    SOQL answer) it comes from."""
    if value is None:
        return None
    kind = field.type if field is not None else "string"
    if kind in _NUMBER_TYPES:
        try:
            return round(float(value), 9)
        except (TypeError, ValueError):
            return value
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "date":
        return str(value)[:10]
    if kind == "datetime":
        text = str(value).replace("Z", "+00:00")
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]  # +0000 -> +00:00
        try:
            return dt.datetime.fromisoformat(text).astimezone(dt.UTC).replace(microsecond=0)
        except ValueError:
            return text
    if kind == "multipicklist":
        return tuple(sorted(str(value).split(";")))
    text = str(value)
    return text.lower() if fold else text


class LedgerPass:
    """One run's reconciliation of ledger entries: commits what Salesforce holds, holds
    what it cannot tell yet (never sent again by this run), explains the held rows."""

    def __init__(
        self,
        *,
        client: SalesforceClient,
        state: StateStore,
        ledger: LedgerTracker,
        settler: Settler,
        summary: SyncSummary,
        nulls: str,
        concurrency: int,
        grace_s: float,
        work_dir: Path,
    ) -> None:
        self.client = client
        self.state = state
        self.ledger = ledger
        self.settler = settler
        self.summary = summary
        self.nulls = nulls
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.work_dir = work_dir
        # Keys (as state keeps them: digests when the model's key is redacted, as in
        # the ledger) whose create may have landed.
        self.held: set[str] = set()
        self._held_rows: list[tuple[pa.Table, str]] = []  # (rows, why) for the reject file

    def run(self, entries: list[LedgerEntry], *, this_run: bool) -> bool:
        """Resolve `entries`. `this_run`: they are this run's own (their rows were counted
        as retried; they move to succeeded or failed as resolved). Returns whether state
        changed."""
        if not entries:
            return False
        log.warning(
            "%s: %d send(s) of %s left without a known outcome; asking Salesforce",
            self.state.model, len(entries), "this run" if this_run else "an earlier run",
        )  # fmt: skip
        known = self.state.load(["pk", "sf_id", "status"], work_dir=self.work_dir)
        synced = pc.equal(known.column("status"), "synced")
        synced_pks = pa.array(
            sorted(set(known.column("pk").filter(synced).to_pylist())), pa.string()
        )
        known_ids = {i for i in known.column("sf_id").to_pylist() if i}
        changed = False
        for entry in entries:
            changed |= self._resolve(entry, synced_pks, known_ids, this_run=this_run)
        return changed

    def _resolve(
        self, entry: LedgerEntry, synced_pks: pa.Array, known_ids: set[str], *, this_run: bool
    ) -> bool:
        rows = entry.rows
        entry_rows = np.arange(rows.num_rows)  # each row's position in the entry
        # Rows a later commit already confirmed need nothing (their Ids are in state). A
        # Bulk job is read whole (its results are matched to all its rows), and the
        # outcomes of such rows are dropped afterwards.
        if entry.info.bulk_job_id is None:
            unconfirmed = pc.invert(pc.is_in(rows.column("__pk"), value_set=synced_pks))
            rows = rows.filter(unconfirmed)
            entry_rows = entry_rows[np.asarray(unconfirmed, dtype=bool)]
        if rows.num_rows == 0:
            self.ledger.ledger.remove([entry.name])
            return False
        request = SendRequest(
            object=entry.info.object,
            operation="insert",
            transport="bulk" if entry.info.bulk_job_id else "composite",
            nulls=self.nulls,  # type: ignore[arg-type]
            concurrency=self.concurrency,
        )
        reconciler = LedgerReconciler(
            self.client, self.client.describe(entry.info.object), request, grace_s=self.grace_s
        )
        in_flight = InFlight()
        batch = rows.combine_chunks().to_batches()[0]
        keys = in_flight.keyed(0, batch)
        outcomes = reconciler.resolve(
            LedgerEntry(entry.name, entry.info, rows), keys.to_pylist(), known_ids
        )
        _, positions = InFlight.locate(outcomes)
        fresh = pc.invert(
            pc.is_in(batch.column("__pk").take(pa.array(positions)), value_set=synced_pks)
        )
        wanted = np.asarray(fresh, dtype=bool)
        open_rows = self.ledger.unknown_rows.get(entry.name) if this_run else None
        if open_rows is not None:
            # This run committed (and counted) the outcomes of the entry's other rows, a
            # refusal as well as a success: only the rows it could not tell are resolved.
            wanted &= np.isin(entry_rows[positions], np.fromiter(open_rows, np.int64))
        outcomes = outcomes.take(np.flatnonzero(wanted).tolist())
        if not this_run:
            # A row an earlier run's job refused is simply sent again by this run's plan,
            # which records the reason in this run's reject file.
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
        commits = self.settler.apply(outcomes, in_flight, count=False)
        if commits:
            self.state.commit(pa.concat_tables(commits))
            known_ids.update(i for i in outcomes.sf_ids if i)
        if unknown.any():
            _, positions = InFlight.locate(outcomes.take(np.flatnonzero(unknown).tolist()))
            held = batch.take(pa.array(positions))
            self.held.update(held.column("__pk").to_pylist())
            message = outcomes.messages[int(np.flatnonzero(unknown)[0])] or ""
            self._held_rows.append((pa.Table.from_batches([held]), message))
        else:
            kill_point("ledger_resolved")  # test hook: committed, entry not yet removed
            self.ledger.ledger.remove([entry.name])
        return bool(commits)

    def not_held(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`batch` without the rows held back."""
        if not self.held or batch.num_rows == 0:
            return batch
        held = pc.is_in(state_keys(batch), value_set=pa.array(sorted(self.held), pa.string()))
        return batch.filter(pc.invert(held))

    def explain(self, sink: RejectSink) -> None:
        """Rows held because Salesforce has not told whether their create landed: one line
        each in the reject file (OUTCOME_UNKNOWN), counted as unconfirmed."""
        seen: set[str] = set()
        for rows, message in self._held_rows:
            for batch in rows.to_batches():
                columns = field_columns(batch)
                for row, pk in enumerate(batch.column("__pk").to_pylist()):
                    if pk in seen:
                        continue
                    seen.add(pk)
                    sink.add(
                        primary_key=pk,
                        record=row_record(batch, row, columns),
                        error_code=OUTCOME_UNKNOWN,
                        message=message,
                        fields=[],
                        transport=self.summary.transport,
                    )
        self.summary.unconfirmed = len(seen)
