"""The request inspector: a bounded, redacted log of one run's Salesforce requests.

`RequestLog` listens where every API call passes (`salesforce.http.ApiHttp.observers`) and
on the token requests of the session's `requests.Session` (a response hook). Per request
it keeps method, path, status, duration, whether it counted as an API call and the Bulk
job id; the first `MAX_ANSWERS` failing answers are kept whole (truncated). The run record
(`run_history.py`) writes it beside itself as JSON Lines; `sf-activation inspect` reads it.

What never reaches the log, and why it is safe by construction rather than by scrubbing
alone: request headers are never given to it (the bearer token is there); request bodies
are never kept; token answers keep only their status and OAuth `error` code. Query
strings are kept with every SOQL literal masked (a lookup by External ID names the keys
in `WHERE … IN ('…')`, and the key may be a redacted e-mail address), other parameters
only when they look like ids or flags. In failing answers kept whole, the session's
secrets and every value of a `redact:` field found in the request are replaced; when the
request body cannot be read (a Bulk CSV upload streamed from disk) and the model redacts
anything, Salesforce's messages are withheld, since they may quote a value.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import BaseModel, Field

MAX_ENTRIES = 1_000
MAX_ANSWERS = 20
MAX_ANSWER_CHARS = 2_000
MAX_PATH_CHARS = 400
MASK = "***"
WITHHELD = "(withheld: the model redacts fields and this request's body is not read)"

_TOKEN_SHAPE = re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]{20,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_SOQL_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
# Numbers, dates and datetimes: a word boundary then a digit (identifiers like Field1__c
# have a letter before the digit, so no boundary).
_SOQL_NUMBER = re.compile(r"(?<![A-Za-z0-9_])[-+]?\d[\w:.+\-]*")
_SAFE_PARAM = re.compile(r"^[A-Za-z0-9_,.:\-]{0,4000}$")
_BULK_JOB = re.compile(r"/jobs/(?:ingest|query)/([A-Za-z0-9]{15,18})(?:/|$)")
_JOB_CREATE = re.compile(r"/jobs/(?:ingest|query)/?$")
_API_PREFIX = re.compile(r"^/services/data/v[0-9.]+/")


class RequestEntry(BaseModel):
    kind: Literal["request"] = "request"
    seq: int
    at_s: float  # seconds since the log started
    method: str
    path: str  # host dropped, SOQL literals masked
    status: int | None  # None: failed on the wire (see `error`)
    duration_ms: float
    api_call: bool  # counted as an API call by the session (token requests are not)
    bulk_job_id: str | None = None
    error: str | None = None  # the transport failure's type (never its text)
    api_usage: str | None = None  # Sforce-Limit-Info, e.g. "api-usage=123/15000"
    answer: str | None = None  # a failing answer's body, truncated and masked


class RequestLogSummary(BaseModel):
    kind: Literal["summary"] = "summary"
    total: int
    kept: int
    dropped: int  # beyond MAX_ENTRIES: counted, not kept
    api_calls: int
    by_status: dict[str, int] = Field(default_factory=dict)  # "200", "400", "error"
    dropped_by_status: dict[str, int] = Field(default_factory=dict)
    failures: int
    answers_kept: int
    bulk_job_ids: list[str] = Field(default_factory=list)


def mask_soql(soql: str) -> str:
    """The query with every literal (strings, numbers, dates) replaced by ***."""
    return _SOQL_NUMBER.sub(MASK, _SOQL_STRING.sub(f"'{MASK}'", soql))


def soql_literals(soql: str) -> list[str]:
    return [m.group(0)[1:-1].replace("\\'", "'") for m in _SOQL_STRING.finditer(soql)]


def safe_path(url: str) -> str:
    """Path and query of `url` without host, secrets or values (see the module doc)."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    # sobjects/{Object}/{ExternalIdField}/{value}: the value may be a redacted key.
    i = segments.index("sobjects") if "sobjects" in segments else 0
    if i > 0 and segments[i - 1] != "composite":
        for j in range(i + 3, len(segments)):
            segments[j] = MASK
    path = "/".join(segments)
    if parts.query:
        shown = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "q":
                value = mask_soql(value)
            elif not _SAFE_PARAM.match(value):
                value = MASK
            shown.append(f"{name}={value}")
        path += "?" + "&".join(shown)
    if len(path) > MAX_PATH_CHARS:
        path = path[: MAX_PATH_CHARS - 1] + "…"
    return path


