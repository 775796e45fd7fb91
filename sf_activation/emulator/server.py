"""`sf-activation emulator`: command-line flags and the uvicorn server around the app."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from sf_activation.emulator.app import build_app
from sf_activation.emulator.auth import new_access_token
from sf_activation.emulator.builtin_objects import builtin_describes
from sf_activation.emulator.context import DEFAULT_DAILY_API_LIMIT, Context, Credentials
from sf_activation.emulator.faults import Faults, parse_faults
from sf_activation.emulator.org import Org
from sf_activation.emulator.persistence import Saver, load_state
from sf_activation.emulator.tls import ensure_certificate

DEFAULT_TLS_DIR = Path(".sf_activation/emulator")
_CREDENTIAL_KEYS = ("client_id", "client_secret", "username", "password", "refresh_token")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "faults: comma-separated name=value pairs: lock (share of records failing with\n"
        "UNABLE_TO_LOCK_ROW), unavailable (share of API requests answered 503), drop\n"
        "(share of API requests whose connection is closed without an answer, before\n"
        "they are processed), lost (share of write requests - POST, PATCH, PUT, DELETE -\n"
        "applied, then closed without an answer), slow (share of write requests applied\n"
        "at once but answered only after slow_seconds, default 5), bulk_results (share of\n"
        "Bulk result downloads closed without an answer), session_ttl (seconds a token\n"
        "lives), bulk_seconds (how long a Bulk job stays InProgress), parent_locks=1\n"
        "(writes lock the parent records they look up for lock_ms, default the latency;\n"
        "a colliding write fails with UNABLE_TO_LOCK_ROW, or waits up to lock_wait_ms),\n"
        "missing_results=N (a Bulk 2.0 ingest job leaves its first N uploaded rows out of\n"
        "every result file; what it did with them stands), stop_after_rows=K (a Bulk 2.0\n"
        "ingest job of more rows applies the first K, then ends Failed, the rest\n"
        "unprocessed). Shares are 0 to 1; N and K are whole numbers of rows.\n"
        "Example: --faults lock=0.03,unavailable=0.01,lost=0.02\n\n"
        "credentials FILE: JSON with any of client_id, client_secret, username,\n"
        "password, refresh_token, jwt_public_key_file (PEM: JWT assertions must then be\n"
        "signed with the matching key). Each one given must match; without the file any\n"
        "credentials earn a token.\n\n"
        "Test routes (token required, not counted as API calls): GET /__emulator/stats\n"
        "(api_calls_by_client: per token hash and OAuth client id),\n"
        "POST /__emulator/reset, GET /__emulator/records/{object}, GET and POST\n"
        '/__emulator/faults (body {"faults": "lost=0.3", "seed": 5}: change faults live).'
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8443, help="port (default 8443); 0 picks a free one"
    )
    parser.add_argument(
        "--schema",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="directory of describe JSON files adding or replacing objects (repeatable)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay every request")
    parser.add_argument("--faults", default="", metavar="SPEC", help="inject faults (see below)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible faults")
    parser.add_argument(
        "--daily-api-limit",
        type=int,
        default=DEFAULT_DAILY_API_LIMIT,
        help=f"API calls before 403 REQUEST_LIMIT_EXCEEDED (default {DEFAULT_DAILY_API_LIMIT})",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write {instance_url, access_token, ca_bundle} here once serving",
    )
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument(
        "--tls-dir",
        type=Path,
        default=DEFAULT_TLS_DIR,
        help=f"where the self-signed certificate is kept (default {DEFAULT_TLS_DIR})",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help="keep records and tokens in FILE across restarts",
    )
    parser.add_argument(
        "--credentials", type=Path, default=None, metavar="FILE", help="fixed credentials"
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append one JSON line per request to FILE (time, method, path, status, "
        "duration_ms, api_call; tokens and credential parameters are never written)",
    )


def load_describe_dir(directory: Path) -> list[dict[str, Any]]:
    """Describe dicts from *.json files (plain, or `sf sobject describe --json` output)."""
    if not directory.is_dir():
        raise ValueError(f"--schema {directory}: not a directory")
    describes = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--schema {path}: not readable JSON ({exc})") from None
        if isinstance(data, dict) and "result" in data and "status" in data:
            data = data["result"]
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError(f"--schema {path}: not a describe (no top-level 'name')")
        if not isinstance(data.get("fields"), list):
            raise ValueError(f"--schema {path}: describe of {data['name']} has no 'fields' list")
        for position, f in enumerate(data["fields"]):
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise ValueError(f"--schema {path}: fields[{position}] has no 'name'")
        describes.append(data)
    return describes


def load_credentials(path: Path | None) -> Credentials:
    if path is None:
        return Credentials()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--credentials {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--credentials {path}: expected a JSON object")
    unknown = set(data) - set(_CREDENTIAL_KEYS) - {"jwt_public_key_file"}
    if unknown:
        raise ValueError(f"--credentials {path}: unknown keys {', '.join(sorted(unknown))}")
    creds = Credentials(**{k: data[k] for k in _CREDENTIAL_KEYS if data.get(k) is not None})
    key_file = data.get("jwt_public_key_file")
    if key_file:
        key_path = (path.parent / key_file).resolve()
        creds.jwt_public_key = key_path.read_text(encoding="utf-8")
    return creds


class _Server(uvicorn.Server):
    """uvicorn's server, telling us once its sockets accept connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Any) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # An idle TLS keep-alive connection waits up to 30 s for the client's
        # close_notify on a polite close; abort idle ones so SIGTERM stops promptly.
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()
        await super().shutdown(sockets)
        # uvicorn re-raises the stopping signal afterwards (dying "by SIGTERM", or a
        # KeyboardInterrupt traceback on ^C); a clean shutdown should just exit 0.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _module_available(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    try:
        spec = parse_faults(args.faults)
        credentials = load_credentials(args.credentials)
        extra_describes = [d for dir_ in args.schema for d in load_describe_dir(Path(dir_))]
    except ValueError as exc:
        print(f"sf-activation emulator: {exc}", file=sys.stderr)
        return 2
    faults = Faults(spec, seed=args.seed, latency_ms=args.latency_ms)
    # No hook at all without lock faults: one call per record saved on the write path.
    lock_failure = faults.lock_failure if spec.lock else None
    org = Org(builtin_describes().values(), lock_failure=lock_failure)
    for describe in extra_describes:
        org.add_describe(describe)
    ctx = Context(org, faults, daily_api_limit=args.daily_api_limit, credentials=credentials)
    saver: Saver | None = None
    if args.state is not None:
        try:
            load_state(args.state, ctx)
        except ValueError as exc:
            print(f"sf-activation emulator: {exc}", file=sys.stderr)
            return 2
        args.state.parent.mkdir(parents=True, exist_ok=True)
        saver = Saver(args.state, ctx)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"sf-activation emulator: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 2
    port = sock.getsockname()[1]
    ssl_kwargs: dict[str, Any] = {}
    ca_bundle: str | None = None
    scheme = "http"
    if not args.no_tls:
        cert, key = ensure_certificate(args.tls_dir, args.host)
        ssl_kwargs = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        ca_bundle = str(cert.resolve())
        scheme = "https"
    ctx.instance_url = f"{scheme}://{_url_host(args.host)}:{port}"
    access_token = new_access_token(org.org_id)
    ctx.issue_token(access_token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if saver is None:
            yield
            return
        async with saver.running():
            yield

    def on_ready() -> None:
        if args.ready_file is not None:
            _write_json_atomic(
                args.ready_file,
                {
                    "instance_url": ctx.instance_url,
                    "access_token": access_token,
                    "ca_bundle": ca_bundle,
                },
            )
        print(
            f"Salesforce emulator serving {ctx.instance_url}"
            + (f" (CA bundle {ca_bundle})" if ca_bundle else ""),
            flush=True,
        )

    config = uvicorn.Config(
        build_app(ctx, lifespan=lifespan, request_log=args.log),
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
        http="httptools" if _module_available("httptools") else "h11",
        loop="uvloop" if _module_available("uvloop") else "asyncio",
        timeout_keep_alive=60,
        timeout_graceful_shutdown=5,
        **ssl_kwargs,
    )
    server = _Server(config, on_ready)
    server.run(sockets=[sock])
    return 0
