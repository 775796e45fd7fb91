"""Responses in Salesforce's shapes: JSON bodies, error arrays, status codes.

Numbers are exact. Number, Currency and Percent fields hold up to 18 digits, more than
a float64 keeps, so stored values are `Decimal`s: a request body whose number literals
might not survive a float is parsed with `Decimal` floats, and a stored `Decimal` goes
out as the JSON number it is (the float's own literal when the float is exact, so
ordinary values look as they always did: `1500.0`, `0.25`).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

# A run of 16+ digits (a point allowed in it) marks a literal that may carry more than
# the 15 significant digits a float64 always keeps (orjson also reads integers beyond
# 64 bits as floats). Found by mapping digits and points to "0", the rest to " ": a
# third of orjson's parse time, where a regex search takes twice it. A run inside a
# string is a false alarm that only costs speed.
_DIGIT_MAP = bytes(48 if chr(c) in "0123456789." else 32 for c in range(256))
_LONG_RUN = b"0" * 16


def _may_lose_digits(body: bytes) -> bool:
    return _LONG_RUN in body.translate(_DIGIT_MAP)


def _refuse_constant(name: str) -> Any:
    # NaN / Infinity are not JSON; orjson refuses them too.
    raise ValueError(f"not valid JSON: {name}")


def _exact_loads(body: bytes | str) -> Any:
    return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)


def _exact_text(number: Decimal) -> str | None:
    """The JSON literal of a Decimal that a float cannot carry, None when a float can."""
    if len(str(number)) <= 15:  # at most 15 digits: a float keeps them all (the usual case)
        return None
    if not number.is_finite():
        raise TypeError(f"{number} is not a JSON number")
    if Decimal(repr(float(number))) == number:
        return None
    return format(number, "f")


try:  # orjson is several times faster on 200-record bodies; plain json works too.
    import orjson

    _Fragment = getattr(orjson, "Fragment", None)

    if _Fragment is not None:

        def _default(value: Any) -> Any:
            if type(value) is Decimal:
                if len(str(value)) <= 15:  # the usual case, inline: once per number
                    return float(value)
                text = _exact_text(value)
                return float(value) if text is None else _Fragment(text.encode())
            raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")

        def dumps(data: Any) -> bytes:
            return orjson.dumps(data, default=_default)

    else:  # pragma: no cover - orjson before Fragment (3.9.15)

        def dumps(data: Any) -> bytes:
            return _marked_dumps(orjson.dumps(data, default=_marker))

    def loads(body: bytes) -> Any:
        if not _may_lose_digits(body):
            return orjson.loads(body)
        return _exact_loads(body)

    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - depends on the environment

    def dumps(data: Any) -> bytes:
        return _marked_dumps(json.dumps(data, separators=(",", ":"), default=_marker).encode())

    def loads(body: bytes) -> Any:
        return _exact_loads(body)

    JSONDecodeError = json.JSONDecodeError


# Without orjson.Fragment a raw literal cannot be written directly: a Decimal that needs
# one goes out as a NUL-delimited string, unquoted afterwards. Stored text never holds
# NUL (the org strips it on save), so the marker cannot collide with a real value.
_MARKED = re.compile(rb'"\\u0000(-?[0-9.]+)\\u0000"')


def _marker(value: Any) -> Any:  # pragma: no cover - orjson before Fragment, or no orjson
    if isinstance(value, Decimal):
        text = _exact_text(value)
        return float(value) if text is None else f"\x00{text}\x00"
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _marked_dumps(encoded: bytes) -> bytes:  # pragma: no cover - see _marker
    return _MARKED.sub(rb"\1", encoded) if b"\\u0000" in encoded else encoded


JSON_TYPE = "application/json;charset=UTF-8"
NOT_FOUND_MESSAGE = "The requested resource does not exist"


class ApiError(Exception):
    """A whole-request error, answered as `[{"message","errorCode"(,"fields")}]`."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def response(self) -> Response:
        return error_response(self.status, self.error_code, self.message, self.fields)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status, headers=headers, media_type=JSON_TYPE)


def error_response(
    status: int, error_code: str, message: str, fields: list[str] | None = None
) -> Response:
    item: dict[str, Any] = {"message": message, "errorCode": error_code}
    if fields is not None:
        item["fields"] = fields
    return json_response([item], status)


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


async def read_json(request: Request) -> Any:
    """The request's JSON body; ApiError in Salesforce's words when it is not JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and not (content_type.endswith("json") or content_type == "*/*"):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type header specified in HTTP request is not supported: {content_type}",
        )
    body = await request.body()
    try:
        return loads(body)
    except (JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", 1)
        column = getattr(exc, "colno", 1)
        if not body.strip():
            message = "No content to map due to end-of-input at [line:1, column:0]"
        else:
            message = f"Unexpected character: not valid JSON at [line:{line}, column:{column}]"
        raise ApiError(400, "JSON_PARSER_ERROR", message) from None
