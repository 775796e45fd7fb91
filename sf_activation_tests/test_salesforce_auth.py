"""Authentication flows, re-authentication and secrets, against the emulator over HTTPS."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sf_activation.config import SalesforceSettings
from sf_activation.salesforce import (
    AuthenticationError,
    RecordOutcome,
    SalesforceClient,
    SalesforceError,
    SalesforceSession,
    SendRequest,
)
from sf_activation_tests.support.emulator import start_emulator
from sf_activation_tests.support.proxy import connect_proxy
from sf_activation_tests.support.salesforce_fixtures import client_settings, fast_client


def rsa_key_pair(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "server.key"
    public = directory / "server.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def accounts(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "__key": [f"A-{i}" for i in range(n)],
            "External_Id__c": [f"A-{i}" for i in range(n)],
            "Name": [f"Account {i}" for i in range(n)],
        }
    )


def upsert(
    client: SalesforceClient, n: int, transport: str = "composite", concurrency: int = 8
) -> list[RecordOutcome]:
    outcomes: list[RecordOutcome] = []
    client.send(
        SendRequest(
            object="Account",
            operation="upsert",
            external_id="External_Id__c",
            transport=transport,
            concurrency=concurrency,
        ),
        [accounts(n)],
        outcomes.extend,
    )
    return outcomes


FIXED = {
    "client_id": "fixed-client",
    "client_secret": "fixed-secret-8f2a",
    "username": "integration@example.com",
    "password": "fixed-password-77",
    "refresh_token": "fixed-refresh-5c1d",
}


@pytest.fixture(scope="module")
def locked_emulator(tmp_path_factory: pytest.TempPathFactory):
    """An emulator that accepts only FIXED credentials and the JWT key pair's signatures."""
    tmp = tmp_path_factory.mktemp("sf_auth")
    private, public = rsa_key_pair(tmp)
    creds = tmp / "credentials.json"
    creds.write_text(json.dumps({**FIXED, "jwt_public_key_file": public.name}))
    with start_emulator(tmp, "--credentials", str(creds)) as handle:
        handle.private_key = private  # type: ignore[attr-defined]
        yield handle


def login_settings(em, **values) -> SalesforceSettings:
    """Settings with no ready session: the client must log in through the login URL."""
    return SalesforceSettings(login_url=em.instance_url, ca_bundle=em.ca_bundle, **values)


@pytest.mark.parametrize(
    "flow",
    ["refresh_token", "jwt_bearer", "password", "client_credentials", "access_token"],
)
def test_every_auth_flow_reaches_the_api(locked_emulator, flow):
    em = locked_emulator
    values = {
        "refresh_token": {
            "client_id": FIXED["client_id"],
            "client_secret": FIXED["client_secret"],
            "refresh_token": FIXED["refresh_token"],
        },
        "jwt_bearer": {
            "client_id": FIXED["client_id"],
            "username": FIXED["username"],
            "private_key_file": em.private_key,
        },
        "password": {
            "client_id": FIXED["client_id"],
            "client_secret": FIXED["client_secret"],
            "username": FIXED["username"],
            "password": FIXED["password"],
        },
        "client_credentials": {
            "client_id": FIXED["client_id"],
            "client_secret": FIXED["client_secret"],
        },
        "access_token": {"instance_url": em.instance_url, "access_token": em.access_token},
    }[flow]
    settings = login_settings(em, **values)
    assert settings.auth_flow == flow
    client = SalesforceClient.from_settings(settings)
    assert client.describe("Account").name == "Account"
    assert client.session.instance_url == em.instance_url


def test_refused_credentials_stop_with_a_message_free_of_secrets(locked_emulator):
    settings = login_settings(
        locked_emulator,
        client_id=FIXED["client_id"],
        client_secret="wrong-secret-1234",
        refresh_token="wrong-refresh-9876",
    )
    with pytest.raises(AuthenticationError) as info:
        SalesforceClient.from_settings(settings).describe("Account")
    text = str(info.value)
    assert "refresh_token" in text and "invalid" in text.lower()
    assert "wrong-secret-1234" not in text and "wrong-refresh-9876" not in text


def test_an_expired_ready_token_without_a_way_to_refresh_stops_the_run(emulator):
    settings = SalesforceSettings(
        instance_url=emulator.instance_url,
        access_token="00D000000000001!expired.token.value",
        ca_bundle=emulator.ca_bundle,
    )
    with pytest.raises(AuthenticationError) as info:
        SalesforceClient.from_settings(settings).describe("Account")
    assert "expired.token.value" not in str(info.value)


def test_client_credentials_need_a_my_domain_login_url():
    settings = SalesforceSettings(
        client_id="cid", client_secret="secret-value-x", login_url="https://login.salesforce.com"
    )
    with pytest.raises(AuthenticationError, match="My Domain"):
        SalesforceSession(settings).authenticate()


