"""The ASGI application: routes plus one thin layer every request passes through.

The layer (`EmulatorApp`) does what a real org does before any resource sees a
request: latency, the session check, injected request faults, the daily API limit,
API-call counting and the `Sforce-Limit-Info` header; and, once a write has been
applied, the after-apply faults (`lost`: the answer never arrives; `slow`: it arrives
late). It is plain ASGI rather than Starlette middleware, so it costs a few dictionary
look-ups per request, and it covers every route, the Bulk ones included.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sf_activation.emulator.auth import bearer_token, identity_routes, token_routes
from sf_activation.emulator.bulk import BulkIngest, BulkSettings
from sf_activation.emulator.bulk_query import BulkQueryJobs
from sf_activation.emulator.bulk_v1 import BulkV1
from sf_activation.emulator.bulk_v1 import session_error as bulk_v1_session_error
from sf_activation.emulator.composite import collection_routes
from sf_activation.emulator.context import Context
from sf_activation.emulator.faults import parse_faults
from sf_activation.emulator.locks import lock_hook, run_locked
from sf_activation.emulator.org import UnknownObjectError
from sf_activation.emulator.request_log import RequestLog, client_calls, mark_api_call
from sf_activation.emulator.responses import (
    NOT_FOUND_MESSAGE,
    ApiError,
    error_response,
    json_response,
    read_json,
)
from sf_activation.emulator.rest import rest_routes, versions_routes
from sf_activation.emulator.rest_resources import install_parent_locks, resource_routes
from sf_activation.emulator.rules import OrgRules, request_options
from sf_activation.emulator.soap import soap_endpoint

_OPEN_PATHS = frozenset(
    {
        "/services/data",
        "/services/data/",
        "/services/oauth2/token",
        "/services/oauth2/revoke",
    }
)
_VERSION_RE = re.compile(r"^/services/data/v\d{2,3}\.\d(?:/|$)")
# Requests the after-apply faults (`lost`, `slow`) pick from: writes under /services/data/.
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# Bulk 2.0 result downloads (the `bulk_results` fault); the Bulk routes ignore case here.
_BULK_RESULTS_RE = re.compile(
    r"^/services/data/v\d{2,3}\.\d/jobs/ingest/[^/]+/"
    r"(?:successfulresults|failedresults|unprocessedrecords)/?$",
    re.IGNORECASE,
)
_SESSION_ERROR = error_response(401, "INVALID_SESSION_ID", "Session expired or invalid")
_UNAVAILABLE = error_response(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable")
# Salesforce refuses request lines over 16,384 bytes (414) before looking at them.
MAX_URI_BYTES = 16384
_URI_TOO_LONG = error_response(414, "URI_TOO_LONG", "URI Too Long")
_SLASHES_RE = re.compile(r"/{2,}")


class EmulatorApp:
    """Auth, faults, limits and counting around the Starlette router."""

    def __init__(self, ctx: Context, inner: ASGIApp) -> None:
        self.ctx = ctx
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        ctx = self.ctx
        if ctx.faults.latency_s and lock_hook(ctx.org) is None:
            # (With parent locks on, run_locked spends the latency after the write instead.)
            await asyncio.sleep(ctx.faults.latency_s)
        path: str = scope["path"]
        if len(scope.get("raw_path") or path) + len(scope.get("query_string", b"")) > MAX_URI_BYTES:
            await _URI_TOO_LONG(scope, receive, send)
            return
        tidy = normalize_path(path)
        if tidy != path:
            path = tidy
            scope = {**scope, "path": path, "raw_path": path.encode("latin-1", "replace")}
        if path in _OPEN_PATHS:
            await self.inner(scope, receive, send)
            return
        if path.startswith("/services/Soap/"):
            await soap_endpoint(ctx)(scope, receive, send)  # answers in SOAP faults, not JSON
            return
        token = bearer_token(scope["headers"])
        state = ctx.token_state(token)
        if state != "ok":
            if path.startswith("/services/async/"):
                await bulk_v1_session_error(scope, receive, send)  # Bulk 1.0's own shape
                return
            await _SESSION_ERROR(scope, receive, send)
            return
        if (
            path.startswith("/__emulator/")
            or path.startswith("/id/")
            or path.startswith("/services/oauth2/")
        ):
            await self.inner(scope, receive, send)  # test and identity routes: not API calls
            return
        if path.startswith("/services/data/") and not _VERSION_RE.match(path):
            await error_response(404, "NOT_FOUND", NOT_FOUND_MESSAGE)(scope, receive, send)
            return
        faults = ctx.faults
        fault = faults.request_fault()
        if fault == "drop":
            _drop_connection(send)
            return
        if fault == "unavailable":
            await _UNAVAILABLE(scope, receive, send)
            return
        method: str = scope["method"]
        if method == "GET" and _BULK_RESULTS_RE.match(path) and faults.bulk_results_fault():
            _drop_connection(send)  # a failed download: nothing to apply, not an API call
            return
        if ctx.api_calls >= ctx.daily_api_limit:
            await _limited(ctx)(scope, receive, send)
            return
        ctx.api_calls += 1
        mark_api_call(scope, client_calls(ctx.extra).count(token))
        usage = ctx.usage_header().encode()
        after = (
            faults.write_fault()
            if method in _WRITE_METHODS and path.startswith("/services/data/")
            else None
        )
        slow_s = faults.spec.slow_seconds if after == "slow" else 0.0

        async def send_with_usage(message: Message) -> None:
            if after == "lost":
                return  # applied, but the answer never leaves the server
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"sforce-limit-info", usage)]
                if slow_s:
                    await asyncio.sleep(slow_s)  # applied at once, answered late
            await send(message)

        try:
            hook = lock_hook(ctx.org)
            if hook is None:
                await self.inner(scope, receive, send_with_usage)
            else:  # parent locks (locks.py): held while the request is processed
                await run_locked(
                    self.inner, scope, receive, send_with_usage, hook, faults.latency_s
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(no route)"
            ctx.requests_by_route[f"{method} {template}"] += 1
            if after == "lost":
                _drop_connection(send)


def normalize_path(path: str) -> str:
    """The path as a real org routes it: repeated slashes collapsed, a trailing slash
    dropped. The Salesforce CLI keeps instance URLs with a trailing slash and asks for
    `//services/data/v62.0/query`; a real org answers that (the recorded exchanges in
    shared/data/real-org include `GET //services/async/62.0/job/…/result` → 200), and
    REST resources are served with and without a trailing slash."""
    if "//" in path:
        path = _SLASHES_RE.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


def _limited(ctx: Context) -> Response:
    response = error_response(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    response.headers["Sforce-Limit-Info"] = ctx.usage_header()
    return response


def _drop_connection(send: Send) -> None:
    """Close the client's connection without an answer (`drop`, `lost`, `bulk_results`).

    uvicorn hands the app its per-request cycle's bound `send`; closing that cycle's
    transport and marking it disconnected is what a vanished peer looks like to
    uvicorn, so it neither writes a 500 nor logs an error.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("drop fault: no transport to close")
    transport.close()
    cycle.disconnected = True  # type: ignore[union-attr]


