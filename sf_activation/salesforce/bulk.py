"""Bulk API 2.0 ingest: one job per ≤100 MB of CSV, every uploaded row matched to a result.

Streaming: batches are written to a job's spool (the CSV to upload plus an Arrow IPC copy
of the canonical rows with their keys) on disk; when the next slice would push the CSV
over `max_job_bytes`, that job is run and a new spool starts. Memory holds one slice.

Matching results to input rows. Salesforce returns successful, failed and unprocessed
rows in any order and echoes only the original CSV columns (an extra key column is not
allowed: an unknown header fails the job). Result columns are found by header
case-insensitively (Salesforce may spell a field `Name` where the upload said `name`).
Update, delete and upsert rows are identified by their record identity (the `Id` column,
or the External ID column of an upsert); insert rows, which have none before the result,
by all of their CSV cells, joined column by column. The CSV cells are computed by one
function (`csv_cells`) both when writing and when matching, so a faithful echo agrees
byte for byte: that is the first pass. Result rows it leaves over are matched to the
input rows it leaves over a second time, comparing cells as Salesforce compares values
(`normalise_cells`): NUL characters dropped (an org strips them), numbers by value
(`1.50` is `1.5`), Ids by their 15-character form, External IDs case-insensitively
unless the field is case sensitive. Rows with the same key form a group; results for the
group are handed out one per row, in order (the k-th result of a key to the k-th input
row with it), which is a bijection: identical rows get identical outcomes except for the
Ids, and any assignment of those Ids is consistent. Afterwards
successful + failed + unprocessed must equal the rows uploaded; any input row without a
result becomes a retryable outcome, never a silent loss. An insert row in no result file
(a job whose results do not add up, one that failed or was aborted midway, a file that
could not be read) may have been created all the same: it is held (`OUTCOME_UNKNOWN`),
never sent again blindly; the sync's ledger reads the job again later and, when the row is
still absent from its results, looks for the record in Salesforce (`reconcile.py`). Rows
the unprocessed file lists were not processed and are sent again.

Rows that failed for a transient reason (UNABLE_TO_LOCK_ROW, Timeout, …) are sent again:
through sObject Collections when few (a Bulk job costs at least 4 calls and minutes of
latency), in another Bulk job when many.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
from pydantic import BaseModel, ConfigDict, Field
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from sf_activation.salesforce.auth import SalesforceSession
from sf_activation.salesforce.bulk_matching import (  # noqa: F401 - re-exported
    BOOL,
    DECIMAL,
    FLOAT,
    ID,
    INT,
    TEXT,
    TEXT_CI,
    cell_rule,
    identity_rule,
    match_keys,
    match_results,
    match_rows,
    normalise_cells,
    result_column,
    row_rules,
)
from sf_activation.salesforce.composite import CHUNK_SIZE, CollectionsApi, send_chunk
from sf_activation.salesforce.describe import ObjectDescribe
from sf_activation.salesforce.errors import (
    ApiLimitError,
    SalesforceError,
    TransientError,
    is_retryable_record_error,
)
from sf_activation.salesforce.outcomes import (
    API_BUDGET_REACHED,
    BULK_JOB_FAILED,
    BULK_RESULT_MISSING,
    DUPLICATES_DETECTED,
    KEY_COLUMN,
    OUTCOME_UNKNOWN,
    Dispatch,
    Outcomes,
    RecordOutcome,
    RetryPolicy,
    StopSignal,
    WriteSwitches,
    explain_duplicates,
)
from sf_activation.salesforce.payload import PayloadLayout, blank_omitted
from sf_activation.salesforce.record_json import RecordEncoder
from sf_activation.testhooks import kill_point  # test hook: no-op unless set

log = logging.getLogger(__name__)

MAX_JOB_BYTES = 100 * 1024 * 1024  # 150 MB after base64 is the limit; stay well under
SLICE_ROWS = 10_000
NULL_CELL = "#N/A"
_TERMINAL = {"JobComplete", "Failed", "Aborted"}
# In the message of an insert row held because a finished job's results, all read, lack
# it (reconcile.py looks for such rows in Salesforce instead of reading the job again).
ABSENT_FROM_RESULTS = "in none of the job's result files"
_JSON = {"Content-Type": "application/json; charset=UTF-8"}


class BulkSettings(BaseModel):
    """Tuning of Bulk 2.0 jobs; defaults suit a real org."""

    model_config = ConfigDict(frozen=True)

    max_job_bytes: int = Field(default=MAX_JOB_BYTES, gt=0)
    # Rows per job: a job's outcomes are matched and reported together, so its row count,
    # not the table's, sets the client's peak memory. 150k rows cost a few more API calls
    # per million rows (about 6 per job) and keep a 1M-row sync well under 1 GB.
    max_job_rows: int = Field(default=150_000, gt=0)
    poll_initial: float = Field(default=1.0, gt=0)
    poll_max: float = Field(default=15.0, gt=0)
    poll_factor: float = Field(default=1.5, ge=1.0)
    job_timeout: float = Field(default=4 * 3600.0, gt=0)
    # Transient record failures up to this many go back through sObject Collections.
    composite_retry_limit: int = Field(default=2000, ge=0)
    work_dir: Path | None = None


class JobInfo(BaseModel):
    """`GET jobs/ingest/{id}` (only what the client reads)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    state: str
    numberRecordsProcessed: int = 0
    numberRecordsFailed: int = 0
    errorMessage: str | None = None


