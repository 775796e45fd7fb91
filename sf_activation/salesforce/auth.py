"""Authentication and the pooled HTTP session every other module talks through.

Flows (chosen by `SalesforceSettings.auth_flow`): a ready access token, OAuth refresh
token, JWT bearer (private key file), client credentials (My Domain only) and password
(OAuth password grant with a client id; SOAP login through simple-salesforce without one).

simple-salesforce is used where it fits: the SOAP login (imported by that flow alone:
the package imports its whole client, zeep and httpx included, about 0.3 s). Its OAuth
helpers are not used because they build `https://{domain}.salesforce.com` URLs themselves
(no way to reach a My Domain with a custom host, a proxy or the local emulator) and have
no refresh-token grant, so the token requests are written here; `Sforce-Limit-Info`, read
on every answer, is parsed here as simple-salesforce parses it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import ssl
import tempfile
import threading
import time
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
import urllib3
from pydantic import BaseModel, ConfigDict, SecretStr
from requests.adapters import HTTPAdapter

from sf_activation.config import SalesforceSettings
from sf_activation.salesforce.errors import (
    ApiLimitError,
    AuthenticationError,
    SalesforceError,
    SessionExpiredError,
    TransientError,
    error_from_response,
    redact,
)
from sf_activation.salesforce.http import ApiHttp, ApiResponse

log = logging.getLogger(__name__)

try:  # several times faster than json on 200-result Collections answers
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    from json import loads as _loads

# Connect, read. Bulk result downloads and 200-record upserts on a busy org can take
# minutes; a hung socket must still end.
DEFAULT_TIMEOUT = (15.0, 300.0)
_GENERIC_LOGIN_HOSTS = {"login.salesforce.com", "test.salesforce.com"}
# Failures before any byte of the request left: safe to send again, whatever it was.
_NOT_SENT_ERRORS = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.NameResolutionError,
    ConnectionRefusedError,
)


# simple_salesforce.Salesforce.parse_api_usage's pattern for the daily usage, verbatim.
_API_USAGE = re.compile(r"[^-]?api-usage=(?P<used>\d+)/(?P<tot>\d+)")


def _parse_api_usage(header: str) -> tuple[int, int] | None:
    """(used, total) from a `Sforce-Limit-Info` header such as `api-usage=18/5000`."""
    m = _API_USAGE.match(header)
    return (int(m.group("used")), int(m.group("tot"))) if m else None


def _root_cause(exc: BaseException) -> BaseException:
    """The urllib3/OS error under requests' and urllib3's wrappers (ConnectionError →
    MaxRetryError → NewConnectionError), whose class name alone says nothing."""
    for _ in range(5):
        if isinstance(exc, requests.RequestException) and exc.args:
            inner = exc.args[0]
            if isinstance(inner, BaseException):
                exc = inner
                continue
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            exc = exc.reason
            continue
        break
    return exc


def _failure_text(exc: BaseException) -> str:
    """What went wrong on the wire, in words: 'connection refused', not a class name."""
    exc = _root_cause(exc)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer within the read timeout (the request may have been applied)"
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return "host name not found (DNS): check the URL's host"
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return "connection refused (nothing listens at that host and port)"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        detail = str(exc).rsplit(":", 1)[-1].strip()
        return f"unreachable ({detail})" if detail else "unreachable"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection closed without an answer (the request may have been applied)"
    return type(exc).__name__


class TokenResponse(BaseModel):
    """The OAuth token endpoint's answer (JWT answers may lack issued_at/signature)."""

    model_config = ConfigDict(extra="ignore")

    access_token: SecretStr
    instance_url: str
    token_type: str | None = None
    issued_at: str | None = None
    id: str | None = None


class ApiUsage(BaseModel):
    """Daily API requests used and allowed, from the last `Sforce-Limit-Info` header."""

    used: int
    total: int


