"""Bulk API 2.0 query jobs under `/services/data/vXX.X/jobs/query`, and the tabular
query both Bulk APIs share.

A job's life: create (UploadComplete: nothing to upload) → a worker thread takes it
InProgress, runs the SOQL through the emulator's engine (`soql.run_query`, the one the
REST `query` resource uses) and ends JobComplete, or Failed. Results are CSV pages:
`GET …/results?locator=…&maxRecords=…`, each page naming the next in the
`Sforce-Locator` header (the string `null` after the last) and its row count in
`Sforce-NumberOfRecords` ("Get Results for a Query Job", Bulk API 2.0 Developer Guide).

`tabulate` is the part Bulk API 1.0 query batches reuse (sf_activation/emulator/bulk_v1.py):
the query's columns in SELECT order, parent fields as `Account.Name`, with the SOQL that
Bulk queries refuse (COUNT() and other aggregates, OFFSET, parent-to-child sub-queries;
"Understanding Bulk API 2.0 Query": SOQL considerations) refused here too.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sf_activation.emulator import ids, soql
from sf_activation.emulator.bulk import DELIMITERS, BulkSettings, csv_format
from sf_activation.emulator.org import Org, UnknownObjectError
from sf_activation.emulator.responses import ApiError, json_response, read_json

# The page size when the client sends no maxRecords (Salesforce picks one "based on the
# service"; the docs give no number).
DEFAULT_PAGE_RECORDS = 50_000
TERMINAL = ("JobComplete", "Failed", "Aborted")
# Query job ids share the 750 prefix with ingest jobs (both are AsyncApiJob); a counter
# range of their own keeps them from colliding with the ingest jobs' ids.
_ID_BASE = 2_000_000_000
_LINE_TERMINATORS = {"LF": "\n", "CRLF": "\r\n"}
_NOT_FOUND = "The requested resource does not exist"


@dataclass(frozen=True)
class Column:
    """One result column: its header (`Name`, `Account.Name`), the record keys to walk
    to its value, and its Apex type (`Datetime`, `Date`, `Boolean`, …)."""

    header: str
    path: tuple[str, ...]
    apex_type: str | None


@dataclass
class Table:
    object_name: str
    columns: list[Column]
    records: list[dict[str, Any]]  # REST-shaped records (attributes, nested parents)


class BulkQueryError(Exception):
    """A query a Bulk API refuses; `code`/`message` in the REST API's words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def tabulate(org: Org, text: str, api_version: str, *, include_deleted: bool = False) -> Table:
    """Run a Bulk query: the rows, and the columns in SELECT order."""
    try:
        # soql's parse tree is private to it; Bulk needs to know what the SELECT list
        # holds (and OFFSET), which the REST answer does not say.
        parsed = soql._parse(text)
        for item in parsed.select:
            if isinstance(item, soql._Count):
                raise BulkQueryError(
                    "API_ERROR", "Aggregate Relationships not supported in Bulk Query"
                )
            if isinstance(item, soql._SubQuery):
                raise BulkQueryError(
                    "API_ERROR",
                    "Bulk API doesn't support parent-to-child relationship (nested) queries",
                )
        if parsed.offset:
            raise BulkQueryError("API_ERROR", "OFFSET clause is not supported in Bulk Query")
        metadata = soql.column_metadata(text, org)
        result = soql.run_query(text, org, api_version, include_deleted=include_deleted)
    except soql.SoqlError as error:
        raise BulkQueryError(error.error_code, error.message) from None
    except UnknownObjectError as error:
        raise BulkQueryError(
            "INVALID_TYPE", f"sObject type '{error.args[0]}' is not supported."
        ) from None
    known: dict[str, tuple[str, str | None]] = {}
    for column in metadata["columnMetadata"]:
        if column["joinColumns"]:
            for joined in column["joinColumns"]:
                known[joined["displayName"].lower()] = (joined["displayName"], joined["apexType"])
        else:
            known[column["columnName"].lower()] = (column["columnName"], column["apexType"])
    columns: list[Column] = []
    seen: set[str] = set()
    for item in parsed.select:
        spelled = ".".join(item.path)
        header, apex_type = known.get(spelled.lower(), (spelled, None))
        if header.lower() in seen:
            continue  # SOQL refuses duplicates; belt and braces
        seen.add(header.lower())
        columns.append(Column(header, tuple(header.split(".")), apex_type))
    return Table(metadata["entityName"], columns, result.records)