# -- CSV ---------------------------------------------------------------------------------


def csv_header(layout: PayloadLayout) -> list[str]:
    """Columns of the job's CSV: plain fields, lookups, then the reference fields that
    `nulls: clear` empties when a lookup is null (ParentId for Parent.External_Id__c)."""
    header = list(layout.fields) + [lk.csv_header for lk in layout.lookups]
    if any(layout.clears(lk.column) for lk in layout.lookups):
        present = {h.lower() for h in header}
        for lk in layout.lookups:
            if layout.clears(lk.column) and lk.reference_field.lower() not in present:
                header.append(lk.reference_field)
                present.add(lk.reference_field.lower())
    return header


def _cell_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type):
        return arr
    return pc.cast(arr, pa.string())


def _field_cells(layout: PayloadLayout, values: pa.Array, name: str | None = None) -> pa.Array:
    """CSV cells of a plain field column (a null is `#N/A` when the field's nulls clear —
    `nulls: clear` or its `on_null: clear` — else empty)."""
    return pc.fill_null(_cell_text(values), NULL_CELL if layout.clears(name) else "")


def csv_cells(layout: PayloadLayout, batch: pa.RecordBatch) -> list[pa.Array]:
    """String cells of each CSV column for `batch`, in `csv_header` order.

    A null is `#N/A` (set the field to null) with `nulls: clear` and an empty cell
    (leave the field alone) with `keep`; an empty lookup cell is always empty, and its
    reference column carries the `#N/A` instead.
    """
    cells = [_field_cells(layout, batch.column(name), name) for name in layout.fields]
    lookup_values = [batch.column(lk.column) for lk in layout.lookups]
    cells.extend(pc.fill_null(_cell_text(values), "") for values in lookup_values)
    header = csv_header(layout)
    extra = header[len(cells) :]
    by_reference = {
        lk.reference_field: values for lk, values in zip(layout.lookups, lookup_values, strict=True)
    }
    for reference_field in extra:
        values = by_reference[reference_field]
        cells.append(pc.if_else(pc.is_null(values), NULL_CELL, ""))
    # Fields a record leaves out (send_fields: changed, set_if_empty) are empty cells.
    return blank_omitted(layout, batch, header, cells)


