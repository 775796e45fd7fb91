"""A small local double of BigQuery's REST query API, backed by DuckDB.

A real HTTP server on 127.0.0.1 (`http.server`, one thread per request) answering what
google-cloud-bigquery sends for `client.query(sql).result()` and its paging:

- `POST /bigquery/v2/projects/{p}/jobs` (jobs.insert; `dryRun` answers with the schema),
- `GET  /bigquery/v2/projects/{p}/jobs/{jobId}` (jobs.get),
- `POST /bigquery/v2/projects/{p}/queries` (jobs.query),
- `GET  /bigquery/v2/projects/{p}/queries/{jobId}` (getQueryResults, `maxResults` +
  `pageToken` paging, at most `max_page_rows` rows a page whatever the client asks).

The SQL runs on one DuckDB database; a dataset is a DuckDB schema and the job's
`defaultDataset` becomes the search path. Rows go back in BigQuery's JSON row format
(`{"f": [{"v": "…"}]}`, every scalar as a string, timestamps as int64 microseconds when
the client asks `formatOptions.useInt64Timestamp`) with a BigQuery schema derived from
DuckDB's column types. Only what the warehouse reader needs; anything else is a 404 that
is recorded in `unhandled`, so a test sees when the client starts using another route.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb

_PREFIX = "/bigquery/v2"


@dataclass
class _Job:
    project: str
    job_id: str
    query: str
    location: str
    schema: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: str | None = None
    dry_run: bool = False

    def resource(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": "DONE"}
        if self.error is not None:
            err = {"reason": "invalidQuery", "location": "query", "message": self.error}
            status["errorResult"] = err
            status["errors"] = [err]
        stats: dict[str, Any] = {
            "creationTime": "1700000000000",
            "startTime": "1700000000000",
            "endTime": "1700000000001",
            "totalBytesProcessed": "0",
            "query": {"totalBytesProcessed": "0", "statementType": "SELECT"},
        }
        if self.error is None:
            stats["query"]["schema"] = {"fields": self.schema}
        return {
            "kind": "bigquery#job",
            "id": f"{self.project}:{self.location}.{self.job_id}",
            "jobReference": self.reference(),
            "configuration": {
                "jobType": "QUERY",
                "dryRun": self.dry_run,
                "query": {"query": self.query, "useLegacySql": False},
            },
            "status": status,
            "statistics": stats,
        }

    def reference(self) -> dict[str, str]:
        return {"projectId": self.project, "jobId": self.job_id, "location": self.location}


def _bq_field(name: str, duck_type: str) -> dict[str, Any]:
    t = duck_type.upper()
    if t.endswith("[]"):
        inner = _bq_field(name, duck_type[:-2])
        return {**inner, "mode": "REPEATED"}
    if t.startswith("DECIMAL"):
        bq = "NUMERIC"
    elif t in (
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
    ):
        bq = "INTEGER"
    elif t in ("FLOAT", "DOUBLE", "REAL"):
        bq = "FLOAT"
    elif t == "BOOLEAN":
        bq = "BOOLEAN"
    elif t == "DATE":
        bq = "DATE"
    elif t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        bq = "TIMESTAMP"
    elif t.startswith("TIMESTAMP"):
        bq = "DATETIME"
    elif t == "TIME":
        bq = "TIME"
    elif t == "JSON":
        bq = "JSON"
    elif t == "BLOB":
        bq = "BYTES"
    else:
        bq = "STRING"
    return {"name": name, "type": bq, "mode": "NULLABLE"}


def _cell(value: Any, bq_field: dict[str, Any], int64_ts: bool) -> Any:
    if value is None:
        return None
    if bq_field.get("mode") == "REPEATED":
        scalar = {**bq_field, "mode": "NULLABLE"}
        return [{"v": _cell(v, scalar, int64_ts)} for v in value]
    kind = bq_field["type"]
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "TIMESTAMP":
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        micros = (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        return str(micros) if int64_ts else f"{micros / 1e6:.6f}"
    if kind == "DATETIME":
        return value.isoformat(timespec="microseconds")
    if kind in ("DATE", "TIME"):
        return value.isoformat()
    if kind == "BYTES":
        return base64.b64encode(bytes(value)).decode()
    if kind == "NUMERIC" and isinstance(value, Decimal):
        return format(value, "f")
    if kind == "FLOAT":
        return repr(float(value))
    return str(value)


class BigQueryDouble:
    """The server; `url` is the `api_endpoint` to give the client."""

    def __init__(self, max_page_rows: int = 1000) -> None:
        self.max_page_rows = max_page_rows
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self.jobs: dict[str, _Job] = {}
        self.requests: list[str] = []
        self.unhandled: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bigquery double", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> BigQueryDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.db.close()

    def execute(self, sql: str) -> None:
        """Set up data (datasets are DuckDB schemas)."""
        with self._lock:
            self.db.execute(sql)

    # -- query execution -----------------------------------------------------------------

    def _run(self, project: str, body: dict[str, Any]) -> _Job:
        config = body.get("configuration", {}) if "configuration" in body else {"query": body}
        query_cfg = config.get("query", {})
        ref = body.get("jobReference") or {}
        job = _Job(
            project=project,
            job_id=ref.get("jobId") or f"job_{uuid.uuid4().hex}",
            query=query_cfg.get("query", ""),
            location=ref.get("location") or body.get("location") or "US",
            dry_run=bool(config.get("dryRun") or body.get("dryRun")),
        )
        dataset = (query_cfg.get("defaultDataset") or body.get("defaultDataset") or {}).get(
            "datasetId"
        )
        with self._lock:
            cur = self.db.cursor()
            try:
                if dataset:
                    cur.execute(f'SET search_path = "{dataset}"')
                rel = cur.sql(job.query)
                job.schema = [
                    _bq_field(name, str(typ))
                    for name, typ in zip(rel.columns, rel.types, strict=True)
                ]
                if not job.dry_run:
                    job.rows = rel.fetchall()
            except duckdb.Error as exc:
                # BigQuery's messages are one line; DuckDB adds the SQL excerpt below.
                job.error = str(exc).splitlines()[0]
            finally:
                cur.close()
            if not job.dry_run:
                self.jobs[job.job_id] = job
        return job

    def _page(self, job: _Job, params: dict[str, list[str]]) -> dict[str, Any]:
        start = int((params.get("pageToken") or params.get("startIndex") or ["0"])[0])
        asked = int((params.get("maxResults") or [str(self.max_page_rows)])[0])
        size = max(0, min(asked, self.max_page_rows))
        int64_ts = (params.get("formatOptions.useInt64Timestamp") or ["false"])[0].lower() == "true"
        chunk = job.rows[start : start + size]
        out: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job.reference(),
            "jobComplete": True,
            "schema": {"fields": job.schema},
            "totalRows": str(len(job.rows)),
            "cacheHit": False,
            "rows": [
                {"f": [{"v": _cell(v, f, int64_ts)} for v, f in zip(row, job.schema, strict=True)]}
                for row in chunk
            ],
        }
        if start + size < len(job.rows):
            out["pageToken"] = str(start + size)
        return out

    # -- HTTP ----------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean; requests are recorded in double.requests

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, reason: str = "invalidQuery") -> None:
                self._send(
                    status,
                    {
                        "error": {
                            "code": status,
                            "message": message,
                            "errors": [{"message": message, "domain": "global", "reason": reason}],
                            "status": "INVALID_ARGUMENT" if status == 400 else "NOT_FOUND",
                        }
                    },
                )

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}") if length else {}

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                params = parse_qs(parts.query)
                path = parts.path
                double.requests.append(f"{method} {path}")
                m = re.fullmatch(rf"{_PREFIX}/projects/([^/]+)/(jobs|queries)(?:/([^/]+))?", path)
                if not m:
                    double.unhandled.append(f"{method} {self.path}")
                    self._error(404, f"Not found: {path}", "notFound")
                    return
                project, kind, job_id = m.groups()
                if method == "POST" and job_id is None:
                    body = self._body()
                    job = double._run(project, body)
                    if kind == "jobs" and job.dry_run and job.error is not None:
                        # A dry run that does not compile is refused outright, as BigQuery does.
                        self._error(400, job.error)
                    elif kind == "jobs":
                        self._send(200, job.resource())
                    elif job.error is not None:
                        self._error(400, job.error)
                    else:
                        answer = double._page(
                            job,
                            {
                                "maxResults": [str(body.get("maxResults", double.max_page_rows))],
                                "formatOptions.useInt64Timestamp": [
                                    str(
                                        (body.get("formatOptions") or {}).get(
                                            "useInt64Timestamp", False
                                        )
                                    )
                                ],
                            },
                        )
                        answer["kind"] = "bigquery#queryResponse"
                        self._send(200, answer)
                    return
                if method == "GET" and job_id is not None:
                    job = double.jobs.get(job_id)
                    if job is None:
                        self._error(404, f"Not found: Job {project}:{job_id}", "notFound")
                    elif kind == "jobs":
                        self._send(200, job.resource())
                    elif job.error is not None:
                        self._error(400, job.error)
                    else:
                        self._send(200, double._page(job, params))
                    return
                double.unhandled.append(f"{method} {self.path}")
                self._error(404, f"Not found: {method} {path}", "notFound")

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

        return Handler


@contextmanager
def bigquery_double(max_page_rows: int = 1000) -> Iterator[BigQueryDouble]:
    double = BigQueryDouble(max_page_rows=max_page_rows).start()
    try:
        yield double
    finally:
        double.stop()