def _trust_bundle(ca_bundle: Path) -> str:
    """A CA file trusting the public roots plus `ca_bundle` (an *extra* CA, not the only one)."""
    try:
        import certifi

        public = Path(certifi.where()).read_bytes()
    except Exception:  # certifi missing: trust the given bundle alone
        return str(ca_bundle)
    extra = ca_bundle.read_bytes()
    key = hashlib.sha256(public + b"\n" + extra).hexdigest()
    with _MERGED_LOCK:
        # One file per process and bundle (a Dagster worker opens many sessions), removed
        # when the process exits: no temporary file outlives the command.
        path = _MERGED_BUNDLES.get(key)
        if path is not None and Path(path).exists():
            return path
        with tempfile.NamedTemporaryFile(
            prefix="sf_activation_ca_", suffix=".pem", delete=False
        ) as merged:
            merged.write(public + b"\n" + extra)
        if not _MERGED_BUNDLES:
            atexit.register(_remove_merged_bundles)
        _MERGED_BUNDLES[key] = merged.name
        return merged.name


_MERGED_BUNDLES: dict[str, str] = {}
_MERGED_LOCK = threading.Lock()


def _remove_merged_bundles() -> None:
    for path in _MERGED_BUNDLES.values():
        with contextlib.suppress(OSError):
            os.unlink(path)
    _MERGED_BUNDLES.clear()