def _guard(app: ASGIApp) -> ASGIApp:
    """Turn an unexpected exception into Salesforce's 500 shape; the server keeps serving."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            await error_response(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact "
                "support: 0000000000-00000 (-1)",
            )(scope, receive, send)

    return guarded


_KEEP_SEED: Any = object()


def set_faults(ctx: Context, bulk: BulkIngest, spec: str, *, seed: Any = _KEEP_SEED) -> None:
    """Replace the fault spec of a running emulator; reseed when seed is given (None:
    unseeded draws again).

    Everything reading the spec follows: the request layer, token expiry
    (`session_ttl`) and latency read `ctx.faults` on every request; the org's lock hook
    and the Bulk settings' `bulk_seconds`, `missing_results` and `stop_after_rows` are set
    here. ValueError names a bad part.
    """
    faults = ctx.faults
    new = parse_faults(spec)
    if seed is not _KEEP_SEED:
        faults.reseed(seed)
    faults.spec = new
    bulk.settings.bulk_seconds = new.bulk_seconds
    bulk.settings.missing_results = int(new.missing_results)
    bulk.settings.stop_after_rows = (
        None if new.stop_after_rows is None else int(new.stop_after_rows)
    )
    # No hook at all without lock faults, as the server starts it: one call per record saved.
    ctx.org.lock_failure = faults.lock_failure if new.lock else None
    install_parent_locks(ctx)


def _faults_info(ctx: Context) -> dict[str, Any]:
    spec = ctx.faults.spec
    return {"faults": spec.to_string(), "seed": ctx.faults.seed, "spec": spec.as_dict()}


def test_routes(ctx: Context, bulk: BulkIngest) -> list[Route]:
    """`/__emulator/…`: what tests look at; token required, never counted as API calls."""

    async def stats(request: Request) -> Response:
        return json_response(
            {
                "api_calls": ctx.api_calls,
                "requests_by_route": dict(ctx.requests_by_route),
                # API calls per client: by the token's SHA-256 (first 16 hex digits) and
                # by the OAuth client id the token was issued to.
                "api_calls_by_client": client_calls(ctx.extra).as_dict(),
                "faults": ctx.faults.stats(),
            }
        )

    async def reset(request: Request) -> Response:
        ctx.org.reset()
        bulk.reset()
        for jobs in ("bulk_v1", "bulk_query", "rules"):
            if jobs in ctx.extra:
                ctx.extra[jobs].reset()
        client_calls(ctx.extra).clear()
        with ctx.lock:
            ctx.api_calls = 0
            ctx.bulk_batches = 0
            ctx.requests_by_route.clear()
            ctx.tokens_version += 1
        ctx.faults.reset_counts()
        return Response(status_code=204)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            body = await read_json(request)
            if not isinstance(body, dict) or not isinstance(body.get("faults"), str):
                raise ApiError(
                    400,
                    "INVALID_REQUEST",
                    'expected a JSON object {"faults": "name=value,…", "seed": N (optional)}',
                )
            seed = body.get("seed", _KEEP_SEED)  # absent: keep the draws; null: unseeded
            if seed not in (None, _KEEP_SEED) and (
                not isinstance(seed, int) or isinstance(seed, bool)
            ):
                raise ApiError(400, "INVALID_REQUEST", f"seed must be an integer, got {seed!r}")
            try:
                set_faults(ctx, bulk, body["faults"], seed=seed)
            except ValueError as exc:
                raise ApiError(400, "INVALID_REQUEST", str(exc)) from None
        return json_response(_faults_info(ctx))

    async def records(request: Request) -> Response:
        name = request.path_params["object"]
        if ctx.org.schema(name) is None:
            raise ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE)
        return json_response(ctx.org.records(name))

    return [
        Route("/__emulator/stats", stats, methods=["GET"]),
        Route("/__emulator/reset", reset, methods=["POST"]),
        Route("/__emulator/records/{object}", records, methods=["GET"]),
        Route("/__emulator/faults", faults, methods=["GET", "POST"]),
    ]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _unknown_object(request: Request, exc: Exception) -> Response:
    return error_response(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(
            405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed."
        )
    if exc.status_code == 404:
        return error_response(404, "NOT_FOUND", NOT_FOUND_MESSAGE)
    return error_response(exc.status_code, "INVALID_REQUEST", str(exc.detail))


def build_app(
    ctx: Context,
    *,
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]] | None = None,
    request_log: Path | None = None,
) -> ASGIApp:
    """The whole emulator as one ASGI app over ctx (`request_log`: JSON Lines file)."""

    def count_batches(n: int) -> None:
        with ctx.lock:
            ctx.bulk_batches += n

    spec = ctx.faults.spec
    bulk = BulkIngest(
        ctx.org,
        BulkSettings(
            bulk_seconds=spec.bulk_seconds,
            on_batches=count_batches,
            missing_results=int(spec.missing_results),
            stop_after_rows=None if spec.stop_after_rows is None else int(spec.stop_after_rows),
        ),
    )
    ctx.extra["bulk"] = bulk
    install_parent_locks(ctx)
    # Bulk 1.0 and Bulk 2.0 query jobs share the ingest jobs' settings (bulk_seconds,
    # the DailyBulkApiBatches count), so a fault set live reaches them too.
    bulk_v1 = ctx.extra["bulk_v1"] = BulkV1(ctx.org, bulk.settings)
    bulk_query = ctx.extra["bulk_query"] = BulkQueryJobs(ctx.org, bulk.settings)
    # Record types, assignment and duplicate rules: off until a test configures them.
    rules = ctx.extra["rules"] = OrgRules(ctx.org)
    routes: list[Any] = [
        *versions_routes(),
        *token_routes(ctx),
        *identity_routes(ctx),
        *test_routes(ctx, bulk),
        *rules.routes(),
        *resource_routes(ctx),  # before rest_routes: sobjects/X/describe/layouts, /updated, ...
        *rest_routes(ctx),
        *collection_routes(ctx),
        *bulk.routes(),
        *bulk_query.routes(),
        *bulk_v1.routes(),
    ]
    for route in routes:
        route.app = _guard(route.app)
    inner = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            UnknownObjectError: _unknown_object,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    # Sforce-Auto-Assign / Sforce-Duplicate-Rule-Header reach the writes (rules.py).
    app = EmulatorApp(ctx, request_options(inner))
    return app if request_log is None else RequestLog(app, request_log)