def _csv_bytes(header: list[str], cells: list[pa.Array]) -> bytes:
    table = pa.Table.from_arrays(cells, names=[f"c{i}" for i in range(len(cells))])
    sink = pa.BufferOutputStream()
    # Arrow quotes every string cell and doubles embedded quotes: commas, quotes,
    # newlines and any unicode survive, and `#N/A` stays a literal.
    pcsv.write_csv(table, sink, pcsv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes()


def _header_line(header: list[str]) -> bytes:
    return (",".join(header) + "\n").encode()


# -- spooling ----------------------------------------------------------------------------


@dataclass
class JobSpool:
    """One job's input on disk: the CSV to upload and the canonical rows with keys."""

    layout: PayloadLayout
    csv_path: Path
    rows_path: Path
    rows: int
    attempt: int  # 1 for the first send of these rows

    def read_rows(self) -> pa.Table:
        with pa.memory_map(str(self.rows_path)) as source:
            return ipc.open_file(source).read_all()


class _SpoolWriter:
    def __init__(
        self, directory: Path, layout: PayloadLayout, schema: pa.Schema, attempt: int, seq: int
    ) -> None:
        self.layout = layout
        self.header = csv_header(layout)
        self.csv_path = directory / f"job-{seq:05d}.csv"
        self.rows_path = directory / f"job-{seq:05d}.arrow"
        self.csv = self.csv_path.open("wb")
        self.csv.write(_header_line(self.header))
        self.bytes = self.csv.tell()
        self.rows_sink = pa.OSFile(str(self.rows_path), "wb")
        self.rows_writer = ipc.new_file(self.rows_sink, schema)
        self.rows = 0
        self.attempt = attempt

    def write(self, batch: pa.RecordBatch, data: bytes) -> None:
        self.csv.write(data)
        self.bytes += len(data)
        self.rows_writer.write_batch(batch)
        self.rows += batch.num_rows

    def finish(self) -> JobSpool:
        self.csv.close()
        self.rows_writer.close()
        self.rows_sink.close()
        return JobSpool(self.layout, self.csv_path, self.rows_path, self.rows, self.attempt)


# -- the sender --------------------------------------------------------------------------


class BulkSender:
    """Runs canonical batches through Bulk 2.0 jobs and reports one outcome per row."""

    def __init__(
        self,
        session: SalesforceSession,
        layout_for: Callable[[pa.Schema], PayloadLayout],
        *,
        policy: RetryPolicy,
        settings: BulkSettings,
        concurrency: int,
        on_outcomes: Callable[[Outcomes], None],
        stop: StopSignal | None = None,
        on_dispatch: Dispatch | None = None,
        describe: ObjectDescribe | None = None,
        switches: WriteSwitches | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.session = session
        # progress("bulk:<state>", done, total) while a job is uploaded, processed and its
        # results read: a Bulk send reports before its first outcome, minutes later.
        self.progress = progress or (lambda phase, done, total: None)
        # assignmentRuleId / hardDelete on the job; the REST headers on Composite retries.
        self.switches = switches or WriteSwitches()
        # The object's describe, when known: whether the External ID is case sensitive
        # (else Salesforce's default, not) and which columns are Ids, for matching results.
        self.describe = describe
        self.layout_for = layout_for
        self.policy = policy
        self.settings = settings
        self.concurrency = concurrency
        self.on_outcomes = on_outcomes
        self.stop = stop or StopSignal()
        self.on_dispatch = on_dispatch
        self.job_ids: list[str] = []
        self._seq = 0
        self._retries: list[tuple[PayloadLayout, pa.Table, int]] = []
        # Rows holding the literal text `#N/A`: Bulk 2.0 reads that cell as "set to null"
        # and cannot escape it, so these rows go through sObject Collections instead.
        self._literal_na: list[tuple[PayloadLayout, pa.RecordBatch]] = []

    # public ------------------------------------------------------------------------

    def run(self, batches: Iterable[pa.RecordBatch]) -> None:
        directory = Path(tempfile.mkdtemp(prefix="sf_bulk_", dir=self.settings.work_dir))
        try:
            for spool in self._spool(directory, self._first_attempt(batches), attempt=1):
                self._run_job(spool)
            for layout, batch in self._literal_na:
                self._retry_through_composite(layout, pa.Table.from_batches([batch]), 1)
            # Rows that failed transiently, in rounds, until none are left or attempts run out.
            while self._retries:
                layout, rows, attempt = self._retries.pop(0)
                if rows.num_rows <= self.settings.composite_retry_limit:
                    self._retry_through_composite(layout, rows, attempt)
                else:
                    for spool in self._spool(
                        directory, ((layout, b) for b in rows.to_batches()), attempt
                    ):
                        self._run_job(spool)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    # spooling ------------------------------------------------------------------------

    def _first_attempt(
        self, batches: Iterable[pa.RecordBatch]
    ) -> Iterator[tuple[PayloadLayout, pa.RecordBatch]]:
        layout: PayloadLayout | None = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if layout is None:
                layout = self.layout_for(batch.schema)
            mask = layout.missing_identity(batch)
            if mask is not None:
                code, message = layout.missing_identity_message()
                keys = batch.filter(mask).column(KEY_COLUMN).to_pylist()
                self.on_outcomes(Outcomes.failed(keys, code, message, retryable=False, attempts=1))
                batch = batch.filter(pc.invert(mask))
            literal = _literal_na_mask(layout, batch)
            if literal is not None:
                self._literal_na.append((layout, batch.filter(literal)))
                batch = batch.filter(pc.invert(literal))
            yield layout, batch

    def _spool(
        self, directory: Path, batches: Iterable[tuple[PayloadLayout, pa.RecordBatch]], attempt: int
    ) -> Iterator[JobSpool]:
        """Jobs of at most `max_job_bytes` CSV each, written slice by slice."""
        writer: _SpoolWriter | None = None
        limit = self.settings.max_job_bytes
        for layout, batch in batches:
            if self.stop.is_set():
                self._report_not_sent(batch.column(KEY_COLUMN).to_pylist())
                continue
            for offset in range(0, batch.num_rows, SLICE_ROWS):
                for part, data in self._fitting_slices(
                    layout, batch.slice(offset, SLICE_ROWS), limit
                ):
                    if (
                        writer is not None
                        and writer.rows
                        and (
                            writer.bytes + len(data) > limit
                            or writer.rows + part.num_rows > self.settings.max_job_rows
                        )
                    ):
                        yield writer.finish()
                        writer = None
                    if self.stop.is_set():
                        self._report_not_sent(part.column(KEY_COLUMN).to_pylist())
                        continue
                    if writer is None:
                        self._seq += 1
                        writer = _SpoolWriter(directory, layout, part.schema, attempt, self._seq)
                    writer.write(part, data)
        if writer is not None and writer.rows:
            yield writer.finish()

    def _fitting_slices(
        self, layout: PayloadLayout, part: pa.RecordBatch, limit: int
    ) -> Iterator[tuple[pa.RecordBatch, bytes]]:
        data = _csv_bytes(csv_header(layout), csv_cells(layout, part))
        if len(data) + 1024 <= limit or part.num_rows == 1:
            yield part, data
            return
        half = part.num_rows // 2
        yield from self._fitting_slices(layout, part.slice(0, half), limit)
        yield from self._fitting_slices(layout, part.slice(half), limit)

    # one job -------------------------------------------------------------------------

    def _control(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A job-control call, retried on transient errors (tenacity: exponential + jitter)."""
        for attempt in Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=wait_random_exponential(
                multiplier=self.policy.base_delay, max=self.policy.max_delay
            ),
            reraise=True,
        ):
            with attempt:
                return fn(*args, **kwargs)
        return None  # pragma: no cover

    def _run_job(self, spool: JobSpool) -> None:
        try:
            # A job costs ~6 calls plus polls; start it only if the budget allows all of
            # them, and let a started job finish (its rows would otherwise be unaccounted).
            self.session.check_budget(calls=8)
        except ApiLimitError as exc:
            self.stop.set(str(exc))
        if self.stop.is_set():
            self._report_not_sent(spool.read_rows().column(KEY_COLUMN).to_pylist())
            return
        job_id: str | None = None
        try:
            self.progress("bulk:uploading", 0, spool.rows)
            job_id = self._open_and_upload(spool)
            self._close(job_id)
            self.progress("bulk:UploadComplete", 0, spool.rows)
            final = self._poll(job_id, spool.rows)
        except SalesforceError as exc:
            if isinstance(exc, ApiLimitError):
                self.stop.set(str(exc))
            if job_id is None:
                self._report_job_failed(spool, f"could not create the Bulk job: {exc}")
                return
            log.warning("bulk job %s could not be completed: %s", job_id, exc)
            final = self._job_info(job_id)
            if final is not None and final.state not in _TERMINAL:
                self._abort(job_id)  # stop it, then read what it did
                final = self._job_info(job_id)
            if final is None:
                # Salesforce cannot tell what became of the job: its rows may be applied.
                self._report_unknown(spool.layout, spool.read_rows(), job_id, str(exc))
                return
        self._reconcile(spool.layout, spool.read_rows(), spool.attempt, final)

    def _open_and_upload(self, spool: JobSpool) -> str:
        """Create a job and upload the spool's CSV; returns the job id.

        An upload whose answer is lost may or may not have arrived, and a job takes one
        upload only. Nothing is applied before the job is closed, so such a job is aborted
        and the rows go into a fresh job instead.
        """
        layout = spool.layout
        body: dict[str, Any] = {
            "object": layout.object,
            "operation": layout.operation,
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        if layout.operation == "upsert":
            body["externalIdFieldName"] = layout.identity
        body.update(job_switches(self.switches, layout.operation))
        for attempt in range(1, self.policy.max_attempts + 1):
            # A lost answer to the create leaves an Open job no one closes: it applies nothing.
            info = self._control(
                self.session.json, "POST", "jobs/ingest", json=body, check_budget=False
            )
            job_id = str(info["id"])
            self.job_ids.append(job_id)
            kill_point("bulk_job_open")  # test hook
            if self.on_dispatch is not None:
                # Recorded before the upload: from here on the job may apply these rows,
                # and a later run finds its outcome by the job id.
                self.on_dispatch(spool.read_rows().column(KEY_COLUMN).to_pylist(), job_id)
                kill_point("bulk_job_recorded")  # test hook
            log.info(
                "bulk job %s: %s %s, %d rows", job_id, layout.operation, layout.object, spool.rows
            )
            try:
                self._upload(job_id, spool.csv_path)
                return job_id
            except TransientError as exc:
                if attempt >= self.policy.max_attempts:
                    raise
                log.warning("bulk job %s: upload failed (%s); using a new job", job_id, exc)
                self._abort(job_id)
                time.sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _close(self, job_id: str) -> None:
        """Mark the upload complete. A close whose answer was lost may have been applied:
        the job's state says, before the close is sent again."""
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                self.session.json(
                    "PATCH",
                    f"jobs/ingest/{job_id}",
                    json={"state": "UploadComplete"},
                    check_budget=False,
                )
                return
            except TransientError as exc:
                if attempt >= self.policy.max_attempts:
                    raise
                time.sleep(self.policy.delay(attempt))
                info = self._job_info(job_id)
                if info is not None and info.state != "Open":
                    return
                log.info("bulk job %s: closing again after %s", job_id, exc)

    def resume(self, job_id: str, rows: pa.Table, attempt: int = 1) -> None:
        """Report the outcome of every row of a job an earlier run started (`rows`: the
        canonical rows it uploaded, with keys): waits for the job to finish and reads its
        results; a job still Open was never closed, so it is aborted and nothing applied."""
        layout = self.layout_for(rows.schema)
        info = JobInfo.model_validate(
            self._control(self.session.json, "GET", f"jobs/ingest/{job_id}", check_budget=False)
        )
        if info.state == "Open":
            self._abort(job_id)
            info = self._job_info(job_id) or JobInfo(id=job_id, state="Aborted")
        elif info.state not in _TERMINAL:
            info = self._poll(job_id)
        self._reconcile(layout, rows, attempt, info)

    def _upload(self, job_id: str, csv_path: Path) -> None:
        with csv_path.open("rb") as data:  # streamed from disk, never read whole
            self.session.request(
                "PUT",
                f"jobs/ingest/{job_id}/batches",
                data=data,
                headers={"Content-Type": "text/csv"},
                check_budget=False,
            )

    def _job_info(self, job_id: str) -> JobInfo | None:
        try:
            return JobInfo.model_validate(
                self._control(self.session.json, "GET", f"jobs/ingest/{job_id}", check_budget=False)
            )
        except SalesforceError:
            return None

    def _poll(self, job_id: str, rows: int = 0) -> JobInfo:
        delay = self.settings.poll_initial
        deadline = time.monotonic() + self.settings.job_timeout
        while True:
            self._sleep_unless_interrupted(delay)
            kill_point("bulk_job_polling")  # test hook
            if self.stop.kind == "interrupted":
                # Stop now: the job is aborted and what it had processed is read back.
                raise TransientError(f"bulk job {job_id}: {self.stop.reason}")
            info = JobInfo.model_validate(
                self._control(self.session.json, "GET", f"jobs/ingest/{job_id}", check_budget=False)
            )
            self.progress(f"bulk:{info.state}", info.numberRecordsProcessed, rows)
            if info.state in _TERMINAL:
                return info
            if time.monotonic() > deadline:
                raise TransientError(
                    f"bulk job {job_id} still {info.state} after {self.settings.job_timeout:.0f} s"
                )
            delay = min(self.settings.poll_max, delay * self.settings.poll_factor)

    def _sleep_unless_interrupted(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.stop.kind != "interrupted" and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def _abort(self, job_id: str) -> None:
        try:
            self.session.json(
                "PATCH", f"jobs/ingest/{job_id}", json={"state": "Aborted"}, check_budget=False
            )
        except SalesforceError as exc:  # already finished or failed: nothing to stop
            log.info("bulk job %s not aborted: %s", job_id, exc)

    # results -------------------------------------------------------------------------

    def _results(self, job_id: str, kind: str) -> pa.Table | None:
        """A result CSV as a table of strings (no cell becomes null), or None when empty.
        Its columns are named as the file's header spells them (see `result_column`)."""

        def fetch() -> Path:
            response = self.session.request(
                "GET", f"jobs/ingest/{job_id}/{kind}/", stream=True, check_budget=False
            )
            with (
                tempfile.NamedTemporaryFile(
                    suffix=".csv", dir=self.settings.work_dir, delete=False
                ) as handle,
                response,
            ):
                for chunk in response.iter_content(1 << 20):
                    handle.write(chunk)
            return Path(handle.name)

        path: Path = self._control(fetch)
        try:
            if path.stat().st_size == 0:
                return None
            names = _csv_file_header(path)
            if not names:
                return None
            return pcsv.read_csv(
                path,
                read_options=pcsv.ReadOptions(column_names=names, skip_rows=1),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    # Every column as text, whatever the header calls it: a type inferred
                    # from the values would re-render them (`007` → 7).
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                return None
            raise
        finally:
            path.unlink(missing_ok=True)

    def _match(
        self, layout: PayloadLayout, batch: pa.RecordBatch, parts: list[pa.Table], job_id: str
    ) -> np.ndarray:
        """The input row of each result row of `parts` (in order), -1 where none: by the
        record identity for update, delete and upsert, by the whole row for insert."""
        if not parts:
            return np.empty(0, dtype=np.int64)
        if layout.identity is not None:
            values = batch.column(layout.identity)
            names = [layout.identity]
            inputs = [_field_cells(layout, values)]
            rules = [identity_rule(layout, values.type, self.describe)]
        else:
            names = csv_header(layout)
            inputs = csv_cells(layout, batch)
            rules = row_rules(layout, batch.schema, self.describe, header=csv_header(layout))
        results: list[pa.Array] = []
        for name in names:
            columns: list[pa.Array] = []
            for table in parts:
                column = result_column(table, name)
                if column is None:
                    log.error(
                        "bulk job %s: a result file has no %s column; its rows match none",
                        job_id, name,
                    )  # fmt: skip
                    column = pa.nulls(table.num_rows, pa.string())
                columns.append(column)
            results.append(pa.concat_arrays(columns))
        return match_rows(inputs, results, rules)

    def _reconcile(
        self, layout: PayloadLayout, rows: pa.Table, attempt: int, info: JobInfo
    ) -> None:
        rows = rows.combine_chunks()
        n = rows.num_rows
        if n == 0:
            return
        self.progress("bulk:results", info.numberRecordsProcessed, n)
        batch = rows.to_batches()[0]
        keys = batch.column(KEY_COLUMN)
        unreadable: list[str] = []

        def read(kind: str) -> pa.Table | None:
            try:
                table = self._results(info.id, kind)
            except SalesforceError as exc:
                log.warning("bulk job %s: cannot read %s: %s", info.id, kind, exc)
                unreadable.append(f"{kind}: {exc}")
                return None
            return table if table is not None and table.num_rows else None

        success = read("successfulResults")
        failed = None
        if info.numberRecordsFailed or info.state != "JobComplete":
            failed = read("failedResults")
        answered = sum(t.num_rows for t in (success, failed) if t is not None)
        unprocessed = None
        if info.state != "JobComplete" or answered != n:  # else everything is accounted for
            unprocessed = read("unprocessedrecords")
        parts = [t for t in (success, failed, unprocessed) if t is not None]
        matched = self._match(layout, batch, parts, info.id)
        n_success = success.num_rows if success is not None else 0
        n_failed = failed.num_rows if failed is not None else 0
        settled = np.zeros(n, dtype=bool)
        outcomes: list[Outcomes] = []
        retry: list[int] = []

        if success is not None:
            rows_of = matched[:n_success]
            found = rows_of >= 0
            chosen = pa.array(found)
            success_ids = _text_column(success, "sf__Id")
            ids = pc.if_else(pc.equal(success_ids, ""), pa.scalar(None, pa.string()), success_ids)
            created = pc.equal(pc.utf8_lower(_text_column(success, "sf__Created")), "true")
            outcomes.append(
                Outcomes.succeeded(
                    keys.take(pa.array(rows_of[found])).to_pylist(),
                    ids.filter(chosen).to_pylist(),
                    created.filter(chosen).to_pylist(),
                    attempt,
                )
            )
            settled[rows_of[found]] = True
        if failed is not None:
            rows_of = matched[n_success : n_success + n_failed]
            ids = _text_column(failed, "sf__Id").to_pylist()
            errors = _text_column(failed, "sf__Error").to_pylist()
            refused = Outcomes.empty()
            for j in np.flatnonzero(rows_of >= 0).tolist():
                i = int(rows_of[j])
                code, message, fields = parse_bulk_error(errors[j])
                if code == DUPLICATES_DETECTED:
                    message = explain_duplicates(message)
                transient = is_retryable_record_error(code)
                settled[i] = True
                if transient and attempt < self.policy.max_attempts and not self.stop.is_set():
                    retry.append(i)
                    continue
                refused.append(
                    RecordOutcome(
                        keys[i].as_py(), False, ids[j] or None, None, code, message, fields,
                        transient, attempt,
                    )
                )  # fmt: skip
            outcomes.append(refused)
        n_unprocessed = int(np.count_nonzero(matched[n_success + n_failed :] >= 0))
        unmatched = int(np.count_nonzero(matched < 0))
        total = int(np.count_nonzero(matched >= 0))
        if total != n or unmatched:
            log.error(
                "bulk job %s: results do not add up: %d successful + %d failed + %d unprocessed "
                "= %d, uploaded %d (%d result rows matched no input); the rest are reported "
                "retryable (insert: held until found in Salesforce)",
                info.id, int(np.count_nonzero(matched[:n_success] >= 0)),
                int(np.count_nonzero(matched[n_success : n_success + n_failed] >= 0)),
                n_unprocessed, total, n, unmatched,
            )  # fmt: skip
        # Rows the unprocessed file lists were not processed: safe to send again.
        not_processed = np.zeros(n, dtype=bool)
        rows_of = matched[n_success + n_failed :]
        not_processed[rows_of[rows_of >= 0]] = True
        missing = np.flatnonzero(~settled)
        if len(missing) and layout.operation == "insert":
            # Rows in no result file at all, for a job that may have created them (its
            # results do not add up, a file could not be read, or it failed or was
            # aborted midway): sent again they could be created twice. Held; the sync's
            # ledger keeps the job id, reads its results again and, when they still lack
            # a row, looks for the record in Salesforce (reconcile.py).
            absent = missing[~not_processed[missing]]
            missing = missing[not_processed[missing]]
            if len(absent):
                why = (
                    "; ".join(unreadable)
                    if unreadable
                    else f"{ABSENT_FROM_RESULTS} (job {info.state}"
                    + (f": {info.errorMessage}" if info.errorMessage else "")
                    + ")"
                )
                self._report_unknown(
                    layout, rows.take(pa.array(absent)), info.id, why, emit=outcomes
                )
        if len(missing):
            # Unprocessed, or (update, upsert, delete: harmless to repeat) with no result
            # at all: not the rows' fault, sent again next run.
            job_note = f"bulk job {info.id} {info.state}" + (
                f": {info.errorMessage}" if info.errorMessage else ""
            )
            code = BULK_JOB_FAILED if info.state != "JobComplete" else BULK_RESULT_MISSING
            outcomes.append(
                Outcomes.failed(
                    keys.take(pa.array(missing)).to_pylist(),
                    code,
                    f"not processed ({job_note})",
                    retryable=True,
                    attempts=attempt,
                )
            )
        if retry:
            self._retries.append((layout, rows.take(sorted(retry)), attempt + 1))
        self.on_outcomes(Outcomes.concat(outcomes))

    # retries and stops ---------------------------------------------------------------

    def _retry_through_composite(self, layout: PayloadLayout, rows: pa.Table, attempt: int) -> None:
        if self.stop.is_set():
            self._report_not_sent(rows.column(KEY_COLUMN).to_pylist())
            return
        if self.switches.hard_delete and layout.operation == "delete":
            # sObject Collections can only soft-delete: hard deletes stay in Bulk jobs.
            directory = Path(tempfile.mkdtemp(prefix="sf_bulk_", dir=self.settings.work_dir))
            try:
                batches = ((layout, b) for b in rows.to_batches())
                for spool in self._spool(directory, batches, attempt):
                    self._run_job(spool)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            return
        api = CollectionsApi(self.session, layout, self.switches.rest_headers(layout.operation))
        batch = rows.combine_chunks().to_batches()[0]
        with RecordEncoder(layout) as encoder:
            records = encoder.encode(batch)
        keys = batch.column(KEY_COLUMN).to_pylist()
        time.sleep(self.policy.delay(attempt - 1))
        starts = range(0, len(records), CHUNK_SIZE)
        if self.on_dispatch is not None:
            for s in starts:
                self.on_dispatch(keys[s : s + CHUNK_SIZE], None)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sf-bulk-retry") as pool:
            futures = [
                pool.submit(
                    send_chunk,
                    api,
                    records[s : s + CHUNK_SIZE],
                    keys[s : s + CHUNK_SIZE],
                    self.policy,
                    self.stop,
                    attempt,
                )
                for s in starts
            ]
            for future in futures:
                self.on_outcomes(future.result())
        if self.stop.error is not None:
            raise self.stop.error

    def _report_unknown(
        self,
        layout: PayloadLayout,
        rows: pa.Table,
        job_id: str,
        why: str,
        *,
        emit: list[Outcomes] | None = None,
    ) -> None:
        """Rows of job `job_id` whose outcome Salesforce has not told (results unreadable,
        or read and lacking them). For insert they are held (the sync's ledger keeps the
        job id and reads it again); rows of idempotent operations are simply sent again
        next run."""
        keys = rows.column(KEY_COLUMN).to_pylist()
        if layout.operation == "insert":
            until = (
                "until Salesforce is asked whether it holds them"
                if ABSENT_FROM_RESULTS in why
                else "until the job's results can be read"
            )
            outcome = Outcomes.failed(
                keys, OUTCOME_UNKNOWN,
                f"bulk job {job_id}: outcome not known yet ({why}); held, not sent again, "
                f"{until}",
                retryable=True, attempts=1,
            )  # fmt: skip
        else:
            outcome = Outcomes.failed(
                keys, BULK_RESULT_MISSING, f"bulk job {job_id}: {why}", retryable=True, attempts=1
            )
        if emit is not None:
            emit.append(outcome)
        else:
            self.on_outcomes(outcome)

    def _report_not_sent(self, keys: list[Any]) -> None:
        self.on_outcomes(self.stop.not_sent(keys))

    def _report_job_failed(self, spool: JobSpool, message: str) -> None:
        keys = spool.read_rows().column(KEY_COLUMN).to_pylist()
        code = API_BUDGET_REACHED if self.stop.is_set() else BULK_JOB_FAILED
        self.on_outcomes(
            Outcomes.failed(keys, code, message, retryable=True, attempts=spool.attempt)
        )


def _csv_file_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line (quoted or not, a BOM ignored)."""
    with path.open("rb") as handle:
        first = handle.readline()
    line = first.decode("utf-8-sig").rstrip("\r\n")
    return next(csv.reader(io.StringIO(line)), [])


def _text_column(table: pa.Table, name: str) -> pa.Array:
    """A result column by name (any case), empty cells when the file has none."""
    column = result_column(table, name)
    if column is None:
        return pa.repeat(pa.scalar("", pa.string()), table.num_rows)
    return column


def _literal_na_mask(layout: PayloadLayout, batch: pa.RecordBatch) -> pa.Array | None:
    """Rows with a text cell that is exactly `#N/A` (a value, not a null), or None."""
    mask: pa.Array | None = None
    for name in (*layout.fields, *(lk.column for lk in layout.lookups)):
        column = batch.column(name)
        if not pa.types.is_string(column.type):
            continue
        hit = pc.fill_null(pc.equal(column, NULL_CELL), False)
        mask = hit if mask is None else pc.or_(mask, hit)
    if mask is None or not pc.any(mask).as_py():
        return None
    return mask


def job_switches(switches: WriteSwitches, operation: str) -> dict[str, Any]:
    """What a Bulk 2.0 ingest job's create body says of the switches. Bulk has no duplicate
    rule header (an alerting rule blocks, as with allowSave=false), and without
    `assignmentRuleId` runs no assignment rule, so `false` needs nothing."""
    body: dict[str, Any] = {}
    if operation == "delete" and switches.hard_delete:
        body["operation"] = "hardDelete"
    rule = switches.assignment_rule
    if operation != "delete" and isinstance(rule, str):
        body["assignmentRuleId"] = rule
    return body


def parse_bulk_error(text: str | None) -> tuple[str, str, list[str]]:
    """`STATUSCODE:message:field1,field2 --` → (code, message, fields)."""
    if not text:
        return "UNKNOWN_EXCEPTION", "", []
    code, _, rest = text.partition(":")
    rest = rest.strip()
    if not rest.endswith("--"):
        return code.strip(), rest, []
    message, sep, fields_text = rest[:-2].rstrip().rpartition(":")
    if not sep:
        return code.strip(), message or fields_text, []
    fields = [f.strip() for f in fields_text.split(",") if f.strip()]
    return code.strip(), message.strip(), fields