class SalesforceSession:
    """A thread-safe, pooled HTTP session with the bearer token of one org.

    API calls go through `ApiHttp` (urllib3); token requests through a `requests.Session`
    (`http`), which simple-salesforce's login flows take.

    `request()` re-authenticates and repeats once on 401 INVALID_SESSION_ID, counts API
    calls, reads `Sforce-Limit-Info`, and raises the typed errors of `errors.py`.
    """

    def __init__(
        self,
        settings: SalesforceSettings,
        *,
        timeout: tuple[float, float] | None = None,
        pool_size: int = 32,
    ) -> None:
        self.settings = settings
        timeout = timeout or (DEFAULT_TIMEOUT[0], settings.read_timeout_s)
        self.timeout = timeout
        self.api_version = settings.api_version
        self.http = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)
        # Passed on every request: a session-level `verify` would lose to REQUESTS_CA_BUNDLE.
        self.verify: str | bool = True
        if settings.ca_bundle is not None:
            self.verify = _trust_bundle(Path(settings.ca_bundle))
        self.http.verify = self.verify
        self.http.headers["Accept-Encoding"] = "gzip"
        # requests re-reads proxy variables and netrc from the environment on every call
        # (about 1 ms each); they are read once per host instead.
        self.http.trust_env = False
        self._proxies: dict[str, dict[str, str]] = {}
        try:
            self.api_http = ApiHttp(verify=self.verify, timeout=timeout, pool_size=pool_size)
        except ssl.SSLError:  # the trust is loaded here, once, not per connection
            where = (
                f"SALESFORCE_CA_BUNDLE={settings.ca_bundle}"
                if settings.ca_bundle is not None
                else "the public CA bundle (certifi)"
            )
            raise SalesforceError(
                f"{where} holds something that is not a PEM certificate; "
                "point it at the CA's certificate in PEM form (-----BEGIN CERTIFICATE-----)"
            ) from None
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_generation = 0
        self.instance_url: str | None = (settings.instance_url or "").rstrip("/") or None
        if settings.access_token is not None:
            self._token = settings.access_token.get_secret_value()
        self._api_calls = 0
        self._usage: ApiUsage | None = None
        # Calls sent whose answer has not come back: the last header cannot include them,
        # so the day's usage is at least header + these (conservative, never under).
        self._in_flight = 0

    @classmethod
    def from_settings(cls, settings: SalesforceSettings, **kwargs: Any) -> SalesforceSession:
        return cls(settings, **kwargs)

    # -- secrets -----------------------------------------------------------------------

    def _secrets(self) -> tuple[str, ...]:
        s = self.settings
        values = [self._token or ""]
        for secret in (s.access_token, s.client_secret, s.refresh_token, s.password):
            if secret is not None:
                values.append(secret.get_secret_value())
        if s.security_token is not None:
            values.append(s.security_token.get_secret_value())
        return tuple(v for v in values if v)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets())

    # -- counters ----------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        """REST/Bulk calls sent through this session (token requests excluded)."""
        return self._api_calls

    @property
    def authentications(self) -> int:
        """Tokens fetched so far (the first login plus every renewal)."""
        return self._token_generation

    @property
    def api_usage(self) -> ApiUsage | None:
        return self._usage

    def check_budget(self, calls: int = 1) -> None:
        """Raise `ApiLimitError` if `calls` more would exceed the allowed share of the day."""
        with self._lock:
            self._check_budget_locked(calls)

    def _check_budget_locked(self, calls: int) -> None:
        usage = self._usage
        if usage is None or usage.total <= 0:
            return
        share = self.settings.max_api_usage_share
        allowed = int(usage.total * share)
        used = usage.used + self._in_flight
        if used + calls > allowed:
            raise ApiLimitError(
                f"API budget reached: {used} of {usage.total} daily API calls used, "
                f"the limit for this run is {share:.0%} ({allowed})",
                error_code="API_BUDGET_REACHED",
            )

    def _record_usage(self, response: ApiResponse) -> None:
        """Take the usage header of an answer and release its in-flight reservation."""
        header = response.headers.get("Sforce-Limit-Info")
        parsed = _parse_api_usage(header) if header else None
        with self._lock:
            self._in_flight -= 1
            if parsed is None:
                return
            used, total = parsed
            # Answers arrive out of order under concurrency: the highest count is newest.
            if self._usage is None or used >= self._usage.used:
                self._usage = ApiUsage(used=used, total=total)

    # -- authentication ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.instance_url is None:
            self.authenticate()
        return f"{self.instance_url}/services/data/v{self.api_version}/"

    def authenticate(self, *, stale_generation: int | None = None) -> bool:
        """Get a fresh access token; concurrent callers with the same stale token share one.

        Returns whether this call fetched it (False: another thread already had).
        """
        with self._lock:
            if stale_generation is not None and stale_generation != self._token_generation:
                return False
            token, instance_url = self._fetch_token()
            self._token = token
            self.instance_url = instance_url.rstrip("/")
            self._token_generation += 1
        log.info(
            "authenticated to Salesforce (%s flow) at %s", self.settings.auth_flow, instance_url
        )
        return True

    def _fetch_token(self) -> tuple[str, str]:
        s = self.settings
        flow = s.auth_flow
        login = s.login_url.rstrip("/")
        token_url = f"{login}/services/oauth2/token"
        if flow == "refresh_token":
            data = {
                "grant_type": "refresh_token",
                "refresh_token": s.refresh_token.get_secret_value(),  # type: ignore[union-attr]
                "client_id": s.client_id or "",
            }
            if s.client_secret is not None:
                data["client_secret"] = s.client_secret.get_secret_value()
            return self._token_request(token_url, data)
        if flow == "jwt_bearer":
            try:
                key = Path(s.private_key_file).read_bytes()  # type: ignore[arg-type]
            except OSError as exc:
                raise AuthenticationError(
                    f"cannot read SALESFORCE_PRIVATE_KEY_FILE {s.private_key_file}: {exc.strerror}"
                ) from None
            claims = {
                "iss": s.client_id or "",
                "sub": s.username,
                "aud": login,
                "exp": int(time.time()) + 180,
            }
            import jwt  # with cryptography, ~0.1 s: only this flow signs anything

            try:
                assertion = jwt.encode(claims, key, algorithm="RS256")
            except Exception as exc:  # a malformed key: never echo its content
                raise AuthenticationError(
                    f"cannot sign the JWT with {s.private_key_file}: {type(exc).__name__}"
                ) from None
            data = {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            }
            return self._token_request(token_url, data)
        if flow == "client_credentials":
            host = urlparse(login).hostname or ""
            if host in _GENERIC_LOGIN_HOSTS:
                raise AuthenticationError(
                    "the client credentials flow needs a My Domain SALESFORCE_LOGIN_URL "
                    f"(https://<domain>.my.salesforce.com), not {login}"
                )
            data = {
                "grant_type": "client_credentials",
                "client_id": s.client_id or "",
                "client_secret": s.client_secret.get_secret_value(),  # type: ignore[union-attr]
            }
            return self._token_request(token_url, data)
        if flow == "password":
            password = s.password.get_secret_value()  # type: ignore[union-attr]
            if s.security_token is not None:
                password += s.security_token.get_secret_value()
            if s.client_id:
                data = {
                    "grant_type": "password",
                    "client_id": s.client_id,
                    "username": s.username or "",
                    "password": password,
                }
                if s.client_secret is not None:
                    data["client_secret"] = s.client_secret.get_secret_value()
                return self._token_request(token_url, data)
            return self._soap_login(login, s.username or "", password)
        if flow == "access_token":
            raise AuthenticationError(
                "the access token was refused (expired or revoked) and no refresh token, "
                "private key, password or client secret is configured to get a new one"
            )
        raise AuthenticationError(
            "no Salesforce credentials: set SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, "
            "or a refresh token, JWT key, password or client credentials"
        )

    def _token_request(self, url: str, data: dict[str, str]) -> tuple[str, str]:
        try:
            response = self.http.post(
                url,
                data=data,
                timeout=self.timeout,
                verify=self.verify,
                proxies=self._proxies_for(url),
            )
        except requests.exceptions.SSLError:
            raise SalesforceError(
                f"TLS verification failed for {url}; if the org sits behind a private CA, "
                "set SALESFORCE_CA_BUNDLE"
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach the Salesforce token endpoint {url}: {_failure_text(exc)}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientError(
                    f"token endpoint answered HTTP {response.status_code}",
                    status=response.status_code,
                )
            code = body.get("error") if isinstance(body, dict) else None
            desc = body.get("error_description") if isinstance(body, dict) else None
            raise AuthenticationError(
                self.redact(
                    f"Salesforce refused the {self.settings.auth_flow} login at {url}: "
                    f"{code or 'HTTP ' + str(response.status_code)}"
                    + (f" ({desc})" if desc else "")
                ),
                status=response.status_code,
                error_code=code,
            )
        token = TokenResponse.model_validate(body)
        return token.access_token.get_secret_value(), token.instance_url

    def _soap_login(self, login: str, username: str, password: str) -> tuple[str, str]:
        body = f"""<?xml version="1.0" encoding="utf-8" ?>
<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:urn="urn:partner.soap.sforce.com">
    <env:Body>
        <n1:login xmlns:n1="urn:partner.soap.sforce.com">
            <n1:username>{escape(username)}</n1:username>
            <n1:password>{escape(password)}</n1:password>
        </n1:login>
    </env:Body>
</env:Envelope>"""
        headers = {"content-type": "text/xml", "charset": "UTF-8", "SOAPAction": "login"}
        url = f"{login}/services/Soap/u/{self.api_version}"
        # Only this flow needs simple-salesforce (see the module docstring).
        from simple_salesforce.exceptions import SalesforceAuthenticationFailed
        from simple_salesforce.login import soap_login

        try:
            session_id, host = soap_login(url, body, headers, self._proxies_for(url), self.http)
        except SalesforceAuthenticationFailed as exc:
            raise AuthenticationError(
                self.redact(f"Salesforce refused the password login at {url}: {exc.code}")
            ) from None
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach {url}: {_failure_text(exc)}") from None
        scheme = urlparse(login).scheme or "https"
        return session_id, f"{scheme}://{host}"

    # -- requests ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL: `path` relative to the versioned base, or starting at `/services`."""
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith("/"):
            if self.instance_url is None:
                self.authenticate()
            return f"{self.instance_url}{path}"
        return self.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        check_budget: bool = True,
        stream: bool = False,
        **kwargs: Any,
    ) -> ApiResponse:
        """Send one API call; returns a 2xx response or raises a typed `SalesforceError`.

        `kwargs`: `params`, `json` or `data` (bytes or a file streamed from disk), `headers`.
        """
        if self._token is None:
            self.authenticate()
        url = self.url(path)
        extra_headers = dict(kwargs.pop("headers", None) or {})
        renewed_here = False
        for attempt in (1, 2, 3):
            with self._lock:
                # Check and reserve together, so concurrent senders cannot all pass the
                # check with the last call of the budget.
                if check_budget:
                    self._check_budget_locked(1)
                token = self._token
                generation = self._token_generation
                self._api_calls += 1
                self._in_flight += 1
            headers = {**extra_headers, "Authorization": f"Bearer {token}"}
            try:
                response = self._send(method, url, headers, stream, kwargs)
            except BaseException:
                with self._lock:
                    self._in_flight -= 1
                raise
            self._record_usage(response)
            if response.status_code < 400:
                return response
            try:
                body = response.json()
            except ValueError:
                body = None
            error = error_from_response(response.status_code, body, url, self._secrets())
            # Re-authenticate and repeat once. A token this thread fetched and that is refused
            # at once means the credentials are bad: stop. A token another thread fetched a
            # while ago may itself have expired since (short session timeouts under load),
            # so that case earns this thread its own renewal, still bounded to 3 tries.
            if isinstance(error, SessionExpiredError) and not renewed_here and attempt < 3:
                log.info("Salesforce session expired; re-authenticating and repeating the call")
                renewed_here = self.authenticate(stale_generation=generation)
                if hasattr(kwargs.get("data"), "seek"):
                    kwargs["data"].seek(0)  # a streamed upload must start over
                continue
            if isinstance(error, SessionExpiredError):
                raise AuthenticationError(str(error), status=401, error_code="INVALID_SESSION_ID")
            raise error
        raise SalesforceError("unreachable")  # pragma: no cover

    def _proxies_for(self, url: str) -> dict[str, str]:
        host = urlparse(url).netloc
        proxies = self._proxies.get(host)
        if proxies is None:
            # Honours HTTPS_PROXY / NO_PROXY like requests would, once per host.
            proxies = self._proxies[host] = requests.utils.get_environ_proxies(url)
        return proxies

    def _send(
        self, method: str, url: str, headers: dict[str, str], stream: bool, kwargs: dict[str, Any]
    ) -> ApiResponse:
        try:
            return self.api_http.request(
                method,
                url,
                headers=headers,
                proxies=self._proxies_for(url),
                stream=stream,
                **kwargs,
            )
        except urllib3.exceptions.SSLError:
            # Not transient: retrying cannot fix an untrusted certificate.
            raise SalesforceError(
                f"TLS verification failed for {url.split('?', 1)[0]}; if the org sits "
                "behind a private CA, set SALESFORCE_CA_BUNDLE",
                url=url,
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # The exception text can include the URL but never headers; still redact.
            # A connection that was never made carried no request; anything later (a reset,
            # a read timeout, a dropped answer) may have been applied by Salesforce.
            raise TransientError(
                self.redact(f"{method} {url.split('?', 1)[0]} failed: {_failure_text(exc)}"),
                url=url,
                maybe_applied=not isinstance(exc, _NOT_SENT_ERRORS),
            ) from None

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        content = response.content
        if response.status_code == 204 or not content:
            return None
        return _loads(content)

    def close(self) -> None:
        self.http.close()
        self.api_http.close()
