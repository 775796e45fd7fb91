"""Responses in Salesforce's shapes: JSON bodies, error arrays, status codes."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

try:  # orjson is several times faster on 200-record bodies; plain json works too.
    import orjson

    def dumps(data: Any) -> bytes:
        return orjson.dumps(data)

    def loads(body: bytes) -> Any:
        return orjson.loads(body)

    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - depends on the environment

    def dumps(data: Any) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode()

    def loads(body: bytes) -> Any:
        return json.loads(body)

    JSONDecodeError = json.JSONDecodeError

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
