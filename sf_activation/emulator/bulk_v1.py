"""Bulk API 1.0 ("the asynchronous API") under `/services/async/{version}/job…`.

Jobs and batches as the Bulk API Developer Guide describes them and the recorded real-org
exchanges in shared/data/real-org show them (CumulusCI's cassettes):

- `POST /job` creates a job from a `<jobInfo>` (application/xml) or a JSON object
  (application/json): operation insert, update, upsert (externalIdFieldName), delete,
  hardDelete, query or queryAll; contentType CSV, XML or JSON; concurrencyMode Parallel
  or Serial (simple-salesforce sends 0 / 1). `Sforce-Enable-PKChunking` is read on
  query jobs.
- `GET|POST /job/{id}`: job info, or close / abort (`<state>Closed</state>`).
- `POST /job/{id}/batch` adds a batch (CSV, XML or JSON records; SOQL text for query
  jobs); `GET /job/{id}/batch` lists them; `GET …/batch/{b}` is one batch's info;
  `GET …/batch/{b}/request` gives back what was sent; `GET …/batch/{b}/result` gives
  per-record results (Id, Success, Created, Error) — or, for a query batch, the result
  ids, each fetched with `GET …/result/{r}`.

Records go through `Org.apply` and queries through the emulator's SOQL engine (the
shared `bulk_query.tabulate`), so a record written here is the record REST and Bulk 2.0
see. Answers are in the job's format: JSON for a JSON job, XML otherwise (a CSV job's
job and batch infos are XML, its results CSV), and errors are Bulk's own
`<error><exceptionCode>…</exceptionCode><exceptionMessage>…</exceptionMessage></error>`
with HTTP 400 — which is how jsforce recognises an expired session
(`statusCode === 400` and `<exceptionCode>InvalidSessionId</exceptionCode>`).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sf_activation.emulator import ids
from sf_activation.emulator.bulk import BulkIngest, BulkSettings, _format_error
from sf_activation.emulator.bulk_query import (
    BulkQueryError,
    Column,
    Table,
    cell,
    csv_text,
    tabulate,
)
from sf_activation.emulator.org import Org
from sf_activation.emulator.responses import JSONDecodeError, dumps, loads

NS = "http://www.force.com/2009/06/asyncapi/dataload"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete", "query", "queryAll")
CONTENT_TYPES = ("CSV", "XML", "JSON")
# Bulk API 1.0 batch limits ("Bulk API and Bulk API 2.0 Limits and Allocations").
MAX_BATCH_RECORDS = 10_000
MAX_BATCH_BYTES = 10_000_000
# PK chunking: 100,000 by default, at most 250,000 ("Use PK Chunking…").
PK_CHUNK_DEFAULT = 100_000
PK_CHUNK_MAX = 250_000
# Ids of their own: 750/751/752 prefixes as on a real org, and a counter range that
# keeps Bulk 1.0 job ids apart from Bulk 2.0's (same 750 prefix, AsyncApiJob).
_ID_BASE = 1_000_000_000
_VERSION_RE = re.compile(r"^\d{2,3}\.\d$")
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'
_MEDIA = {"CSV": "text/csv", "XML": "application/xml", "JSON": "application/json"}
_TRUE = {"true", "1"}


class BulkV1Error(Exception):
    """An error answered in Bulk 1.0's shape (400 unless said otherwise)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def response(self, fmt: str) -> Response:
        return error_response(self.code, self.message, fmt, self.status)


def error_response(code: str, message: str, fmt: str = "XML", status: int = 400) -> Response:
    if fmt == "JSON":
        return _json({"exceptionCode": code, "exceptionMessage": message}, status)
    body = (
        f'{_XML_HEAD}<error\n   xmlns="{NS}">\n <exceptionCode>{escape(code)}</exceptionCode>\n'
        f" <exceptionMessage>{escape(message)}</exceptionMessage>\n</error>"
    )
    return _xml(body, status)


