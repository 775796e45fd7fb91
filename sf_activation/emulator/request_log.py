"""The request log (`--log FILE`) and the per-client API call counter.

The log is JSON Lines, one object per request once its answer has left (or the
connection was dropped): `time`, `method`, `path`, `status`, `duration_ms`,
`api_call` (whether it counted against the daily API limit) and `client` (a short
SHA-256 of the session id, never the id itself). Query strings are kept, with
credential-like parameters masked; headers are never written, so neither is the
`Authorization` / `X-SFDC-Session` token. Its purpose is finding out what an
unfamiliar client (the Salesforce CLI, jsforce, simple-salesforce) actually asks for.

The per-client counter answers "which client used how many API calls": keyed by the
token's hash and by the OAuth client id the token was issued to (when the token
endpoint saw one). `/__emulator/stats` reports it as `api_calls_by_client`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where EmulatorApp marks a request as an API call for the log (a dict the log puts in
# the scope; copies of the scope share it).
SCOPE_KEY = "sf_activation.request_log"
# Query parameters that carry credentials: OAuth's token endpoint accepts its form
# fields in the query string too (and the frontdoor takes `sid`).
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "assertion",
        "client_secret",
        "code",
        "password",
        "refresh_token",
        "session_id",
        "sid",
        "token",
    }
)
MASK = "***"


def token_hash(token: str) -> str:
    """A short, stable name for a session id that does not reveal it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def masked_query(query_string: bytes) -> str:
    """The query string with credential-like parameter values replaced by `***`."""
    if not query_string:
        return ""
    text = query_string.decode("latin-1")
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMS for name, _ in pairs):
        return text
    return "&".join(
        f"{quote(name, safe='')}={MASK if name.lower() in SECRET_PARAMS else quote(value, safe='')}"
        for name, value in pairs
    )


class ClientCalls:
    """API calls per client: by token hash and by the OAuth client id of the token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: Counter[str] = Counter()
        self._by_client_id: Counter[str] = Counter()
        self._client_of: dict[str, str] = {}  # token hash -> client id

    def remember(self, token: str, client_id: str | None) -> None:
        """Note which OAuth client a freshly issued token belongs to."""
        if client_id:
            with self._lock:
                self._client_of[token_hash(token)] = client_id

    def count(self, token: str | None) -> str | None:
        """Count one API call for the token; returns the token's hash."""
        if not token:
            return None
        key = token_hash(token)
        with self._lock:
            self._by_token[key] += 1
            client_id = self._client_of.get(key)
            if client_id:
                self._by_client_id[client_id] += 1
        return key

    def clear(self) -> None:
        """Forget the counts (`/__emulator/reset`); which token is whose stays known."""
        with self._lock:
            self._by_token.clear()
            self._by_client_id.clear()

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "by_token_sha256": dict(self._by_token),
                "by_client_id": dict(self._by_client_id),
            }


def client_calls(extra: dict[str, Any]) -> ClientCalls:
    """The counter kept in a Context's `extra` (created on first use)."""
    calls = extra.get("client_calls")
    if calls is None:
        calls = extra.setdefault("client_calls", ClientCalls())
    return calls


def mark_api_call(scope: Scope, client: str | None) -> None:
    """Tell the request log (if any) that this request counted as an API call."""
    entry = scope.get(SCOPE_KEY)
    if entry is not None:
        entry["api_call"] = True
        entry["client"] = client


class RequestLog:
    """ASGI middleware writing one JSON line per request to a file (append mode)."""

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self.app = app
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: each entry is on disk when the request is done, so a test (or a
        # person with `tail -f`) sees it at once.
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        entry: dict[str, Any] = {"api_call": False, "client": None}
        scope = {**scope, SCOPE_KEY: entry}
        status: int | None = None

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            self._write(scope, status, entry, started)

    def _write(
        self, scope: Scope, status: int | None, entry: dict[str, Any], started: float
    ) -> None:
        query = masked_query(scope.get("query_string", b""))
        # The path as the client sent it (before EmulatorApp tidies slashes): that is
        # what one looks for when a client fails.
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"]
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": scope["method"],
            "path": path + (f"?{query}" if query else ""),
            "status": status,  # None: the connection was closed without an answer
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "api_call": entry["api_call"],
            "client": entry["client"],
        }
        text = json.dumps(line, separators=(",", ":"))
        with self._lock:
            self._file.write(text + "\n")


__all__ = [
    "ClientCalls",
    "RequestLog",
    "client_calls",
    "mark_api_call",
    "masked_query",
    "token_hash",
]