def _collect(value: Any, redact: set[str], out: set[str], inside: bool = False) -> None:
    """Every scalar under a key named in `redact` (payload fields, nested lookups)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, redact, out, inside or key in redact)
    elif isinstance(value, list):
        for item in value:
            _collect(item, redact, out, inside)
    elif inside and value is not None and not isinstance(value, bool):
        out.add(str(value))


class RequestLog:
    """One run's requests; thread-safe (the Composite senders share it)."""

    def __init__(
        self,
        *,
        redact: Iterable[str] = (),
        scrub: Callable[[str], str] | None = None,
        max_entries: int = MAX_ENTRIES,
        max_answers: int = MAX_ANSWERS,
    ) -> None:
        self.redact = set(redact)
        self._scrub = scrub
        self.max_entries = max_entries
        self.max_answers = max_answers
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._seq = 0
        self.entries: list[RequestEntry] = []
        self._by_status: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._failures = 0
        self._answers = 0
        self._api_calls = 0
        self._bulk_jobs: list[str] = []
        self._session: Any = None

    # -- wiring --------------------------------------------------------------------------

    def attach(self, session: Any) -> None:
        """Listen to `session` (a `SalesforceSession`): its API calls and token requests."""
        if session is None:
            return
        session.api_http.observers.append(self)
        session.http.hooks.setdefault("response", []).append(self._token_hook)
        self._session = session

    def detach(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if self in session.api_http.observers:
            session.api_http.observers.remove(self)
        hooks = session.http.hooks.get("response", [])
        if self._token_hook in hooks:
            hooks.remove(self._token_hook)

    # -- recording -----------------------------------------------------------------------

    def observe(
        self,
        method: str,
        url: str,
        *,
        duration_s: float,
        response: Any,
        error: BaseException | None,
        json: Any,
        data: Any,
        stream: bool,
    ) -> None:
        """An API call (`ApiHttp`): every one the session sends is counted by it."""
        status = None if response is None else int(response.status_code)
        path = safe_path(url)
        job = _BULK_JOB.search(urlsplit(url).path)
        job_id = job.group(1) if job else None
        created = method == "POST" and _JOB_CREATE.search(urlsplit(url).path) is not None
        if job_id is None and created and status is not None and status < 300 and not stream:
            job_id = _job_id_of(response.content)
        answer = None
        if status is not None and status >= 400 and self._wants_answer():
            answer = self._answer(response, url, json, data)
        usage = None
        if response is not None:
            usage = response.headers.get("Sforce-Limit-Info")
        self._add(
            method=method,
            path=path,
            status=status,
            duration_s=duration_s,
            api_call=True,
            bulk_job_id=job_id,
            error=type(error).__name__ if error is not None else None,
            api_usage=usage,
            answer=answer,
        )

    def _token_hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """A token request (requests' response hook): status and OAuth error code only —
        the answer of a good one *is* the access token."""
        answer = None
        if response.status_code >= 400 and self._wants_answer():
            try:
                body = response.json()
                code = body.get("error") if isinstance(body, dict) else None
            except ValueError:
                code = None
            answer = self._clean(f'{{"error": "{code}"}}' if code else "(token answer not kept)")
        self._add(
            method=response.request.method,
            path=safe_path(response.url).split("?", 1)[0],
            status=int(response.status_code),
            duration_s=response.elapsed.total_seconds(),
            api_call=False,
            bulk_job_id=None,
            error=None,
            api_usage=None,
            answer=answer,
        )
        return response

    def _wants_answer(self) -> bool:
        with self._lock:
            if self._answers >= self.max_answers:
                return False
            self._answers += 1
            return True

    def _add(self, *, status: int | None, duration_s: float, api_call: bool, **fields: Any) -> None:
        key = "error" if status is None else str(status)
        with self._lock:
            self._seq += 1
            self._by_status[key] += 1
            if status is None or status >= 400:
                self._failures += 1
            if api_call:
                self._api_calls += 1
            job = fields.get("bulk_job_id")
            if job and job not in self._bulk_jobs:
                self._bulk_jobs.append(job)
            if len(self.entries) >= self.max_entries:
                self._dropped[key] += 1
                return
            self.entries.append(
                RequestEntry(
                    seq=self._seq,
                    at_s=round(time.monotonic() - self._t0, 3),
                    status=status,
                    duration_ms=round(duration_s * 1000, 1),
                    api_call=api_call,
                    **fields,
                )
            )

    # -- masking -------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        if self._scrub is not None:
            text = self._scrub(text)
        return _TOKEN_SHAPE.sub(MASK, text)

    def _answer(self, response: Any, url: str, json: Any, data: Any) -> str:
        try:
            text = response.content.decode("utf-8", "replace")
        except Exception:  # a stream already consumed, a dropped body
            return "(answer body not readable)"
        text = self._clean(text)
        if not self.redact:
            return _truncate(text)
        values: set[str] = set()
        readable = True
        body: Any = json
        if body is None and isinstance(data, bytes | str):
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:
                readable = False
        elif body is None and data is not None:
            readable = False  # a file streamed from disk (Bulk CSV)
        if body is not None:
            _collect(body, self.redact, values)
        for name, value in parse_qsl(urlsplit(url).query):
            if name == "q":
                values.update(soql_literals(value))
        # Longest first, so a value containing another is masked whole.
        for value in sorted((v for v in values if v), key=len, reverse=True):
            text = text.replace(value, MASK)
            text = text.replace(orjson.dumps(value).decode()[1:-1], MASK)
        text = _EMAIL.sub(MASK, text)
        if not readable:
            text = _withhold_messages(text)
        return _truncate(text)

    # -- output --------------------------------------------------------------------------

    def summary(self) -> RequestLogSummary:
        with self._lock:
            return RequestLogSummary(
                total=self._seq,
                kept=len(self.entries),
                dropped=sum(self._dropped.values()),
                api_calls=self._api_calls,
                by_status=dict(self._by_status),
                dropped_by_status=dict(self._dropped),
                failures=self._failures,
                answers_kept=sum(1 for e in self.entries if e.answer is not None),
                bulk_job_ids=list(self._bulk_jobs),
            )

    def to_jsonl(self) -> bytes:
        with self._lock:
            entries = list(self.entries)
        lines = [e.model_dump_json() for e in entries]
        lines.append(self.summary().model_dump_json())
        return ("\n".join(lines) + "\n").encode()


def _job_id_of(content: bytes) -> str | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    job = body.get("id") if isinstance(body, dict) else None
    return str(job) if isinstance(job, str) and re.fullmatch(r"[A-Za-z0-9]{15,18}", job) else None


def _withhold_messages(text: str) -> str:
    """Salesforce's error JSON with each `message` replaced; anything else withheld."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return WITHHELD

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (WITHHELD if k == "message" else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value if not isinstance(value, str) or len(value) <= 80 else WITHHELD

    return orjson.dumps(walk(body)).decode()


def _truncate(text: str) -> str:
    if len(text) <= MAX_ANSWER_CHARS:
        return text
    return text[:MAX_ANSWER_CHARS] + f"… ({len(text) - MAX_ANSWER_CHARS} more characters)"


def parse_request_log(text: str) -> tuple[list[RequestEntry], RequestLogSummary | None]:
    """A stored request log: its entries and the closing summary (None if it has none)."""
    entries: list[RequestEntry] = []
    summary = None
    for line in text.splitlines():
        if not line.strip():
            continue
        data = orjson.loads(line)
        if data.get("kind") == "summary":
            summary = RequestLogSummary.model_validate(data)
        else:
            entries.append(RequestEntry.model_validate(data))
    return entries, summary


# --------------------------------------------------------------- `sf-activation inspect`

REQUEST_COLUMNS = ("#", "at_s", "method", "path", "status", "ms", "api", "bulk_job")


def print_requests(
    model: str, settings: Any, *, run_id: str | None, limit: int, as_json: bool
) -> int:
    """`sf-activation inspect MODEL [--run RUN_ID]`: the run's requests (the latest run's
    by default) as a table, or the stored JSON Lines."""
    import sys

    from sf_activation.run_history import RUNS_DIR, RunHistory

    history = RunHistory(settings.state_url, model, retention_days=settings.run_history_days)
    name = history.find(run_id)
    if name is None:
        which = f"run {run_id}" if run_id else "any run"
        print(f"no record of {which} of {model} in {history.store.url}/{RUNS_DIR}", file=sys.stderr)
        return 2 if run_id else 0
    record = history.read(name)
    if record.requests_file is None:
        print(f"run {record.run_id} of {model} kept no request log", file=sys.stderr)
        return 0
    text = history.store.read_bytes(f"{RUNS_DIR}/{record.requests_file}").decode()
    if as_json:
        sys.stdout.write(text)
        return 0
    entries, summary = parse_request_log(text)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{history.url(record.requests_file)} (run {record.run_id})", markup=False)
    table = Table()
    for column in REQUEST_COLUMNS:
        table.add_column(column, no_wrap=column != "path", overflow="fold")
    for e in entries[: max(limit, 0)]:
        table.add_row(
            str(e.seq),
            f"{e.at_s:.3f}",
            e.method,
            _API_PREFIX.sub("", e.path),  # the versioned prefix says nothing per row
            str(e.status) if e.status is not None else (e.error or "error"),
            f"{e.duration_ms:.0f}",
            "yes" if e.api_call else "no",
            e.bulk_job_id or "",
        )
    console.print(table)
    if summary is not None:
        statuses = ", ".join(f"{k}: {n}" for k, n in sorted(summary.by_status.items()))
        print(
            f"{min(len(entries), max(limit, 0))} of {summary.total} requests shown "
            f"({summary.kept} kept, {summary.dropped} beyond the log's bound); "
            f"{summary.api_calls} API calls; by status: {statuses}"
        )
    for e in entries:
        if e.answer is not None:
            console.print(f"#{e.seq} {e.method} {e.path} -> {e.status}:", markup=False)
            console.print(f"  {e.answer}", markup=False, soft_wrap=True)
    return 0
