"""OAuth 2.0 token endpoint, userinfo and identity URLs, token extraction.

The instance URL doubles as the login URL. Any credentials are accepted and earn a
fresh token unless fixed credentials were configured (`--credentials FILE`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sf_activation.emulator.context import LATEST_API_VERSION, Context
from sf_activation.emulator.request_log import client_calls
from sf_activation.emulator.responses import json_response

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "._"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_SIGNING_KEY = b"sf-activation-emulator"


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> Response:
        body = {"error": self.error, "error_description": self.description}
        return json_response(body, self.status)


def new_access_token(org_id: str) -> str:
    """`00D…!…`: the org id's 15 characters, `!`, then an opaque session part."""
    session = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(96))
    return f"{org_id[:15]}!{session}"


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session id from `Authorization: Bearer|OAuth …` or Bulk's `X-SFDC-Session`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() in ("bearer", "oauth"):
                return token.strip() or None
        elif name == b"x-sfdc-session":
            return value.decode("latin-1").strip() or None
    return None


def identity_url(ctx: Context) -> str:
    return f"{ctx.instance_url}/id/{ctx.org.org_id}/{ctx.org.user_id}"


def _token_body(ctx: Context, token: str, *, refresh: str | None, jwt_flow: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": token,
        "instance_url": ctx.instance_url,
        "id": identity_url(ctx),
        "token_type": "Bearer",
        "scope": "api refresh_token full" if not jwt_flow else "api full",
    }
    if refresh:
        body["refresh_token"] = refresh
    if not jwt_flow:
        # issued_at is epoch milliseconds as a string; JWT responses may leave both out.
        issued_at = str(int(time.time() * 1000))
        body["issued_at"] = issued_at
        digest = hmac.new(_SIGNING_KEY, (body["id"] + issued_at).encode(), hashlib.sha256)
        body["signature"] = base64.b64encode(digest.digest()).decode()
    return body


def _client(form: dict[str, str], request: Request) -> tuple[str | None, str | None]:
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
            basic_id, _, basic_secret = decoded.partition(":")
            client_id = client_id or basic_id
            client_secret = client_secret or basic_secret
        except (ValueError, UnicodeDecodeError):
            raise OAuthError("invalid_client", "invalid client credentials") from None
    return client_id, client_secret


def _check_client(
    ctx: Context, client_id: str | None, client_secret: str | None, *, need_secret: bool
) -> None:
    creds = ctx.credentials
    if not client_id and (need_secret or creds.client_id):
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if creds.client_id is not None and client_id != creds.client_id:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if need_secret and not client_secret:
        raise OAuthError("invalid_client", "invalid client credentials")
    if (
        creds.client_secret is not None
        and client_secret is not None
        and not hmac.compare_digest(client_secret, creds.client_secret)
    ):
        raise OAuthError("invalid_client", "invalid client credentials")


def _check_jwt(ctx: Context, assertion: str | None) -> None:
    import jwt  # only JWT logins pay for importing it (a noticeable part of start-up)

    if not assertion:
        raise OAuthError("invalid_request", "assertion parameter is missing")
    creds = ctx.credentials
    try:
        if creds.jwt_public_key:
            claims = jwt.decode(
                assertion,
                creds.jwt_public_key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False},
            )
        else:
            claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise OAuthError("invalid_grant", "invalid assertion") from None
    for claim in ("iss", "sub", "aud", "exp"):
        if claim not in claims:
            if claim == "aud":
                raise OAuthError("invalid_grant", "audience is invalid")
            raise OAuthError("invalid_grant", "invalid assertion")
    try:
        expired = float(claims["exp"]) < time.time()
    except (TypeError, ValueError):
        expired = True
    if expired:
        raise OAuthError("invalid_grant", "expired authorization code")
    if creds.client_id is not None and claims["iss"] != creds.client_id:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if creds.username is not None and claims["sub"] != creds.username:
        raise OAuthError("invalid_grant", "user hasn't approved this consumer")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for key, value in request.query_params.items():
        form.setdefault(key, value)
    return form