def cell(record: dict[str, Any], column: Column) -> Any:
    """The column's value in a REST-shaped record (None along a missing parent)."""
    value: Any = record
    for key in column.path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def csv_value(value: Any, apex_type: str | None) -> str:
    """A value as Bulk CSV writes it: empty for null, `true`/`false`, `…Z` datetimes."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if apex_type == "Datetime" and isinstance(value, str) and value.endswith("+0000"):
        # The REST API writes `…000+0000`; Bulk query CSV writes `…000Z`.
        return value[: -len("+0000")] + "Z"
    return str(value)


def csv_text(
    columns: list[Column],
    records: list[dict[str, Any]],
    *,
    delimiter: str = ",",
    line_ending: str = "\n",
    header: bool = True,
) -> str:
    """Records as Bulk query CSV: every value quoted, as Salesforce writes them."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_ALL, lineterminator=line_ending)
    if header:
        writer.writerow([c.header for c in columns])
    for record in records:
        writer.writerow([csv_value(cell(record, c), c.apex_type) for c in columns])
    return out.getvalue()


def _locator(offset: int) -> str:
    # "a pseudo-random string (like MTAwMDA)": that one is base64 of "10000".
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str) -> int | None:
    try:
        padded = locator + "=" * (-len(locator) % 4)
        text = base64.b64decode(padded.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() else None


def _now() -> str:
    moment = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    return f"{stamp}.{int(moment * 1000) % 1000:03d}+0000"


@dataclass
class QueryJob:
    id: str
    operation: str
    object: str
    query: str
    api_version: str
    created_by_id: str
    line_ending: str
    column_delimiter: str
    created_date: str = field(default_factory=_now)
    system_modstamp: str = field(default_factory=_now)
    state: str = "UploadComplete"
    error_message: str | None = None
    table: Table | None = None  # set once JobComplete
    pending: Table | None = None  # the rows, until the job completes
    processing_ms: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)

    def info(self, full: bool = True) -> dict[str, Any]:
        """Job info as create (full=False) or GET (full=True) answer it."""
        out: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by_id,
            "createdDate": self.created_date,
            "systemModstamp": self.system_modstamp,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
        }
        if full:
            out["jobType"] = "V2Query"
        out["lineEnding"] = self.line_ending
        out["columnDelimiter"] = self.column_delimiter
        if full:
            out.update(
                {
                    "numberRecordsProcessed": len(self.table.records) if self.table else 0,
                    "retries": 0,
                    "totalProcessingTime": self.processing_ms,
                    "isPkChunkingSupported": True,
                }
            )
            if self.error_message:
                out["errorMessage"] = self.error_message
        return out


