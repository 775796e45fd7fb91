"""HTTP for Salesforce API calls: urllib3's connection pools, used directly.

requests spends about 0.2–0.3 ms of CPU per call above urllib3 (merging session settings,
runtime protocol checks, cookie jars). At 5,000 sObject Collections calls per million
rows that was a sixth of the client's CPU, all of it holding the GIL the sending threads
share. API calls therefore go through urllib3; the rare token requests stay on requests,
which simple-salesforce's login flows need.

Transport failures are raised as urllib3 exceptions (`urllib3.exceptions.SSLError` for
TLS, `urllib3.exceptions.HTTPError` for everything else); `SalesforceSession` turns them
into its typed errors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import unquote, urlencode

import certifi
import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util.ssl_ import create_urllib3_context

from sf_activation.salesforce.errors import TransientError

try:
    from orjson import dumps as _dumps
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    import json

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads

USER_AGENT = "sf-activation"

log = logging.getLogger(__name__)


class RequestObserver(Protocol):
    """Told about every API call after it is answered (or failed on the wire): the run's
    request inspector (`sf_activation.inspector.RequestLog`). Called on the sending
    thread; must be quick and thread-safe. Never given the request headers (the bearer
    token is in them)."""

    def observe(
        self,
        method: str,
        url: str,
        *,
        duration_s: float,
        response: ApiResponse | None,
        error: BaseException | None,
        json: Any,
        data: Any,
        stream: bool,
    ) -> None: ...


class ApiResponse:
    """What callers read of a response: status, headers, body (whole or streamed)."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str) -> None:
        self._raw = raw
        self._url = url
        self.status_code = raw.status
        self.headers: Mapping[str, str] = raw.headers

    @property
    def content(self) -> bytes:
        return self._raw.data

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        return _loads(self.content)

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body in chunks, for results too large to hold (`stream=True`)."""
        try:
            yield from self._raw.stream(chunk_size)
        except HTTPError as exc:  # connection dropped mid-body: read it again
            raise TransientError(
                f"reading {self._url.split('?', 1)[0]} failed: {type(exc).__name__}",
                url=self._url,
            ) from None

    def close(self) -> None:
        self._raw.close()
        self._raw.release_conn()

    def __enter__(self) -> ApiResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ApiHttp:
    """Pooled, thread-safe HTTPS for API calls; one pool manager per proxy (or none)."""

    def __init__(self, *, verify: str | bool, timeout: tuple[float, float], pool_size: int):
        self.timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._options: dict[str, Any] = {"maxsize": pool_size, "block": False}
        if verify is False:
            self._options["cert_reqs"] = "CERT_NONE"
        else:
            # requests' default trust store when no bundle is given, so behaviour does not
            # change with the HTTP library. Loaded once into one context that every
            # connection shares: given as `ca_certs`, urllib3 parses the whole bundle again
            # for each new connection (about 20 ms of CPU, holding the GIL, where the
            # handshake itself takes 1 ms), and a send opens one per concurrent call.
            context = create_urllib3_context()
            context.load_verify_locations(
                cafile=verify if isinstance(verify, str) else certifi.where()
            )
            self._options["ssl_context"] = context
        self._direct = urllib3.PoolManager(num_pools=4, **self._options)
        self._via_proxy: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()
        # Every call passes here, so this is where a run's request log listens.
        self.observers: list[RequestObserver] = []

    def _manager(self, url: str, proxies: Mapping[str, str]) -> urllib3.PoolManager:
        scheme = url.split(":", 1)[0]
        proxy = proxies.get(scheme) or proxies.get("all")
        if not proxy:
            return self._direct
        with self._lock:
            manager = self._via_proxy.get(proxy)
            if manager is None:
                manager = self._via_proxy[proxy] = _proxy_manager(proxy, self._options)
        return manager

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        proxies: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        stream: bool = False,
    ) -> ApiResponse:
        all_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip", **headers}
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        body: Any = data
        if json is not None:
            body = _dumps(json)
            all_headers.setdefault("Content-Type", "application/json")
        elif hasattr(data, "read"):
            # A file streamed from disk: send its length rather than chunked encoding,
            # which Salesforce's upload endpoints do not all accept.
            all_headers["Content-Length"] = str(_remaining_length(data))
        started = time.perf_counter()
        try:
            raw = self._manager(url, proxies).request(
                method,
                url,
                body=body,
                headers=all_headers,
                timeout=self.timeout,
                retries=False,  # the session and its callers decide what is retried
                preload_content=not stream,
            )
        except BaseException as exc:
            self._notify(method, url, started, None, exc, json, data, stream)
            raise
        response = ApiResponse(raw, url)
        self._notify(method, url, started, response, None, json, data, stream)
        return response

    def _notify(
        self,
        method: str,
        url: str,
        started: float,
        response: ApiResponse | None,
        error: BaseException | None,
        json: Any,
        data: Any,
        stream: bool,
    ) -> None:
        if not self.observers:
            return
        duration = time.perf_counter() - started
        for observer in list(self.observers):
            try:
                observer.observe(
                    method,
                    url,
                    duration_s=duration,
                    response=response,
                    error=error,
                    json=json,
                    data=data,
                    stream=stream,
                )
            except Exception as exc:  # a log that fails must never fail the call
                log.debug("request observer failed: %s", type(exc).__name__)

    def close(self) -> None:
        self._direct.clear()
        for manager in self._via_proxy.values():
            manager.clear()


def _proxy_manager(proxy: str, options: dict[str, Any]) -> urllib3.ProxyManager:
    """A pool manager through `proxy`; credentials in its URL become Proxy-Authorization,
    as requests does (urllib3 would otherwise send none)."""
    parsed = urllib3.util.parse_url(proxy)
    headers = None
    if parsed.auth:
        headers = urllib3.make_headers(proxy_basic_auth=unquote(parsed.auth))
        proxy = parsed._replace(auth=None).url
    # An HTTPS proxy's certificate is checked against the same trust as the org's.
    tls = {"proxy_ssl_context": options["ssl_context"]} if "ssl_context" in options else {}
    return urllib3.ProxyManager(proxy, num_pools=4, proxy_headers=headers, **tls, **options)


def _remaining_length(stream: Any) -> int:
    return os.fstat(stream.fileno()).st_size - stream.tell()
