"""Security: no secret in logs, summaries, state or reject files with any auth flow; TLS
always verified (only an explicit CA bundle extends trust); model names, run ids and keys
cannot escape their prefix; `redact:` masks reject files; the emulator refuses requests
without a token it issued and binds loopback by default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import certifi
import pyarrow.parquet as pq
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sf_activation.rejects import RejectsError, RejectSink
from sf_activation.state import StateError, StateStore
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.reliability import create_accounts, model_body
from sf_activation_tests.support.workspace import Workspace

TOKEN_SHAPE = re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]{20,}")
SECRETS = {
    "SALESFORCE_CLIENT_SECRET": "cs-9f8e7d6c5b4a3210-secret",
    "SALESFORCE_REFRESH_TOKEN": "rt-5Aep861-refresh-secret",
    "SALESFORCE_PASSWORD": "pw-Correct-Horse-Battery",
    "SALESFORCE_SECURITY_TOKEN": "st-XyZ123SecurityTok",
}


def _private_key(path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(pem)
    return pem


def _flows(handle: EmulatorHandle, key_file: Path) -> dict[str, dict[str, str]]:
    login = {"SALESFORCE_LOGIN_URL": handle.instance_url, "SALESFORCE_CLIENT_ID": "app-id"}
    return {
        "access_token": {
            "SALESFORCE_INSTANCE_URL": handle.instance_url,
            "SALESFORCE_ACCESS_TOKEN": handle.access_token,
        },
        "refresh_token": {
            **login,
            "SALESFORCE_CLIENT_SECRET": SECRETS["SALESFORCE_CLIENT_SECRET"],
            "SALESFORCE_REFRESH_TOKEN": SECRETS["SALESFORCE_REFRESH_TOKEN"],
        },
        "password": {
            **login,
            "SALESFORCE_USERNAME": "etl@example.com",
            "SALESFORCE_PASSWORD": SECRETS["SALESFORCE_PASSWORD"],
            "SALESFORCE_SECURITY_TOKEN": SECRETS["SALESFORCE_SECURITY_TOKEN"],
        },
        "client_credentials": {
            **login,
            "SALESFORCE_CLIENT_SECRET": SECRETS["SALESFORCE_CLIENT_SECRET"],
        },
        "jwt_bearer": {
            **login,
            "SALESFORCE_USERNAME": "etl@example.com",
            "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
        },
    }


def test_no_secret_in_output_logs_summaries_state_or_rejects_with_every_auth_flow(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "server.key"
    pem = _private_key(key_file)
    key_body = "".join(pem.splitlines()[1:-1])[:64]
    with start_emulator(tmp_path / "emu") as handle:
        ws = Workspace(tmp_path / "ws", handle)
        create_accounts(ws, 30)
        ws.model("m", model_body("upsert", "composite", extra="redact: [Name]\n"))
        outputs: list[str] = []
        for flow, env in _flows(handle, key_file).items():
            ws.use_emulator(handle)
            for name in [k for k in ws.env if k.startswith("SALESFORCE_") and k not in env]:
                if name != "SALESFORCE_CA_BUNDLE":
                    del ws.env[name]
            ws.env.update(env)
            # --debug: every log line the package writes, at its most verbose.
            result = ws.run("--debug", "sync", "m", "--json", "--full-resync")
            summary = json.loads(result.stdout)
            assert summary["succeeded"] == 30 and summary["rejected"] == 7, (flow, summary)
            outputs += [result.stdout, result.stderr]
            outputs.append(ws.run("rejects", "m", "--json").stdout)
            outputs.append(ws.run("plan", "m", "--json").stdout)

    files = [p for p in ws.root.rglob("*") if p.is_file() and "warehouse" not in p.name]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.suffix == ".parquet" for p in files)
    blobs = outputs + [p.read_bytes().decode("utf-8", "replace") for p in files]
    secrets = [*SECRETS.values(), key_body, handle.access_token]
    for blob in blobs:
        for secret in secrets:
            assert secret not in blob
        assert not TOKEN_SHAPE.search(blob), TOKEN_SHAPE.search(blob)


def test_redact_masks_values_in_reject_files_including_salesforce_messages(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 3)
    ws.sql(
        "UPDATE accounts SET name = 'Jane Q. Private ' || repeat('z', 300) WHERE account_id = 'R-LONG'"
    )
    ws.sql("UPDATE accounts SET name = 'Orphan Person' WHERE account_id LIKE 'R-ORPHAN%'")
    ws.model("m", model_body("upsert", "composite", extra="redact: [Name]\n"))
    summary = ws.sync("m")
    rejects = ws.rejects(summary)
    assert len(rejects) == 7
    text = json.dumps(rejects)
    assert "Jane Q. Private" not in text and "Orphan Person" not in text
    # Masked, or null where coercion refused the value before sending.
    assert {r["record"]["Name"] for r in rejects if r["primary_key"]} == {"***REDACTED***", None}
    # Unredacted fields stay readable, so a user can still find the row.
    assert {r["record"]["External_Id__c"] for r in rejects if r["primary_key"]} >= {"R-LONG"}


def test_no_state_file_holds_a_redacted_value_in_clear(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 30, name="Private Person")
    for transport in ("composite", "bulk"):
        ws.model(f"m_{transport}", model_body("upsert", transport, extra="redact: [Name]\n"))
        assert ws.sync(f"m_{transport}")["succeeded"] == 30
    # A change to a redacted field is still seen (the hash is of the real values) ...
    ws.sql("UPDATE accounts SET name = 'Private Person changed' WHERE account_id = 'R-1'")
    for transport in ("composite", "bulk"):
        again = ws.sync(f"m_{transport}")
        assert again["changed"] == 1 and again["succeeded"] == 1, again
        assert "Private" not in json.dumps(again["sample_changes"])
    assert ws.records_by("Account")["R-1"]["Name"] == "Private Person changed"
    # ... while every file the state store holds keeps it masked.
    files = list(Path(ws.state_url).rglob("*.parquet"))
    assert files
    for path in files:
        table = pq.read_table(path)
        assert "Private" not in json.dumps(table.to_pylist(), default=str), path
        if "sync_log" in path.parts:
            continue  # the per-run log (no payloads): checked for the value above
        payloads = table.column("payload").to_pylist()
        assert any(p and '"Name":"***REDACTED***"' in p for p in payloads), path


def test_a_primary_key_that_maps_to_a_redacted_field_is_masked_wherever_shown(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE people AS SELECT 'person' || i || '@private.example' AS email, "
        "'K-' || i AS ext, CASE WHEN i = 3 THEN repeat('x', 300) ELSE 'Last ' || i END AS last "
        "FROM range(10) t(i)"
    )
    ws.model(
        "people",
        """
        object: Contact
        operation: mirror
        primary_key: email
        external_id: External_Id__c
        query: SELECT email, ext, last FROM people
        transport: composite
        redact: [Email]
        fields:
          email: Email
          ext: External_Id__c
          last: LastName
        """,
    )
    first = ws.run("sync", "people", "--json")
    summary = json.loads(first.stdout)
    assert summary["succeeded"] == 9 and summary["rejected"] == 1, summary
    ws.sql("UPDATE people SET last = last || '!'")
    ws.sql("DELETE FROM people WHERE email LIKE 'person%' AND ext <> 'K-0'")
    refused = ws.run("sync", "people", "--json", check=False)
    assert refused.returncode != 0 and "refusing to delete" in refused.stderr
    plan = ws.run("plan", "people", "--json", check=False)
    outputs = [first.stdout, first.stderr, refused.stdout, refused.stderr, plan.stdout]
    # Every reject file, summary, sample and message masks it (the state keeps a keyed
    # digest of it instead: test_redacted_key_state.py).
    files = [p for p in Path(ws.rejects_url).rglob("*") if p.is_file()]
    assert files
    blobs = outputs + [p.read_bytes().decode("utf-8", "replace") for p in files]
    for blob in blobs:
        assert "private.example" not in blob, blob[:2000]
    assert [r["primary_key"] for r in ws.rejects(summary)] == ["***REDACTED***"]


def test_tls_is_always_verified_and_only_an_explicit_ca_bundle_extends_trust(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 3)
    ws.model("m", model_body("upsert", "composite"))
    del ws.env["SALESFORCE_CA_BUNDLE"]
    for env in (
        {},  # the system trust store does not know the emulator's certificate
        {"REQUESTS_CA_BUNDLE": str(emulator.ca_bundle)},  # requests' variable is not trust
        {"CURL_CA_BUNDLE": ""},  # nor is curl's empty-means-off convention
        {"SALESFORCE_CA_BUNDLE": certifi.where()},  # a bundle without the emulator's CA
    ):
        result = ws.run("sync", "m", check=False, env=env)
        assert result.returncode == 1, (env, result.stderr)
        assert "TLS verification failed" in result.stderr, result.stderr
    assert ws.write_calls() == 0
    ok = ws.sync("m", env={"SALESFORCE_CA_BUNDLE": str(emulator.ca_bundle)})
    assert ok["succeeded"] == 3


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "x" * 300, "", "a\x00b", "/abs"])
def test_model_names_and_run_ids_cannot_escape_their_prefix(tmp_path: Path, name: str) -> None:
    with pytest.raises(RejectsError):
        RejectSink("s3://bucket/prefix", name, "Account", "upsert", "run-1")
    with pytest.raises(RejectsError):
        RejectSink(str(tmp_path), "model", "Account", "upsert", name)
    with pytest.raises(StateError):
        StateStore("s3://bucket/prefix", name)
    with pytest.raises(StateError):
        StateStore(str(tmp_path), name)
    assert list(tmp_path.iterdir()) == []


def test_model_files_and_run_ids_with_unsafe_names_are_refused_by_the_command(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 3)
    ws.model("bad-name", model_body("upsert", "composite"))
    result = ws.run("sync", "bad-name", check=False)
    assert result.returncode == 2 and "bad-name" in result.stderr
    ws.model("m", model_body("upsert", "composite"))
    escaped = ws.run("sync", "m", "--run-id", "../../../outside", check=False)
    assert escaped.returncode != 0
    assert not (tmp_path / "outside.jsonl").exists()
    assert not any(p.name.startswith("outside") for p in tmp_path.rglob("*"))


def test_the_emulator_refuses_requests_without_a_token_it_issued(
    emulator: EmulatorHandle,
) -> None:
    url = emulator.url("/services/data/v62.0/sobjects/Account/describe")
    for headers in (
        {},
        {"Authorization": "Bearer 00D000000000001!madeUpTokenThatWasNeverIssued"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {emulator.access_token}"},
    ):
        response = requests.get(url, headers=headers, verify=emulator.ca_bundle, timeout=10)
        assert response.status_code == 401, headers
        assert response.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    for path in ("/__emulator/records/Account", "/__emulator/stats"):
        assert (
            requests.get(emulator.url(path), verify=emulator.ca_bundle, timeout=10).status_code
            == 401
        )
    ok = requests.get(
        url,
        headers={"Authorization": f"Bearer {emulator.access_token}"},
        verify=emulator.ca_bundle,
        timeout=10,
    )
    assert ok.status_code == 200


def test_the_emulator_binds_loopback_by_default(emulator: EmulatorHandle) -> None:
    assert emulator.instance_url.startswith("https://127.0.0.1:")
    port = int(emulator.instance_url.rsplit(":", 1)[1])
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # LISTEN
    mine = [addr for addr in local if int(addr.split(":")[1], 16) == port]
    assert mine == ["0100007F:" + format(port, "04X")], mine  # 127.0.0.1 only
