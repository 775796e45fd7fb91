"""OAuth, sessions and identity on the emulator, as clients and the Salesforce CLI use them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

V = "62.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_RE = re.compile(r"^00D[a-zA-Z0-9]{12}![A-Za-z0-9._]{20,}$")


def _rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def assertion(private_key: bytes, **claims: Any) -> str:
    base = {
        "iss": "client-id",
        "sub": "admin@example.com",
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, private_key, "RS256")


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return _rsa_pair()


def token(emu: EmulatorHandle, **form: str) -> requests.Response:
    return requests.post(
        emu.url("/services/oauth2/token"), data=form, verify=emu.ca_bundle, timeout=10
    )


def test_versions_need_no_session(emulator: EmulatorHandle) -> None:
    r = requests.get(emulator.url("/services/data/"), verify=emulator.ca_bundle, timeout=10)
    assert r.status_code == 200
    versions = r.json()
    assert {"label": "v62.0", "url": "/services/data/v62.0", "version": "62.0"} in versions
    assert "Sforce-Limit-Info" not in r.headers
    assert emulator.stats()["api_calls"] == 0


@pytest.mark.parametrize(
    "path",
    [f"/services/data/v{V}/limits/", f"/services/data/v{V}/sobjects/", "/__emulator/stats"],
)
@pytest.mark.parametrize("header", [None, "Bearer 00D000000000000!nope", "Bearer "])
def test_requests_without_a_valid_session_get_401(
    emulator: EmulatorHandle, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = requests.get(emulator.url(path), headers=headers, verify=emulator.ca_bundle, timeout=10)
    assert r.status_code == 401
    assert r.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def _assert_token_body(emu: EmulatorHandle, body: dict[str, Any], *, jwt_flow: bool = False) -> str:
    assert TOKEN_RE.match(body["access_token"]), body["access_token"]
    assert body["instance_url"] == emu.instance_url
    assert body["token_type"] == "Bearer"
    assert re.match(rf"^{re.escape(emu.instance_url)}/id/00D\w{{15}}/005\w{{15}}$", body["id"])
    if not jwt_flow:
        assert body["issued_at"].isdigit() and len(body["issued_at"]) == 13
        assert body["signature"]
    # The new token works.
    r = emu.session(body["access_token"]).get(emu.url(f"/services/data/v{V}/limits/"))
    assert r.status_code == 200
    return body["access_token"]


def test_any_credentials_earn_a_token_in_every_grant(
    emulator: EmulatorHandle, keys: tuple[bytes, bytes]
) -> None:
    grants = [
        {"grant_type": "refresh_token", "refresh_token": "5Aep861x", "client_id": "abc"},
        {
            "grant_type": "password",
            "client_id": "a",
            "client_secret": "b",
            "username": "u@x.com",
            "password": "pw",
        },
        {"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"},
    ]
    issued = set()
    for form in grants:
        r = token(emulator, **form)
        assert r.status_code == 200, r.text
        issued.add(_assert_token_body(emulator, r.json()))
    r = token(emulator, grant_type=JWT_GRANT, assertion=assertion(keys[0]))
    assert r.status_code == 200, r.text
    issued.add(_assert_token_body(emulator, r.json(), jwt_flow=True))
    assert len(issued) == 4  # a fresh token each time
    # Client id and secret may come as HTTP Basic instead of form fields.
    r = requests.post(
        emulator.url("/services/oauth2/token"),
        data={"grant_type": "client_credentials"},
        auth=("client", "secret"),
        verify=emulator.ca_bundle,
        timeout=10,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("form", "error", "description"),
    [
        ({}, "unsupported_grant_type", "grant type not supported"),
        (
            {"grant_type": "authorization_code", "code": "x"},
            "unsupported_grant_type",
            "grant type not supported",
        ),
        ({"grant_type": "refresh_token"}, "invalid_grant", "expired access/refresh token"),
        ({"grant_type": "password", "username": "u"}, "invalid_grant", "authentication failure"),
        (
            {"grant_type": "client_credentials", "client_id": "a"},
            "invalid_client",
            "invalid client credentials",
        ),
        ({"grant_type": JWT_GRANT}, "invalid_request", "assertion parameter is missing"),
        ({"grant_type": JWT_GRANT, "assertion": "not.a.jwt"}, "invalid_grant", "invalid assertion"),
    ],
)
def test_token_errors(
    emulator: EmulatorHandle, form: dict[str, str], error: str, description: str
) -> None:
    r = token(emulator, **form)
    assert r.status_code == 400
    assert r.json() == {"error": error, "error_description": description}


def test_jwt_claims_are_checked(emulator: EmulatorHandle, keys: tuple[bytes, bytes]) -> None:
    r = token(emulator, grant_type=JWT_GRANT, assertion=assertion(keys[0], aud=None))
    assert r.json() == {"error": "invalid_grant", "error_description": "audience is invalid"}
    r = token(
        emulator, grant_type=JWT_GRANT, assertion=assertion(keys[0], exp=int(time.time()) - 10)
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = token(emulator, grant_type=JWT_GRANT, assertion=assertion(keys[0], sub=None))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


@pytest.fixture(scope="module")
def fixed(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[bytes, bytes]
) -> Iterator[EmulatorHandle]:
    directory = tmp_path_factory.mktemp("fixed-credentials")
    (directory / "jwt.pub").write_bytes(keys[1])
    credentials = {
        "client_id": "the-client",
        "client_secret": "the-secret",
        "username": "admin@example.com",
        "password": "hunter2",
        "refresh_token": "the-refresh-token",
        "jwt_public_key_file": "jwt.pub",
    }
    path = directory / "credentials.json"
    path.write_text(json.dumps(credentials))
    with start_emulator(directory, "--credentials", str(path)) as handle:
        yield handle


def test_fixed_credentials_must_match(fixed: EmulatorHandle, keys: tuple[bytes, bytes]) -> None:
    good = {"client_id": "the-client", "client_secret": "the-secret"}
    ok = token(fixed, grant_type="refresh_token", refresh_token="the-refresh-token", **good)
    assert ok.status_code == 200, ok.text
    cases = [
        ({"grant_type": "refresh_token", "refresh_token": "other", **good}, "invalid_grant"),
        (
            {"grant_type": "refresh_token", "refresh_token": "the-refresh-token", "client_id": "x"},
            "invalid_client_id",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "the-client", "client_secret": "no"},
            "invalid_client",
        ),
        (
            {
                "grant_type": "password",
                "username": "admin@example.com",
                "password": "wrong",
                **good,
            },
            "invalid_grant",
        ),
        (
            {
                "grant_type": "password",
                "username": "other@example.com",
                "password": "hunter2",
                **good,
            },
            "invalid_grant",
        ),
    ]
    for form, error in cases:
        r = token(fixed, **form)
        assert (r.status_code, r.json()["error"]) == (400, error), form
    # Password followed by a security token is what Salesforce expects.
    r = token(
        fixed, grant_type="password", username="admin@example.com", password="hunter2TOKEN", **good
    )
    assert r.status_code == 200
    # JWT: signature checked against the configured key, iss and sub against the file.
    signed = assertion(keys[0], iss="the-client")
    assert token(fixed, grant_type=JWT_GRANT, assertion=signed).status_code == 200
    other_key = _rsa_pair()[0]
    r = token(fixed, grant_type=JWT_GRANT, assertion=assertion(other_key, iss="the-client"))
    assert r.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}
    r = token(
        fixed, grant_type=JWT_GRANT, assertion=assertion(keys[0], iss="the-client", sub="x@y.z")
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_salesforce_cli_login_sequence(emulator: EmulatorHandle) -> None:
    """What `sf org login` does after the browser/JWT step, in order."""
    r = token(emulator, grant_type="refresh_token", refresh_token="x", client_id="PlatformCLI")
    assert r.status_code == 200
    access = r.json()["access_token"]
    http = emulator.session(access)
    info = http.get(emulator.url("/services/oauth2/userinfo"))
    assert info.status_code == 200
    user_id, org_id = info.json()["user_id"], info.json()["organization_id"]
    assert user_id.startswith("005") and org_id.startswith("00D")
    assert info.json()["sub"].endswith(f"/id/{org_id}/{user_id}")
    assert http.get(r.json()["id"]).json()["username"] == info.json()["preferred_username"]
    user = http.get(emulator.url(f"/services/data/v{V}/sobjects/User/{user_id}"))
    assert user.status_code == 200
    assert user.json()["Username"] == info.json()["preferred_username"]
    assert user.json()["attributes"] == {
        "type": "User",
        "url": f"/services/data/v{V}/sobjects/User/{user_id}",
    }
    soql = "SELECT Name, InstanceName, IsSandbox, OrganizationType, TrialExpirationDate, NamespacePrefix FROM Organization"
    org = http.get(emulator.url(f"/services/data/v{V}/query"), params={"q": soql})
    assert org.status_code == 200, org.text
    (record,) = org.json()["records"]
    assert record["attributes"]["type"] == "Organization"
    assert record["IsSandbox"] is False and record["Name"]
    # Identity calls are not API calls; the two data calls are.
    assert emulator.stats()["api_calls"] == 2


def test_revoke_ends_a_session(emulator: EmulatorHandle) -> None:
    access = token(emulator, grant_type="password", username="u", password="p").json()[
        "access_token"
    ]
    r = requests.post(
        emulator.url("/services/oauth2/revoke"),
        data={"token": access},
        verify=emulator.ca_bundle,
        timeout=10,
    )
    assert r.status_code == 200
    assert (
        emulator.session(access).get(emulator.url(f"/services/data/v{V}/limits/")).status_code
        == 401
    )


def test_session_ttl_expires_tokens_and_refresh_recovers(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--faults", "session_ttl=1") as emu:
        http = emu.session()
        assert http.get(emu.url(f"/services/data/v{V}/limits/")).status_code == 200
        time.sleep(1.2)
        r = http.get(emu.url(f"/services/data/v{V}/limits/"))
        assert r.status_code == 401
        assert r.json()[0]["errorCode"] == "INVALID_SESSION_ID"
        fresh = token(emu, grant_type="refresh_token", refresh_token="r", client_id="c").json()
        r = emu.session(fresh["access_token"]).get(emu.url(f"/services/data/v{V}/limits/"))
        assert r.status_code == 200
