"""Bulk API 2.0 ingest jobs under `/services/data/vXX.X/jobs/ingest`.

A job's life: create (Open) → one CSV upload → PATCH UploadComplete → a worker thread
takes it InProgress, writes the rows through `Org.apply` in internal batches of 10,000
(as Salesforce does), and ends JobComplete — or Failed when the job itself is unusable
(unknown header column, missing external id column, unreadable CSV). Record failures
still end in JobComplete; every uploaded row ends in exactly one of successfulResults,
failedResults or unprocessedrecords.

`bulk_seconds` (a fault the emulator passes in) keeps a job InProgress at least that
long, so clients' polling and abort paths get exercised. Two faults break the promise
above the way a real job's reports can: `missing_results` leaves a job's first N uploaded
rows out of every result file (what the job did with them stands: results that do not
add up), and `stop_after_rows` makes a job apply its first K rows only and end Failed,
the rest unprocessed. Both are read when the job starts processing.

Mount with `BulkIngest(org, settings).routes()` (or `bulk_routes`); auth, API counting
and request faults are the app's middleware's business, not this module's.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sf_activation.emulator import ids
from sf_activation.emulator.locks import apply_in_bulk
from sf_activation.emulator.org import OPERATIONS, Org
from sf_activation.emulator.responses import ApiError, json_response, read_json
from sf_activation.emulator.rules import job_options, write_options

CHUNK_ROWS = 10_000  # Salesforce's internal batch size for Bulk API 2.0 ingest
MAX_UPLOAD_BYTES = 150_000_000  # per job, after base64 on Salesforce's side
DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
LINE_ENDINGS = ("LF", "CRLF")
TERMINAL = ("JobComplete", "Failed", "Aborted")
NULL_MARKER = "#N/A"
_VERSION_RE = re.compile(r"^v(\d{2,3}\.\d)$")
_RESULT_KINDS = {
    "successfulresults": "successful",
    "failedresults": "failed",
    "unprocessedrecords": "unprocessed",
}


def csv_format(body: dict[str, Any]) -> tuple[str, str, str]:
    """A Bulk 2.0 job's (contentType, lineEnding, columnDelimiter), defaulted and checked as
    Salesforce does for ingest and query jobs alike (400 INVALIDJOB otherwise)."""
    content_type = body.get("contentType") or "CSV"
    line_ending = body.get("lineEnding") or "LF"
    delimiter = body.get("columnDelimiter") or "COMMA"
    if content_type != "CSV":
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : Unsupported content type: {content_type}")
    if line_ending not in LINE_ENDINGS:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid line ending: {line_ending}")
    if delimiter not in DELIMITERS:
        raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid column delimiter: {delimiter}")
    return content_type, line_ending, delimiter


@dataclass
class BulkSettings:
    """Knobs the app passes in; read on every job, so faults may change them live."""

    bulk_seconds: float = 0.0
    chunk_rows: int = CHUNK_ROWS
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    # Called with the number of internal batches a job used (DailyBulkApiBatches in /limits/).
    on_batches: Callable[[int], None] | None = None
    # Faults (ingest jobs only): the first N uploaded rows are in no result file; a job
    # with more than K rows applies the first K and ends Failed.
    missing_results: int = 0
    stop_after_rows: int | None = None


def _now() -> str:
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


@dataclass
class BulkJob:
    id: str
    object: str
    operation: str
    external_id_field: str | None
    content_type: str
    line_ending: str
    column_delimiter: str
    api_version: str
    created_by_id: str
    created_date: str = field(default_factory=_now)
    system_modstamp: str = field(default_factory=_now)
    state: str = "Open"
    error_message: str | None = None
    data: bytes | None = None
    header: list[str] = field(default_factory=list)
    successful: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    failed: list[tuple[str, str, list[str]]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    processed: int = 0
    failed_count: int = 0
    processing_ms: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    assignment_rule_id: str | None = None  # the job's assignmentRuleId (Lead, Case)
    # Uploaded rows before this index are in no result file (`missing_results`).
    hidden_before: int = 0

    def touch(self) -> None:
        self.system_modstamp = _now()

    def info(self, full: bool = True) -> dict[str, Any]:
        """Job info as POST/PATCH (full=False) or GET (full=True) answer it."""
        out: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by_id,
            "createdDate": self.created_date,
            "systemModstamp": self.system_modstamp,
            "state": self.state,
        }
        if self.external_id_field:
            out["externalIdFieldName"] = self.external_id_field
        if self.assignment_rule_id:
            out["assignmentRuleId"] = self.assignment_rule_id
        out.update(
            {
                "concurrencyMode": "Parallel",
                "contentType": self.content_type,
                "apiVersion": float(self.api_version),
                "contentUrl": f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches",
                "lineEnding": self.line_ending,
                "columnDelimiter": self.column_delimiter,
            }
        )
        if full:
            out.update(
                {
                    "jobType": "V2Ingest",
                    "numberRecordsProcessed": self.processed,
                    "numberRecordsFailed": self.failed_count,
                    "retries": 0,
                    "totalProcessingTime": self.processing_ms,
                    "apiActiveProcessingTime": self.processing_ms,
                    "apexProcessingTime": 0,
                }
            )
            if self.error_message:
                out["errorMessage"] = self.error_message
        return out


def _state_error(job: BulkJob, action: str) -> ApiError:
    return ApiError(
        409,
        "INVALIDJOBSTATE",
        f"Unable to {action} the job {job.id} because it is in the {job.state} state",
    )


def _format_error(errors: list[dict[str, Any]]) -> str:
    """`STATUSCODE:message:fields --`, Bulk's flattening of a record's errors."""
    parts = []
    for e in errors:
        fields = ",".join(e.get("fields") or ())
        tail = f"{fields} --" if fields else "--"
        parts.append(f"{e['statusCode']}:{e['message']}:{tail}")
    return " ".join(parts)


class BulkIngest:
    """The ingest jobs of one org, and the routes that serve them."""

    def __init__(self, org: Org, settings: BulkSettings | None = None) -> None:
        self.org = org
        self.settings = settings or BulkSettings()
        self._jobs: dict[str, BulkJob] = {}
        self._lock = threading.Lock()
        self._counter = 0

    # ---- job store ----------------------------------------------------------------

    def reset(self) -> None:
        """Forget every job (tests); running workers notice and stop."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
            self._jobs.clear()

    def jobs(self) -> list[BulkJob]:
        with self._lock:
            return list(self._jobs.values())

    def job(self, job_id: str) -> BulkJob:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                normalized = ids.normalize(job_id)
                job = self._jobs.get(normalized) if normalized else None
        if job is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def create(self, body: Any, api_version: str) -> BulkJob:
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        object_name = body.get("object")
        operation = body.get("operation")
        if not object_name or not isinstance(object_name, str):
            raise ApiError(400, "INVALIDJOB", "InvalidJob : Object is required")
        if operation not in OPERATIONS:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid job operation: {operation}")
        describe = self.org.describe(object_name)
        if describe is None:
            raise ApiError(
                400, "INVALIDJOB", f"InvalidJob : sObject type '{object_name}' is not supported."
            )
        content_type, line_ending, delimiter = csv_format(body)
        ext = body.get("externalIdFieldName")
        if operation == "upsert":
            if not ext:
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : External ID was blank for {describe['name']}. An External ID "
                    "must be specified for upsert.",
                )
            field_info = next(
                (f for f in describe["fields"] if f["name"].lower() == str(ext).lower()), None
            )
            if field_info is None or not (
                field_info.get("externalId")
                or field_info.get("idLookup")
                or field_info["type"] == "id"
            ):
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {ext} does not match an External ID, "
                    f"Salesforce Id, or indexed field for {describe['name']}",
                )
            ext = field_info["name"]
        else:
            ext = None
        with self._lock:
            self._counter += 1
            job = BulkJob(
                id=ids.make_id("750", self._counter),
                object=describe["name"],
                operation=operation,
                external_id_field=ext,
                content_type=content_type,
                line_ending=line_ending,
                column_delimiter=delimiter,
                api_version=api_version,
                created_by_id=getattr(self.org, "user_id", ids.make_id("005", 7)),
                assignment_rule_id=body.get("assignmentRuleId") or None,
            )
            self._jobs[job.id] = job
        return job

    def upload(self, job: BulkJob, data: bytes) -> None:
        with self._lock:
            if job.state != "Open":
                raise _state_error(job, "upload data to")
            if job.data is not None:
                raise ApiError(
                    409,
                    "BULK_API_ERROR",
                    f"Found multiple contents for job: <{job.id}>, please 'Close' / 'Abort' / "
                    "'Delete' the current Job then create a new Job and make sure you only do "
                    "'PUT' once on a given Job.",
                )
            job.data = data
            job.touch()

    def change_state(self, job: BulkJob, state: Any) -> None:
        with self._lock:
            if state == "UploadComplete":
                if job.state != "Open":
                    raise _state_error(job, "close")
                job.state = "UploadComplete"
                job.touch()
                worker = threading.Thread(
                    target=self._run, args=(job,), name=f"bulk-{job.id}", daemon=True
                )
            elif state == "Aborted":
                if job.state in TERMINAL:
                    raise _state_error(job, "abort")
                job.state = "Aborted"
                job.cancel.set()
                job.touch()
                return
            else:
                raise ApiError(
                    400, "INVALIDJOBSTATE", f"Invalid state transition requested: {state}"
                )
        worker.start()

    def delete(self, job: BulkJob) -> None:
        with self._lock:
            if job.state in ("Open", "InProgress"):
                raise _state_error(job, "delete")
            job.cancel.set()
            self._jobs.pop(job.id, None)

    # ---- processing -----------------------------------------------------------------

    def _fail(self, job: BulkJob, message: str) -> None:
        with self._lock:
            if job.state != "Aborted":
                job.state = "Failed"
                job.error_message = message
                job.touch()

    def _run(self, job: BulkJob) -> None:
        started = time.monotonic()
        try:
            self._process(job, started)
        except Exception as exc:  # a bug must not leave the job hanging InProgress
            self._fail(job, f"InternalServerError : {type(exc).__name__}: {exc}")
        finally:
            job.processing_ms = int((time.monotonic() - started) * 1000)

    def _process(self, job: BulkJob, started: float) -> None:
        # No request headers here: only the job's assignmentRuleId runs a rule (rules.py).
        write_options.set(job_options(job.assignment_rule_id))
        with self._lock:
            if job.state != "UploadComplete":
                return
            job.state = "InProgress"
            job.touch()
        parsed = self._parse(job)
        if parsed is None:
            return
        header, rows = parsed
        # The faults as they are when the job starts: a live change does not reach it.
        job.hidden_before = max(0, int(self.settings.missing_results))
        stop_after = self.settings.stop_after_rows
        stopped = stop_after is not None and len(rows) > stop_after
        if stopped:
            rows = rows[: int(stop_after or 0)]
        # Hold the job InProgress for bulk_seconds before writing anything, so an abort in
        # that window leaves every row unprocessed (and nothing written), as a queued job does.
        delay = self.settings.bulk_seconds
        if delay > 0 and job.cancel.wait(delay):
            return
        build = self._row_builder(job, header)
        chunk = max(1, self.settings.chunk_rows)
        batches = 0
        for start in range(0, len(rows), chunk):
            if job.cancel.is_set():
                return
            part = rows[start : start + chunk]
            records: list[dict[str, Any]] = []
            bad: dict[int, str] = {}
            for i, row in enumerate(part):
                if len(row) != len(header):
                    message = f"Row has {len(row)} columns but the header has {len(header)}"
                    bad[i] = _format_error([{"statusCode": "INVALID_FIELD", "message": message}])
                    records.append({})
                else:
                    records.append(build(row))
            good = [r for i, r in enumerate(records) if i not in bad]
            results = (
                # Parent row locks (locks.py) held for the chunk, lock failures retried.
                apply_in_bulk(
                    self.org,
                    lambda part_records: self.org.apply(
                        job.object,
                        job.operation,  # type: ignore[arg-type]
                        part_records,
                        external_id_field=job.external_id_field,
                        value_format="csv",
                    ),
                    good,
                    job.cancel,
                )
                if good
                else []
            )
            batches += 1
            results_iter = iter(results)
            # Result rows echo the upload as sent, not the values saved (NULs, which the
            # org strips from saved text, stay; numbers keep their digits as written):
            # the docs give "field data for the row that was provided in the original job
            # data upload request" (Get Job Successful / Failed Record Results).
            successful: list[tuple[str, bool, list[str]]] = []
            failed: list[tuple[str, str, list[str]]] = []
            n_failed = 0
            for i, row in enumerate(part):
                hidden = start + i < job.hidden_before
                if i in bad:
                    n_failed += 1
                    if not hidden:
                        failed.append(("", bad[i], row))
                    continue
                result = next(results_iter)
                if not result.get("success"):
                    n_failed += 1
                if hidden:
                    continue  # applied (or refused) all the same; reported nowhere
                if result.get("success"):
                    created = result.get("created", job.operation == "insert")
                    successful.append((result.get("id") or "", bool(created), row))
                else:
                    failed.append((result.get("id") or "", _format_error(result["errors"]), row))
            with self._lock:
                job.successful.extend(successful)
                job.failed.extend(failed)
                job.processed += len(part)
                job.failed_count += n_failed
                job.touch()
        if self.settings.on_batches is not None and batches:
            self.settings.on_batches(batches)
        if stopped:
            # The rows after the first K stay unprocessed (`_unprocessed`).
            self._fail(job, f"InternalServerError : the job stopped after {job.processed} rows")
            return
        remaining = self.settings.bulk_seconds - (time.monotonic() - started)
        if remaining > 0 and job.cancel.wait(remaining):
            return
        with self._lock:
            if job.state == "InProgress":
                job.state = "JobComplete"
                job.processing_ms = int((time.monotonic() - started) * 1000)
                job.touch()

    def _parse(self, job: BulkJob) -> tuple[list[str], list[list[str]]] | None:
        """Header and rows of the upload, or None after failing the job."""
        data = job.data
        if not data or not data.strip():
            # Nothing to load is not an error: the job completes with 0 records processed
            # (and empty result files), as a real org's job does.
            return [], []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._fail(
                job, f"InvalidBatch : Unable to parse CSV: invalid UTF-8 at byte {exc.start}"
            )
            return None
        try:
            reader = csv.reader(
                io.StringIO(text, newline=""),
                delimiter=DELIMITERS[job.column_delimiter],
                strict=True,
            )
            header = next(reader, None)
            rows = [row for row in reader if row]
        except csv.Error as exc:
            self._fail(job, f"InvalidBatch : Unable to parse CSV: {exc}")
            return None
        if not header:
            return [], []  # only blank lines: no records, as above
        job.header = header
        if header[0].startswith("\ufeff"):
            # Salesforce wants UTF-8 without a byte order mark; say so rather than
            # reporting a puzzling invisible character in the field name.
            self._fail(
                job,
                f"InvalidBatch : Field name not found : {header[0]} (the CSV starts with a UTF-8 "
                "byte order mark; upload it without one)",
            )
            job.unprocessed = rows
            return None
        problem = self._header_problem(job, header)
        if problem:
            self._fail(job, problem)
            job.unprocessed = rows
            return None
        return header, rows

    def _header_problem(self, job: BulkJob, header: list[str]) -> str | None:
        seen: set[str] = set()
        for name in header:
            if not name.strip():
                return "InvalidBatch : Field name not found : "
            if name.lower() in seen:
                return f"InvalidBatch : Duplicate field name: {name}"
            seen.add(name.lower())
        unknown = self.org.unknown_fields(job.object, header)
        if unknown:
            return f"InvalidBatch : Field name not found : {unknown[0]}"
        typed = self._typed_non_polymorphic(job, header)
        if typed:
            return f"InvalidBatch : type is not needed for non polymorphic foreign key references: {typed}"
        ext = job.external_id_field
        # Upsert on Id without an Id column inserts every row: the docs' way to force a
        # create is the Id "external id" left empty ("Upsert", Mobile SDK / REST: "set the
        # name of the external ID field to Id and the external ID to null").
        if job.operation == "upsert" and ext and ext.lower() not in seen and ext != "Id":
            return (
                f"InvalidBatch : The external ID field {job.external_id_field} is missing "
                "from the CSV header"
            )
        # A missing Id column on update/delete fails each record (MISSING_ARGUMENT), not the job.
        return None

    def _typed_non_polymorphic(self, job: BulkJob, header: list[str]) -> str | None:
        """The relationship of a `Type:Rel.Field` header whose field takes one object: a
        real org fails the job for it rather than ignore the type."""
        schema = self.org.schema(job.object)
        for name in header:
            head, dot, _ = name.partition(".")
            _, colon, rel = head.rpartition(":")
            ref = schema.relationships.get(rel.lower()) if dot and colon and schema else None
            if ref is not None and len(ref.reference_to) <= 1:
                return rel
        return None

    @staticmethod
    def _row_builder(job: BulkJob, header: list[str]) -> Callable[[list[str]], dict[str, Any]]:
        """A fast row → record function: `#N/A` is null, empty is omitted, `A.B` nests."""
        plain: list[tuple[int, str]] = []
        nested: list[tuple[int, str, str, dict[str, Any]]] = []
        for i, name in enumerate(header):
            if "." in name:
                rel, _, target = name.partition(".")
                # `Account:What.External_Id__c`: a polymorphic lookup names the parent's
                # object first; it becomes the JSON form's `attributes.type`.
                kind, colon, rel = rel.rpartition(":")
                opening = {"attributes": {"type": kind}} if colon else {}
                nested.append((i, rel, target, opening))
            else:
                plain.append((i, name))

        def build(row: list[str]) -> dict[str, Any]:
            record: dict[str, Any] = {}
            for i, name in plain:
                value = row[i]
                if value:
                    record[name] = None if value == NULL_MARKER else value
            for i, rel, target, opening in nested:
                value = row[i]
                if value:
                    record[rel] = {**opening, target: None if value == NULL_MARKER else value}
            return record

        return build

    # ---- results ----------------------------------------------------------------------

    def results_csv(self, job: BulkJob, kind: str) -> str:
        with self._lock:
            # Unprocessed rows may come straight from the upload, which also sets the header.
            unprocessed = self._unprocessed(job) if kind == "unprocessed" else []
            header = list(job.header)
            if kind == "successful":
                rows = [
                    [rid, "true" if created else "false", *row]
                    for rid, created, row in job.successful
                ]
                header = ["sf__Id", "sf__Created", *header]
            elif kind == "failed":
                rows = [[rid, error, *row] for rid, error, row in job.failed]
                header = ["sf__Id", "sf__Error", *header]
            else:
                rows = [list(r) for r in unprocessed]
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()

    def _unprocessed(self, job: BulkJob) -> list[list[str]]:
        """Rows not (yet) processed: the job's explicit list, or whatever the upload
        holds beyond the processed rows once the job can no longer process them."""
        if job.unprocessed:
            return job.unprocessed
        if job.state not in ("Aborted", "Failed") or job.data is None:
            return []
        try:
            reader = csv.reader(
                io.StringIO(job.data.decode("utf-8"), newline=""),
                delimiter=DELIMITERS[job.column_delimiter],
            )
            header = next(reader, None)
            if not job.header and header:
                job.header = header
            rows = [row for row in reader if row]
        except (csv.Error, UnicodeDecodeError):
            return []
        return rows[max(job.processed, job.hidden_before) :]

    # ---- HTTP -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(
                "/services/data/{version}/jobs/ingest{rest:path}",
                self._dispatch,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        ]

    async def _dispatch(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except ApiError as error:
            return error.response()

    async def _handle(self, request: Request) -> Response:
        match = _VERSION_RE.match(request.path_params["version"])
        if match is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        version = match.group(1)
        rest: str = request.path_params["rest"]
        if rest and not rest.startswith("/"):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts:
            if method == "POST":
                return json_response(self.create(await read_json(request), version).info(False))
            if method == "GET":
                return json_response(
                    {
                        "done": True,
                        "records": [j.info(False) | {"jobType": "V2Ingest"} for j in self.jobs()],
                        "nextRecordsUrl": None,
                    }
                )
            raise _method_not_allowed(method)
        job = self.job(parts[0])
        if len(parts) == 1:
            if method == "GET":
                return json_response(job.info(True))
            if method == "PATCH":
                body = await read_json(request)
                state = body.get("state") if isinstance(body, dict) else None
                self.change_state(job, state)
                return json_response(job.info(False))
            if method == "DELETE":
                self.delete(job)
                return Response(status_code=204)
            raise _method_not_allowed(method)
        if len(parts) == 2 and parts[1].lower() == "batches":
            if method != "PUT":
                raise _method_not_allowed(method)
            self.upload(job, await self._read_upload(request))
            return Response(status_code=201)
        kind = _RESULT_KINDS.get(parts[1].lower()) if len(parts) == 2 else None
        if kind is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        if method != "GET":
            raise _method_not_allowed(method)
        # Explicit charset: without one, clients (requests) decode text/* as Latin-1.
        return Response(self.results_csv(job, kind).encode("utf-8"), media_type="text/csv")

    async def _read_upload(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type", "text/csv").split(";")[0].strip()
        if content_type.lower() not in ("text/csv", "application/octet-stream", ""):
            raise ApiError(
                400,
                "INVALIDCONTENTTYPE",
                f"Content-Type header specified in HTTP request is not supported: {content_type}",
            )
        limit = self.settings.max_upload_bytes
        chunks: list[bytes] = []
        size = 0
        # Streamed, so chunked uploads without Content-Length work and oversize ones stop early.
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    400,
                    "BULK_API_ERROR",
                    f"Upload exceeds the maximum size of {limit} bytes for one job",
                )
            chunks.append(chunk)
        data = b"".join(chunks)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return data


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET, POST"
    )


def bulk_routes(org: Org, settings: BulkSettings | None = None) -> list[Route]:
    """Routes for an org's ingest jobs (use `BulkIngest` directly to keep a handle for reset)."""
    return BulkIngest(org, settings).routes()


__all__ = [
    "BulkIngest",
    "BulkJob",
    "BulkSettings",
    "bulk_routes",
]