async def session_error(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a Bulk 1.0 request without a valid session (EmulatorApp sends it)."""
    content_type = b""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value.lower()
    fmt = "JSON" if b"json" in content_type else "XML"
    await error_response("InvalidSessionId", "Invalid session id", fmt)(scope, receive, send)


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json")


def _xml(body: str, status: int = 200) -> Response:
    return Response(body.encode("utf-8"), status_code=status, media_type="application/xml")


def _iso(moment: float, fmt: str) -> str:
    """XML infos write `…000Z`, JSON ones `…000+0000` (both as recorded from real orgs)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    millis = f"{int(moment * 1000) % 1000:03d}"
    return f"{stamp}.{millis}{'+0000' if fmt == 'JSON' else 'Z'}"


def _xml_element(tag: str, value: Any) -> str:
    if value is None:
        return f'<{tag} xsi:nil="true"/>'
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _xml_doc(root: str, items: list[tuple[str, Any]], extra_ns: bool = False) -> str:
    ns = f'\n   xmlns="{NS}"' + (f' xmlns:xsi="{XSI}"' if extra_ns else "")
    inner = "".join(f"\n {_xml_element(k, v)}" for k, v in items)
    return f"{_XML_HEAD}<{root}{ns}>{inner}\n</{root}>"


# ---- jobs and batches ---------------------------------------------------------------


@dataclass
class V1Batch:
    id: str
    job_id: str
    data: bytes
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    state: str = "Queued"  # Queued, InProgress, Completed, Failed, NotProcessed
    state_message: str | None = None
    processed: int = 0
    failed: int = 0
    processing_ms: int = 0
    # Ingest: one (id, success, created, errors) per record, in the batch's order.
    results: list[tuple[str | None, bool, bool, list[dict[str, Any]]]] = field(default_factory=list)
    # Query: result id -> the rows of that result set.
    result_sets: dict[str, Table] = field(default_factory=dict)

    def info_items(self, fmt: str) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = [
            ("id", self.id),
            ("jobId", self.job_id),
            ("state", self.state),
        ]
        if self.state_message or fmt == "JSON":
            items.append(("stateMessage", self.state_message))
        items += [
            ("createdDate", _iso(self.created, fmt)),
            ("systemModstamp", _iso(self.modified, fmt)),
            ("numberRecordsProcessed", self.processed),
            ("numberRecordsFailed", self.failed),
            ("totalProcessingTime", self.processing_ms),
            ("apiActiveProcessingTime", self.processing_ms),
            ("apexProcessingTime", 0),
        ]
        return items

    def info(self, fmt: str) -> dict[str, Any]:
        # Real orgs write JSON infos with their keys in alphabetical order.
        return dict(sorted(self.info_items(fmt)))


@dataclass
class V1Job:
    id: str
    operation: str
    object: str
    content_type: str
    concurrency_mode: str
    api_version: str
    created_by_id: str
    external_id_field: str | None = None
    assignment_rule_id: str | None = None
    pk_chunk_size: int | None = None  # PK chunking asked for (query jobs only)
    state: str = "Open"  # Open, Closed, Aborted, Failed
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    batches: list[V1Batch] = field(default_factory=list)
    # Serial jobs process one batch at a time, in order.
    serial_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_query(self) -> bool:
        return self.operation in ("query", "queryAll")

    def info_items(self, fmt: str) -> list[tuple[str, Any]]:
        states = [b.state for b in self.batches]
        items: list[tuple[str, Any]] = [
            ("id", self.id),
            ("operation", self.operation),
            ("object", self.object),
            ("createdById", self.created_by_id),
            ("createdDate", _iso(self.created, fmt)),
            ("systemModstamp", _iso(self.modified, fmt)),
            ("state", self.state),
        ]
        if self.external_id_field or fmt == "JSON":
            items.append(("externalIdFieldName", self.external_id_field))
        if self.assignment_rule_id or fmt == "JSON":
            items.append(("assignmentRuleId", self.assignment_rule_id))
        processing = sum(b.processing_ms for b in self.batches)
        items += [
            ("concurrencyMode", self.concurrency_mode),
            ("contentType", self.content_type),
            ("numberBatchesQueued", states.count("Queued")),
            ("numberBatchesInProgress", states.count("InProgress")),
            ("numberBatchesCompleted", states.count("Completed")),
            ("numberBatchesFailed", states.count("Failed")),
            ("numberBatchesTotal", len(states)),
            ("numberRecordsProcessed", sum(b.processed for b in self.batches)),
            ("numberRetries", 0),
            ("apiVersion", float(self.api_version) if fmt == "JSON" else self.api_version),
            ("numberRecordsFailed", sum(b.failed for b in self.batches)),
            ("totalProcessingTime", processing),
            ("apiActiveProcessingTime", processing),
            ("apexProcessingTime", 0),
        ]
        return items

    def info(self, fmt: str) -> dict[str, Any]:
        return dict(sorted(self.info_items(fmt)))


def _reply(fmt: str, root: str, items: list[tuple[str, Any]], status: int = 200) -> Response:
    if fmt == "JSON":
        return _json(dict(sorted(items)), status)
    return _xml(_xml_doc(root, items), status)


# ---- request bodies -------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes) -> ET.Element:
    try:
        # Leading white space before the declaration is an XML error; some clients
        # build the body from an indented template.
        return ET.fromstring(data.lstrip())
    except ET.ParseError as exc:
        raise BulkV1Error("InvalidXML", f"Unable to parse XML: {exc}") from None


def _job_fields(data: bytes, fmt: str) -> dict[str, Any]:
    """The jobInfo's fields from an XML or JSON body."""
    if fmt == "JSON":
        try:
            body = loads(data)
        except (JSONDecodeError, ValueError, UnicodeDecodeError):
            raise BulkV1Error("InvalidJob", "Unable to parse the JSON jobInfo") from None
        if not isinstance(body, dict):
            raise BulkV1Error("InvalidJob", "The jobInfo must be a JSON object")
        return body
    root = _parse_xml(data)
    if _local(root.tag) != "jobInfo":
        raise BulkV1Error("InvalidXML", f"Expected a jobInfo element, found {_local(root.tag)}")
    return {_local(child.tag): (child.text or "").strip() for child in root}


def _format_of(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if "json" in content_type:
        return "JSON"
    if content_type in ("application/xml", "text/xml"):
        return "XML"
    if content_type == "text/csv":
        return "CSV"
    return None


def _pk_chunk_size(header: str | None) -> int | None:
    """`Sforce-Enable-PKChunking`: TRUE / FALSE, or `chunkSize=N; parent=…; startRow=…`."""
    if header is None:
        return None
    text = header.strip()
    if text.lower() == "false":
        return None
    if text.lower() == "true" or not text:
        return PK_CHUNK_DEFAULT
    size = PK_CHUNK_DEFAULT
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == "chunksize":
            value = value.strip()
            if not value.isdigit() or not 0 < int(value) <= PK_CHUNK_MAX:
                raise BulkV1Error(
                    "InvalidJob",
                    f"Invalid chunkSize: {value}; it must be between 1 and {PK_CHUNK_MAX:,}",
                )
            size = int(value)
    return size


def _xml_record(element: ET.Element) -> dict[str, Any]:
    """One `<sObject>`: plain fields as text, `xsi:nil` as null, nested elements (a
    relationship, `<Account><sObject><Ext__c>…` or `<Account><Ext__c>…`) as dicts."""
    record: dict[str, Any] = {}
    for child in element:
        name = _local(child.tag)
        if child.get(f"{{{XSI}}}nil") == "true":
            record[name] = None
        elif len(child):
            inner = child[0] if _local(child[0].tag) == "sObject" else child
            record[name] = _xml_record(inner)
        else:
            record[name] = child.text or ""
    return record


class BulkV1:
    """The Bulk API 1.0 jobs of one org, and the route that serves them."""

    def __init__(self, org: Org, settings: BulkSettings | None = None) -> None:
        self.org = org
        # Shared with Bulk 2.0: `bulk_seconds` (a fault) holds batches Queued that long,
        # and `on_batches` counts them in DailyBulkApiBatches.
        self.settings = settings or BulkSettings()
        self._jobs: dict[str, V1Job] = {}
        self._lock = threading.Lock()
        self._counter = _ID_BASE

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return ids.make_id(prefix, self._counter)

    # ---- jobs -----------------------------------------------------------------------

    def job(self, job_id: str) -> V1Job:
        with self._lock:
            job = self._jobs.get(job_id) or self._jobs.get(ids.normalize(job_id) or "")
        if job is None:
            raise BulkV1Error("InvalidJob", f"Invalid job id: {job_id}")
        return job

    def create_job(self, fields: dict[str, Any], version: str, pk_header: str | None) -> V1Job:
        operation = fields.get("operation")
        if isinstance(operation, str) and operation.lower() in ("harddelete", "queryall"):
            operation = "hardDelete" if operation.lower() == "harddelete" else "queryAll"
        if operation not in OPERATIONS:
            raise BulkV1Error("InvalidJob", f"Invalid operation: {operation}")
        object_name = fields.get("object")
        schema = self.org.schema(object_name) if isinstance(object_name, str) else None
        if schema is None:
            raise BulkV1Error("InvalidJob", f"Unable to find object: {object_name}")
        content_type = fields.get("contentType") or "CSV"
        if content_type not in CONTENT_TYPES:
            raise BulkV1Error(
                "InvalidJob",
                f"Unsupported content type: {content_type} (the emulator takes CSV, XML, JSON)",
            )
        mode = fields.get("concurrencyMode", "Parallel")
        # simple-salesforce sends the enum's ordinal (0 Parallel, 1 Serial) in JSON.
        mode = {0: "Parallel", 1: "Serial", "0": "Parallel", "1": "Serial"}.get(mode, mode)
        if not mode:
            mode = "Parallel"
        if mode not in ("Parallel", "Serial"):
            raise BulkV1Error("InvalidJob", f"Invalid concurrency mode: {mode}")
        ext = fields.get("externalIdFieldName") or None
        if operation == "upsert":
            if not ext:
                raise BulkV1Error(
                    "InvalidJob",
                    f"External ID was blank for {schema.name}. An External ID must be "
                    "specified for upsert.",
                )
            f = schema.field(str(ext))
            if f is None or not (f.id_lookup or f.type == "id"):
                raise BulkV1Error(
                    "InvalidJob",
                    f"Field name provided, {ext} does not match an External ID, Salesforce "
                    f"Id, or indexed field for {schema.name}",
                )
            ext = f.name
        else:
            ext = None
        chunk = _pk_chunk_size(pk_header) if operation in ("query", "queryAll") else None
        job = V1Job(
            id=self._next_id("750"),
            operation=operation,
            object=schema.name,
            content_type=content_type,
            concurrency_mode=mode,
            api_version=version,
            created_by_id=self.org.user_id,
            external_id_field=ext,
            assignment_rule_id=fields.get("assignmentRuleId") or None,
            pk_chunk_size=chunk,
        )
        with self._lock:
            self._jobs[job.id] = job
        return job

    def change_state(self, job: V1Job, state: Any) -> None:
        with self._lock:
            if state == "Closed":
                if job.state != "Open":
                    raise BulkV1Error(
                        "InvalidJobState", f"Job {job.id} is {job.state}; only an Open job closes"
                    )
                job.state = "Closed"
            elif state == "Aborted":
                if job.state not in ("Open", "Closed"):
                    raise BulkV1Error(
                        "InvalidJobState", f"Job {job.id} is {job.state}; it cannot be aborted"
                    )
                job.state = "Aborted"
                # Batches not yet started are never processed; finished ones stay done.
                for batch in job.batches:
                    if batch.state == "Queued":
                        batch.state = "NotProcessed"
                        batch.modified = time.time()
            else:
                raise BulkV1Error("InvalidJobState", f"Invalid state: {state}")
            job.modified = time.time()

    # ---- batches ----------------------------------------------------------------------

    def batch(self, job: V1Job, batch_id: str) -> V1Batch:
        wanted = ids.normalize(batch_id) or batch_id
        for batch in job.batches:
            if batch.id == wanted:
                return batch
        raise BulkV1Error("InvalidBatch", f"Invalid batch id: {batch_id}")

    def add_batch(self, job: V1Job, data: bytes) -> V1Batch:
        batch = V1Batch(id=self._next_id("751"), job_id=job.id, data=data)
        with self._lock:
            if job.state != "Open":
                raise BulkV1Error(
                    "InvalidJobState", f"Job {job.id} is {job.state}; batches go to Open jobs"
                )
            job.batches.append(batch)
            job.modified = time.time()
        return batch

    def process(self, job: V1Job, batch: V1Batch) -> None:
        """Run a Queued batch to Completed / Failed (in the caller's thread)."""
        with job.serial_lock if job.concurrency_mode == "Serial" else _NO_LOCK:
            with self._lock:
                if batch.state != "Queued":
                    return  # aborted meanwhile
                batch.state = "InProgress"
                batch.modified = time.time()
            started = time.monotonic()
            try:
                if job.is_query:
                    self._run_query(job, batch)
                else:
                    self._run_ingest(job, batch)
            except BulkV1Error as error:
                self._finish(batch, started, "Failed", f"{error.code} : {error.message}")
            except Exception as exc:  # a bug must not leave the batch InProgress for ever
                self._finish(
                    batch, started, "Failed", f"InternalServerError : {type(exc).__name__}: {exc}"
                )
            else:
                if batch.state == "InProgress":
                    self._finish(batch, started, "Completed", None)
        if self.settings.on_batches is not None:
            self.settings.on_batches(1)  # DailyBulkApiBatches counts processed batches

    def _finish(self, batch: V1Batch, started: float, state: str, message: str | None) -> None:
        with self._lock:
            batch.state = state
            batch.state_message = message
            batch.processing_ms = int((time.monotonic() - started) * 1000)
            batch.modified = time.time()

    def _run_query(self, job: V1Job, batch: V1Batch) -> None:
        text = batch.data.decode("utf-8", "replace")
        try:
            table = tabulate(
                self.org, text, job.api_version, include_deleted=job.operation == "queryAll"
            )
        except BulkQueryError as error:
            # The batch fails with the query's error, prefixed as Bulk 1.0 does.
            raise BulkV1Error(
                "InvalidBatch", f"Failed to process query: {error.code}: {error.message}"
            ) from None
        if job.pk_chunk_size is None:
            batch.result_sets[self._next_id("752")] = table
            batch.processed = len(table.records)
            return
        # PK chunking: the original batch is not processed itself; one batch per chunk of
        # ids holds the rows ("Use PK Chunking to Extract Large Data Sets").
        size = job.pk_chunk_size
        chunks = [table.records[i : i + size] for i in range(0, len(table.records), size)] or [[]]
        for rows in chunks:
            chunk = V1Batch(id=self._next_id("751"), job_id=job.id, data=batch.data)
            chunk.result_sets[self._next_id("752")] = Table(table.object_name, table.columns, rows)
            chunk.processed = len(rows)
            chunk.state = "Completed"
            with self._lock:
                job.batches.append(chunk)
        with self._lock:
            batch.state = "NotProcessed"
            batch.modified = time.time()

    def _run_ingest(self, job: V1Job, batch: V1Batch) -> None:
        records, value_format, prefailed = self._records(job, batch.data)
        if len(records) > MAX_BATCH_RECORDS:
            raise BulkV1Error(
                "InvalidBatch",
                f"Records in a batch can't exceed {MAX_BATCH_RECORDS:,}: found {len(records):,}",
            )
        good = [r for i, r in enumerate(records) if i not in prefailed]
        applied = iter(
            self.org.apply(
                job.object,
                job.operation,  # type: ignore[arg-type]
                good,
                external_id_field=job.external_id_field,
                value_format=value_format,  # type: ignore[arg-type]
            )
            if good
            else []
        )
        results: list[tuple[str | None, bool, bool, list[dict[str, Any]]]] = []
        for i in range(len(records)):
            if i in prefailed:
                results.append((None, False, False, [prefailed[i]]))
                continue
            result = next(applied)
            if result.get("success"):
                created = bool(result.get("created", job.operation == "insert"))
                results.append((result.get("id"), True, created, []))
            else:
                results.append((result.get("id"), False, False, list(result["errors"])))
        batch.results = results
        batch.processed = len(results)
        batch.failed = sum(1 for r in results if not r[1])

    def _records(
        self, job: V1Job, data: bytes
    ) -> tuple[list[dict[str, Any]], str, dict[int, dict[str, Any]]]:
        """The batch's records, the value format for `Org.apply`, and rows failed already."""
        if job.content_type == "JSON":
            try:
                body = loads(data)
            except (JSONDecodeError, ValueError, UnicodeDecodeError):
                raise BulkV1Error("InvalidBatch", "Unable to parse the JSON batch") from None
            if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
                raise BulkV1Error("InvalidBatch", "A JSON batch must be an array of objects")
            return body, "json", {}
        if job.content_type == "XML":
            root = _parse_xml(data)
            if _local(root.tag) != "sObjects":
                raise BulkV1Error(
                    "InvalidBatch", f"Expected an sObjects element, found {_local(root.tag)}"
                )
            # XML values are text, as CSV's are: the org parses them the same way.
            return [_xml_record(e) for e in root if _local(e.tag) == "sObject"], "csv", {}
        try:
            text = data.decode("utf-8")
            reader = csv.reader(io.StringIO(text, newline=""), strict=True)
            header = next(reader, None)
            rows = [row for row in reader if row]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BulkV1Error("InvalidBatch", f"Failed to parse CSV: {exc}") from None
        if not header:
            raise BulkV1Error("InvalidBatch", "Failed to parse CSV header")
        unknown = self.org.unknown_fields(job.object, header)
        if unknown:
            raise BulkV1Error("InvalidBatch", f"Field name not found : {unknown[0]}")
        # The Bulk 2.0 ingest's row reading: `#N/A` is null, empty is left out, `A.B`
        # is a relationship (the same in Bulk 1.0 CSV).
        build: Callable[[list[str]], dict[str, Any]] = BulkIngest._row_builder(
            None,  # type: ignore[arg-type]
            header,
        )
        records: list[dict[str, Any]] = []
        prefailed: dict[int, dict[str, Any]] = {}
        for i, row in enumerate(rows):
            if len(row) != len(header):
                prefailed[i] = {
                    "statusCode": "INVALID_FIELD",
                    "message": f"Row has {len(row)} columns but the header has {len(header)}",
                    "fields": [],
                }
                records.append({})
            else:
                records.append(build(row))
        return records, "csv", prefailed

    # ---- results ----------------------------------------------------------------------

    def _require_done(self, batch: V1Batch) -> None:
        if batch.state in ("Queued", "InProgress"):
            raise BulkV1Error("InvalidBatch", "Batch not completed")
        if batch.state in ("Failed", "NotProcessed"):
            raise BulkV1Error("InvalidBatch", "Records not processed")

    def result(self, job: V1Job, batch: V1Batch, fmt: str) -> Response:
        self._require_done(batch)
        if job.is_query:
            result_ids = list(batch.result_sets)
            if fmt == "JSON":
                return _json(result_ids)
            inner = "".join(f"<result>{r}</result>" for r in result_ids)
            return _xml(f'{_XML_HEAD}<result-list xmlns="{NS}">{inner}</result-list>')
        if job.content_type == "CSV":
            out = io.StringIO()
            writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
            writer.writerow(["Id", "Success", "Created", "Error"])
            for rid, ok, created, errors in batch.results:
                error = _format_error(errors) if errors else ""
                writer.writerow([rid or "", str(ok).lower(), str(created).lower(), error])
            return Response(out.getvalue().encode("utf-8"), media_type="text/csv")
        if fmt == "JSON":
            return _json(
                [
                    {
                        "success": ok,
                        "created": created,
                        "id": rid,
                        "errors": [
                            {
                                "message": e["message"],
                                "fields": list(e.get("fields") or ()),
                                "statusCode": e["statusCode"],
                            }
                            for e in errors
                        ],
                    }
                    for rid, ok, created, errors in batch.results
                ]
            )
        parts = []
        for rid, ok, created, errors in batch.results:
            inner = ""
            for e in errors:
                fields = "".join(_xml_element("fields", f) for f in e.get("fields") or ())
                inner += (
                    f"<errors>{fields}{_xml_element('message', e['message'])}"
                    f"{_xml_element('statusCode', e['statusCode'])}</errors>"
                )
            if rid:
                inner = _xml_element("id", rid) + inner
            inner += _xml_element("success", ok) + _xml_element("created", created)
            parts.append(f"<result>{inner}</result>")
        return _xml(f'{_XML_HEAD}<results xmlns="{NS}">{"".join(parts)}</results>')

    def result_set(self, job: V1Job, batch: V1Batch, result_id: str) -> Response:
        self._require_done(batch)
        table = batch.result_sets.get(result_id)
        if table is None:
            raise BulkV1Error("InvalidBatch", f"Invalid result id: {result_id}")
        if job.content_type == "CSV":
            return Response(
                csv_text(table.columns, table.records).encode("utf-8"), media_type="text/csv"
            )
        if job.content_type == "JSON":
            return _json([_json_record(r, table.columns) for r in table.records])
        body = "".join(_xml_query_record(r, table) for r in table.records)
        return _xml(f'{_XML_HEAD}<queryResult xmlns="{NS}" xmlns:xsi="{XSI}">{body}</queryResult>')

    # ---- HTTP -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(
                "/services/async/{version}/{rest:path}",
                self._dispatch,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        ]

    async def _dispatch(self, request: Request) -> Response:
        fmt = "JSON" if _format_of(request) == "JSON" else "XML"
        try:
            return await self._handle(request)
        except BulkV1Error as error:
            job_id = request.path_params["rest"].split("/")
            job = None
            if len(job_id) > 1 and job_id[0] == "job":
                with self._lock:
                    job = self._jobs.get(ids.normalize(job_id[1]) or job_id[1])
            if job is not None and job.content_type == "JSON":
                fmt = "JSON"
            return error.response(fmt)

    async def _handle(self, request: Request) -> Response:
        version: str = request.path_params["version"]
        if not _VERSION_RE.match(version):
            raise BulkV1Error("InvalidUrl", f"Invalid API version: {version}", 404)
        parts = [p for p in request.path_params["rest"].split("/") if p]
        method = request.method
        if method not in ("GET", "POST"):
            # "HTTP 405: An HTTP method other than GET or POST was sent to the URI."
            raise BulkV1Error("InvalidUrl", f"HTTP method {method} is not allowed", 405)
        if not parts or parts[0] != "job":
            raise BulkV1Error("InvalidUrl", f"Invalid URL: {request.url.path}", 404)
        request_fmt = _format_of(request)
        if len(parts) == 1:
            if method != "POST":
                raise BulkV1Error("InvalidUrl", "Jobs are created with POST", 405)
            fmt = "JSON" if request_fmt == "JSON" else "XML"
            fields = _job_fields(await self._body(request), fmt)
            job = self.create_job(fields, version, request.headers.get("sforce-enable-pkchunking"))
            return _reply(fmt, "jobInfo", job.info_items(fmt), 201)
        job = self.job(parts[1])
        fmt = "JSON" if job.content_type == "JSON" or request_fmt == "JSON" else "XML"
        if len(parts) == 2:
            if method == "POST":
                fields = _job_fields(await self._body(request), fmt)
                self.change_state(job, fields.get("state"))
            return _reply(fmt, "jobInfo", job.info_items(fmt))
        if parts[2] != "batch":
            raise BulkV1Error("InvalidUrl", f"Invalid URL: {request.url.path}", 404)
        # Batch infos and results follow the job's format: a CSV job's are XML.
        fmt = "JSON" if job.content_type == "JSON" else "XML"
        if len(parts) == 3:
            if method == "GET":
                return self._batch_list(job, fmt)
            return await self._add_batch(job, request, fmt)
        batch = self.batch(job, parts[3])
        if method != "GET":
            raise BulkV1Error("InvalidUrl", "Batches are read with GET", 405)
        if len(parts) == 4:
            return _reply(fmt, "batchInfo", batch.info_items(fmt))
        if parts[4] == "request" and len(parts) == 5:
            media = "text/plain" if job.is_query else _MEDIA[job.content_type]
            return Response(batch.data, media_type=media)
        if parts[4] == "result" and len(parts) == 5:
            return self.result(job, batch, fmt)
        if parts[4] == "result" and len(parts) == 6 and job.is_query:
            return self.result_set(job, batch, parts[5])
        raise BulkV1Error("InvalidUrl", f"Invalid URL: {request.url.path}", 404)

    def _batch_list(self, job: V1Job, fmt: str) -> Response:
        with self._lock:
            batches = list(job.batches)
        if fmt == "JSON":
            return _json({"batchInfo": [b.info(fmt) for b in batches]})
        if not batches:
            return _xml(f'{_XML_HEAD}<batchInfoList\n   xmlns="{NS}" />')
        inner = "".join(
            "\n <batchInfo>"
            + "".join(f"\n  {_xml_element(k, v)}" for k, v in b.info_items(fmt))
            + "\n </batchInfo>"
            for b in batches
        )
        return _xml(f'{_XML_HEAD}<batchInfoList\n   xmlns="{NS}">{inner}\n</batchInfoList>')

    async def _add_batch(self, job: V1Job, request: Request, fmt: str) -> Response:
        sent = _format_of(request)
        if not job.is_query and sent is not None and sent != job.content_type:
            raise BulkV1Error(
                "InvalidBatch",
                f"Content type {_MEDIA[sent]} doesn't match the job's content type "
                f"{job.content_type}",
            )
        batch = self.add_batch(job, await self._body(request))
        # The answer shows the batch as created (Queued), as a real org's does; the
        # batch is then processed before the answer goes out, unless `bulk_seconds`
        # keeps it queued that long (then a worker thread takes it).
        answer = _reply(fmt, "batchInfo", batch.info_items(fmt), 201)
        delay = self.settings.bulk_seconds
        if delay > 0:

            def later() -> None:
                time.sleep(delay)
                self.process(job, batch)

            threading.Thread(target=later, name=f"bulk-v1-{batch.id}", daemon=True).start()
        else:
            await asyncio.to_thread(self.process, job, batch)
        return answer

    async def _body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BATCH_BYTES * 2:  # gzip or not, stop reading a runaway body
                raise BulkV1Error(
                    "InvalidBatch", f"Exceeded max size limit of {MAX_BATCH_BYTES} bytes"
                )
            chunks.append(chunk)
        data = b"".join(chunks)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                raise BulkV1Error("ClientInputError", "Unable to decompress gzip body") from None
        if len(data) > MAX_BATCH_BYTES:
            raise BulkV1Error("InvalidBatch", f"Exceeded max size limit of {MAX_BATCH_BYTES} bytes")
        return data


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


# ---- query results in JSON and XML ------------------------------------------------------


def _epoch_ms(value: Any, apex_type: str | None) -> Any:
    """Bulk 1.0's JSON query results give dates and datetimes as epoch milliseconds
    (recorded: `"ActivityDateTime" : 1730962800000`)."""
    if not isinstance(value, str):
        return value
    try:
        if apex_type == "Date":
            day = date.fromisoformat(value[:10])
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return value
    return int(moment.timestamp() * 1000)


def _json_record(record: dict[str, Any], columns: list[Column]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in record.items()}
    for column in columns:
        if column.apex_type not in ("Date", "Datetime"):
            continue
        holder: Any = out
        for key in column.path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and column.path[-1] in holder:
            holder[column.path[-1]] = _epoch_ms(holder[column.path[-1]], column.apex_type)
    return out


def _xml_value(value: Any, apex_type: str | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if apex_type == "Datetime" and isinstance(value, str) and value.endswith("+0000"):
        return value[: -len("+0000")] + "Z"
    return escape(str(value))


def _xml_query_record(record: dict[str, Any], table: Table) -> str:
    parts = [f"<type>{escape(table.object_name)}</type>"]
    parents: dict[str, list[Column]] = {}
    order: list[tuple[str, Column | None]] = []
    for column in table.columns:
        if len(column.path) == 1:
            order.append((column.header, column))
        else:
            if column.path[0] not in parents:
                order.append((column.path[0], None))
            parents.setdefault(column.path[0], []).append(column)
    for name, column in order:
        if column is not None:
            value = cell(record, column)
            parts.append(
                f'<{name} xsi:nil="true"/>'
                if value is None
                else f"<{name}>{_xml_value(value, column.apex_type)}</{name}>"
            )
            continue
        parent = record.get(name)
        if not isinstance(parent, dict):
            parts.append(f'<{name} xsi:nil="true"/>')
            continue
        kind = (parent.get("attributes") or {}).get("type", name)
        inner = [f"<type>{escape(kind)}</type>"]
        for joined in parents[name]:
            field_name = joined.path[-1]
            value = parent.get(field_name)
            inner.append(
                f'<{field_name} xsi:nil="true"/>'
                if value is None
                else f"<{field_name}>{_xml_value(value, joined.apex_type)}</{field_name}>"
            )
        parts.append(f'<{name} xsi:type="sObject">{"".join(inner)}</{name}>')
    return f'<records xsi:type="sObject">{"".join(parts)}</records>'


__all__ = ["BulkV1", "BulkV1Error", "error_response", "session_error"]