class BulkQueryJobs:
    """The Bulk API 2.0 query jobs of one org, and the routes that serve them."""

    def __init__(self, org: Org, settings: BulkSettings | None = None) -> None:
        self.org = org
        # Shared with the ingest jobs: `bulk_seconds` (a fault) holds these InProgress too.
        self.settings = settings or BulkSettings()
        self.page_records = DEFAULT_PAGE_RECORDS
        self._jobs: dict[str, QueryJob] = {}
        self._lock = threading.Lock()
        self._counter = _ID_BASE

    def reset(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
            self._jobs.clear()

    def job(self, job_id: str) -> QueryJob:
        with self._lock:
            job = self._jobs.get(job_id) or self._jobs.get(ids.normalize(job_id) or "")
        if job is None:
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        return job

    def create(self, body: Any, api_version: str) -> QueryJob:
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        operation = body.get("operation")
        text = body.get("query")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid job operation: {operation}")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "INVALIDJOB", "InvalidJob : The query is required")
        content_type, line_ending, delimiter = csv_format(body)
        # The query runs when the job is created: a query the org cannot run is a 400 on
        # the POST, as on a real org, and the rows are those of that moment. The worker
        # only walks the job through InProgress (for `bulk_seconds`, when set).
        try:
            table = tabulate(self.org, text, api_version, include_deleted=operation == "queryAll")
        except BulkQueryError as error:
            raise ApiError(400, error.code, error.message) from None
        with self._lock:
            self._counter += 1
            job = QueryJob(
                id=ids.make_id("750", self._counter),
                operation=operation,
                object=table.object_name,
                query=text,
                api_version=api_version,
                created_by_id=self.org.user_id,
                line_ending=line_ending,
                column_delimiter=delimiter,
            )
            job.pending = table
            self._jobs[job.id] = job
        return job

    def start(self, job: QueryJob) -> None:
        """Hand a created job to its worker (after the create answer is taken)."""
        threading.Thread(target=self._run, args=(job,), name=f"query-{job.id}", daemon=True).start()

    def _run(self, job: QueryJob) -> None:
        started = time.monotonic()
        with self._lock:
            if job.state != "UploadComplete":
                return
            job.state = "InProgress"
            job.system_modstamp = _now()
        delay = self.settings.bulk_seconds
        if delay > 0 and job.cancel.wait(delay):
            return
        with self._lock:
            if job.state != "InProgress":
                return
            job.processing_ms = int((time.monotonic() - started) * 1000)
            job.system_modstamp = _now()
            job.table, job.pending = job.pending, None
            job.state = "JobComplete"

    def change_state(self, job: QueryJob, state: Any) -> None:
        with self._lock:
            if state != "Aborted":
                raise ApiError(
                    400, "INVALIDJOBSTATE", f"Invalid state transition requested: {state}"
                )
            if job.state in TERMINAL:
                raise ApiError(
                    409,
                    "INVALIDJOBSTATE",
                    f"Unable to abort the job {job.id} because it is in the {job.state} state",
                )
            job.state = "Aborted"
            job.cancel.set()
            job.system_modstamp = _now()

    def delete(self, job: QueryJob) -> None:
        with self._lock:
            if job.state not in TERMINAL:
                raise ApiError(
                    409,
                    "INVALIDJOBSTATE",
                    f"Unable to delete the job {job.id} because it is in the {job.state} state",
                )
            job.cancel.set()
            self._jobs.pop(job.id, None)

    def results(self, job: QueryJob, request: Request, version: str) -> Response:
        if version != job.api_version:
            # "Use the same API version to get query results that you used to create the
            # query. Otherwise, the call returns a 409 error."
            raise ApiError(
                409,
                "API_ERROR",
                f"The job was created in API version {job.api_version}; get its results "
                "with the same version",
            )
        if job.state != "JobComplete" or job.table is None:
            # The documented answer to results asked for too early (Bulk API 2.0 guide,
            # "Get Results for a Query Job", response for an unsuccessful request).
            raise ApiError(
                412,
                "JOB_NOT_COMPLETE",
                "can only download query results of successfully completed bulk job with "
                f"status: JOB_COMPLETE. Current status: {_upper_state(job.state)}",
            )
        start = 0
        locator = request.query_params.get("locator")
        if locator and locator != "null":
            offset = _offset(locator)
            if offset is None:
                raise ApiError(400, "INVALID_LOCATOR", f"Invalid locator: {locator}")
            start = offset
        size = self.page_records
        raw_max = request.query_params.get("maxRecords")
        if raw_max is not None:
            if not raw_max.isdigit() or int(raw_max) <= 0:
                raise ApiError(
                    400, "INVALIDQUERYPARAMETER", f"maxRecords must be a positive number: {raw_max}"
                )
            size = int(raw_max)
        table = job.table
        page = table.records[start : start + size]
        end = start + len(page)
        text = csv_text(
            table.columns,
            page,
            delimiter=DELIMITERS[job.column_delimiter],
            line_ending=_LINE_TERMINATORS[job.line_ending],
        )
        return Response(
            text.encode("utf-8"),
            media_type="text/csv",
            headers={
                "Sforce-Locator": _locator(end) if end < len(table.records) else "null",
                "Sforce-NumberOfRecords": str(len(page)),
            },
        )

    # ---- HTTP -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(
                "/services/data/{version}/jobs/query{rest:path}",
                self._dispatch,
                methods=["GET", "POST", "PATCH", "DELETE"],
            )
        ]

    async def _dispatch(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except ApiError as error:
            return error.response()

    async def _handle(self, request: Request) -> Response:
        raw_version: str = request.path_params["version"]
        if not raw_version.startswith("v"):
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        version = raw_version[1:]
        rest: str = request.path_params["rest"]
        if rest and not rest.startswith("/"):
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts:
            if method == "POST":
                job = self.create(await read_json(request), version)
                answer = job.info(False)  # as created: UploadComplete
                self.start(job)
                return json_response(answer)
            if method == "GET":
                with self._lock:
                    jobs = list(self._jobs.values())
                return json_response(
                    {
                        "done": True,
                        "records": [j.info(False) | {"jobType": "V2Query"} for j in jobs],
                        "nextRecordsUrl": None,
                    }
                )
            raise _method_not_allowed(method, "GET, POST")
        job = self.job(parts[0])
        if len(parts) == 1:
            if method == "GET":
                return json_response(job.info(True))
            if method == "PATCH":
                body = await read_json(request)
                self.change_state(job, body.get("state") if isinstance(body, dict) else None)
                return json_response(job.info(False))
            if method == "DELETE":
                self.delete(job)
                return Response(status_code=204)
            raise _method_not_allowed(method, "GET, PATCH, DELETE")
        if len(parts) == 2 and parts[1] == "results":
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return self.results(job, request, version)
        raise ApiError(404, "NOT_FOUND", _NOT_FOUND)


def _upper_state(state: str) -> str:
    """`InProgress` → `IN_PROGRESS`, as the error message spells states."""
    out = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(state))
    return out.upper()


def _method_not_allowed(method: str, allowed: str) -> ApiError:
    return ApiError(
        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}"
    )


__all__ = ["BulkQueryError", "BulkQueryJobs", "Column", "Table", "csv_text", "tabulate"]