def test_the_private_ca_bundle_is_what_makes_tls_work(emulator):
    untrusted = client_settings(emulator, ca_bundle=None)
    with pytest.raises(SalesforceError, match="SALESFORCE_CA_BUNDLE"):
        SalesforceClient.from_settings(untrusted).describe("Account")


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_api_calls_go_through_the_https_proxy_of_the_environment(emulator, monkeypatch, transport):
    host_port = emulator.instance_url.split("//", 1)[1]
    with connect_proxy() as (proxy, seen), monkeypatch.context() as env:
        env.setenv("HTTPS_PROXY", f"http://sync%40corp:p%3Ass@{proxy}")
        env.setenv("NO_PROXY", "")
        env.delenv("no_proxy", raising=False)
        env.delenv("https_proxy", raising=False)
        outcomes = upsert(fast_client(emulator), 450, transport)
    assert all(o.success for o in outcomes) and len(emulator.records("Account")) == 450
    # Every connection to the org was tunnelled, with the proxy credentials of the URL:
    # the token request's and the API calls' (two HTTP stacks, so at least two tunnels).
    assert len(seen.tunnels) >= 2 and set(seen.tunnels) == {host_port}
    assert set(seen.authorizations) == {"Basic " + base64.b64encode(b"sync@corp:p:ss").decode()}


def test_the_api_version_setting_is_used(emulator):
    client = SalesforceClient.from_settings(client_settings(emulator, api_version="61.0"))
    assert client.describe("Account").name == "Account"
    assert client.session.base_url.endswith("/services/data/v61.0/")


def test_describe_is_fetched_once_per_object(emulator):
    client = fast_client(emulator)
    client.describe("Account")
    before = emulator.stats()["api_calls"]
    client.describe("Account")
    client.describe("account")
    assert emulator.stats()["api_calls"] == before


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_an_expiring_session_is_renewed_and_the_call_repeated(tmp_path, transport):
    # Tokens live 0.6 s; with 50 ms per call and two at a time the send outlives several.
    faults = "session_ttl=0.6,bulk_seconds=1.5"  # a Bulk job is polled past the expiry
    with start_emulator(tmp_path, "--faults", faults, "--latency-ms", "50") as em:
        client = fast_client(em)
        outcomes = upsert(client, 4000, transport, concurrency=2)
        assert all(o.success for o in outcomes) and len(outcomes) == 4000
        assert client.session.authentications >= 2
        # The handle's own token has expired too: ask with a fresh one.
        client.session.authenticate()
        http = em.session(token=client.session._token)
        stored = http.get(em.url("/__emulator/records/Account"), timeout=10).json()
        assert len(stored) == 4000


def test_no_secret_appears_in_logs_errors_or_outcomes(tmp_path, caplog):
    private, public = rsa_key_pair(tmp_path)
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({**FIXED, "jwt_public_key_file": public.name}))
    caplog.set_level(logging.DEBUG)
    seen_tokens: set[str] = set()
    texts: list[str] = []
    with start_emulator(
        tmp_path, "--credentials", str(creds), "--faults", "session_ttl=0.6,lock=0.1",
        "--latency-ms", "20", "--seed", "3",
    ) as em:  # fmt: skip
        seen_tokens.add(em.access_token)
        for values in (
            {"client_id": FIXED["client_id"], "client_secret": FIXED["client_secret"],
             "refresh_token": FIXED["refresh_token"]},
            {"client_id": FIXED["client_id"], "username": FIXED["username"],
             "private_key_file": private, "client_secret": None, "refresh_token": None},
        ):  # fmt: skip
            client = fast_client(em, instance_url=None, **values)
            session = client.session
            original = session.authenticate

            def remember(*args, _original=original, _session=session, **kwargs):
                _original(*args, **kwargs)
                seen_tokens.add(_session._token)

            session.authenticate = remember  # type: ignore[method-assign]
            outcomes = upsert(client, 900) + upsert(client, 300, "bulk")
            texts.extend(repr(o) for o in outcomes)
        bad = fast_client(em, instance_url=None, client_id="x", client_secret="wrong-secret-42",
                          refresh_token="wrong-refresh-42")  # fmt: skip
        with pytest.raises(AuthenticationError) as info:
            bad.describe("Account")
        texts.append(str(info.value))
        texts.append(repr(bad.session.settings))
    texts.append(caplog.text)
    everything = "\n".join(texts)
    secrets = {*seen_tokens, *FIXED.values(), "wrong-secret-42", "wrong-refresh-42"} - {
        FIXED["client_id"],
        FIXED["username"],
    }
    key_body = private.read_text().splitlines()[1]
    assert len(seen_tokens) >= 3  # tokens were really issued and renewed
    for secret in [*secrets, key_body]:
        assert secret not in everything, "a secret leaked"
