"""Typed Salesforce failures: one exception class per decision the caller must make.

- `TransientError`: retry later with backoff (lock contention, 5xx, timeouts, dropped
  connections, the org's concurrent-request limit).
- `SessionExpiredError`: re-authenticate, then repeat the request once (handled inside
  `SalesforceSession`; callers only see it if re-authentication did not help).
- `AuthenticationError`: stop the run (bad credentials, expired refresh token).
- `ApiLimitError`: stop the run cleanly (daily API limit, or the configured budget share
  reached); rows not yet sent stay pending.
- `RequestError`: Salesforce refused the whole request (a 4xx); for a batch the caller
  splits it to find the bad records.
- `MappingError`: the model's field mapping does not fit the object's describe.

Messages never contain tokens or secrets: everything that formats text from a response
goes through `redact`.
"""

from __future__ import annotations

import re
from typing import Any

# Salesforce access tokens look like `00D<org id>!<opaque>`; a response body or URL that
# echoes one must not carry it into a log line or exception.
_TOKEN_PATTERN = re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]+")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Text with access tokens and the given secret values replaced by `***`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _TOKEN_PATTERN.sub("***", text)
    return _BEARER_PATTERN.sub(r"\1***", text)


class SalesforceError(Exception):
    """Base class: `status` (HTTP, when there was a response), `error_code`, `url` (no query)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        url: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.status = status
        self.error_code = error_code
        self.url = url.split("?", 1)[0] if url else None
        self.errors = errors or []

    @property
    def message(self) -> str:
        return str(self)


class TransientError(SalesforceError):
    """Worth retrying after a pause; nothing is wrong with the records.

    `maybe_applied`: the request reached Salesforce and may have been applied although no
    usable answer came back (a read timeout, a reset after the body was sent, a gateway's
    bare 5xx). An idempotent call (upsert, update, delete) is simply repeated; a create is
    not, because repeating it could create the records twice (see `sf_activation/ledger.py`).
    """

    def __init__(self, message: str, *, maybe_applied: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.maybe_applied = maybe_applied


class SessionExpiredError(SalesforceError):
    """401 INVALID_SESSION_ID: re-authenticate and repeat the request once."""


class AuthenticationError(SalesforceError):
    """Credentials are refused: stop the run, nothing else can succeed."""


class ApiLimitError(SalesforceError):
    """Daily API limit reached, or the configured share of it: stop cleanly."""


class RequestError(SalesforceError):
    """Salesforce refused the whole request (4xx other than 401/limits)."""


class MappingError(SalesforceError):
    """The model's mapping does not fit the Salesforce object; names model, column, field."""


# Record-level status codes that say "try again later", not "this row is wrong".
# Bulk 2.0 reports `Timeout` and `TooManyLockFailure` for internal batches it gave up on.
RETRYABLE_RECORD_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "UNKNOWN_EXCEPTION",
        "TIMEOUT",
        "Timeout",
        "TooManyLockFailure",
        "TOO_MANY_LOCK_FAILURE",
        "QUERY_TIMEOUT",
    }
)


def is_retryable_record_error(code: str | None) -> bool:
    """Whether a per-record status code means "not the row's fault, send it again"."""
    return code in RETRYABLE_RECORD_CODES


def _is_daily_limit(code: str | None, message: str) -> bool:
    # Salesforce answers 403 REQUEST_LIMIT_EXCEEDED both for the daily allowance
    # ("TotalRequests Limit exceeded.") and for the concurrent long-request limit
    # ("ConcurrentPerOrgLongTxn Limit exceeded"); only the first should stop a run.
    text = message.lower()
    return code == "REQUEST_LIMIT_EXCEEDED" and ("totalrequests" in text or "daily" in text)


def error_from_response(
    status: int, body: Any, url: str, secrets: tuple[str, ...] = ()
) -> SalesforceError:
    """The typed exception for a non-2xx response whose JSON body is `body` (or None)."""
    errors: list[dict[str, Any]] = []
    if isinstance(body, list):
        errors = [e for e in body if isinstance(e, dict)]
    elif isinstance(body, dict):
        errors = [body]
    first = errors[0] if errors else {}
    code = first.get("errorCode") or first.get("error")
    message = first.get("message") or first.get("error_description") or f"HTTP {status}"
    message = redact(str(message), secrets)
    text = f"{code or 'HTTP ' + str(status)}: {message}"
    kwargs: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "url": redact(url, secrets),
        "errors": errors,
    }
    if status == 401:
        if code == "INVALID_SESSION_ID":
            return SessionExpiredError(text, **kwargs)
        return AuthenticationError(text, **kwargs)
    if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
        if _is_daily_limit(code, message):
            return ApiLimitError(text, **kwargs)
        # The concurrent-request limit refuses the request before processing it.
        return TransientError(text, maybe_applied=False, **kwargs)
    if status in (408, 429) or status >= 500 or code in RETRYABLE_RECORD_CODES:
        # An error Salesforce itself wrote (a JSON errorCode) ends a request it rolled back
        # or never started; a bare 5xx from a proxy or gateway says nothing about that.
        refused_by_salesforce = bool(code) or status in (408, 429)
        return TransientError(text, maybe_applied=not refused_by_salesforce, **kwargs)
    return RequestError(text, **kwargs)