def token_routes(ctx: Context) -> list[Route]:
    async def token(request: Request) -> Response:
        form = await _form(request)
        grant = form.get("grant_type", "")
        creds = ctx.credentials
        try:
            client_id, client_secret = _client(form, request)
            refresh: str | None = None
            if grant == "refresh_token":
                _check_client(ctx, client_id, client_secret, need_secret=False)
                given = form.get("refresh_token")
                if not given or (
                    creds.refresh_token is not None
                    and not hmac.compare_digest(given, creds.refresh_token)
                ):
                    raise OAuthError("invalid_grant", "expired access/refresh token")
            elif grant == "password":
                _check_client(ctx, client_id, client_secret, need_secret=False)
                username, password = form.get("username"), form.get("password")
                if not username or not password:
                    raise OAuthError("invalid_grant", "authentication failure")
                if creds.username is not None and username != creds.username:
                    raise OAuthError("invalid_grant", "authentication failure")
                # A security token may follow the password, as Salesforce expects.
                if creds.password is not None and not password.startswith(creds.password):
                    raise OAuthError("invalid_grant", "authentication failure")
                refresh = None
            elif grant == "client_credentials":
                _check_client(ctx, client_id, client_secret, need_secret=True)
            elif grant == JWT_GRANT:
                _check_jwt(ctx, form.get("assertion"))
            elif not grant:
                raise OAuthError("unsupported_grant_type", "grant type not supported")
            else:
                raise OAuthError("unsupported_grant_type", "grant type not supported")
        except OAuthError as error:
            return error.response()
        access = new_access_token(ctx.org.org_id)
        ctx.issue_token(access)
        # Which connected app holds the token: /__emulator/stats counts API calls per client.
        client_calls(ctx.extra).remember(access, client_id)
        return json_response(_token_body(ctx, access, refresh=refresh, jwt_flow=grant == JWT_GRANT))

    async def revoke(request: Request) -> Response:
        form = await _form(request)
        token_value = form.get("token")
        if token_value and token_value in ctx.tokens:
            with ctx.lock:
                ctx.tokens.pop(token_value, None)
                ctx.tokens_version += 1
        return Response(status_code=200)

    return [
        Route("/services/oauth2/token", token, methods=["POST"]),
        Route("/services/oauth2/revoke", revoke, methods=["POST", "GET"]),
    ]


def identity_routes(ctx: Context) -> list[Route]:
    """Token-protected identity endpoints (not counted as API calls)."""

    def _user() -> dict[str, Any]:
        return ctx.org.get("User", ctx.org.user_id) or {} if ctx.org.schema("User") else {}

    def _urls(version: str = LATEST_API_VERSION) -> dict[str, str]:
        base, org_id = ctx.instance_url, ctx.org.org_id
        data = f"{base}/services/data/v{version}"
        return {
            "enterprise": f"{base}/services/Soap/c/{version}/{org_id}",
            "metadata": f"{base}/services/Soap/m/{version}/{org_id}",
            "partner": f"{base}/services/Soap/u/{version}/{org_id}",
            "rest": f"{data}/",
            "sobjects": f"{data}/sobjects/",
            "search": f"{data}/search/",
            "query": f"{data}/query/",
            "recent": f"{data}/recent/",
            "tooling_soap": f"{base}/services/Soap/T/{version}/{org_id}",
            "tooling_rest": f"{data}/tooling/",
            "profile": f"{base}/{ctx.org.user_id}",
            "custom_domain": base,
        }

    def _identity() -> dict[str, Any]:
        user = _user()
        username = user.get("Username", ctx.org.username)
        return {
            "user_id": ctx.org.user_id,
            "organization_id": ctx.org.org_id,
            "preferred_username": username,
            "nickname": user.get("Alias", "admin"),
            "name": user.get("Name", "Emulator Admin"),
            "email": user.get("Email", username),
            "email_verified": True,
            "given_name": user.get("FirstName", "Emulator"),
            "family_name": user.get("LastName", "Admin"),
            "zoneinfo": "America/Los_Angeles",
            "photos": {},
            "profile": f"{ctx.instance_url}/{ctx.org.user_id}",
            "picture": None,
            "address": {"country": "US"},
            "is_salesforce_integration_user": False,
            "urls": _urls(),
            "active": True,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": -28800000,
            "updated_at": user.get("LastModifiedDate", ""),
            "is_app_installed": True,
        }

    async def userinfo(request: Request) -> Response:
        return json_response({"sub": identity_url(ctx), **_identity()})

    async def identity(request: Request) -> Response:
        body = _identity()
        return json_response(
            {
                "id": identity_url(ctx),
                "asserted_user": True,
                "username": body["preferred_username"],
                "display_name": body["name"],
                **body,
            }
        )

    return [
        Route("/services/oauth2/userinfo", userinfo, methods=["GET", "POST"]),
        Route("/id/{org_id}/{user_id}", identity, methods=["GET"]),
    ]
