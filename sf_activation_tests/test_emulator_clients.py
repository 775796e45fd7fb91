"""Clients nobody here wrote, against the emulator: simple-salesforce's Bulk 1.0 handler
(`sf.bulk.<Object>`), the Salesforce CLI (`sf`, installed by `make sf-cli` into
.sf_activation/npm), and the request log that shows what they ask for.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

REPO = Path(__file__).resolve().parent.parent
SF_LOCAL = REPO / ".sf_activation" / "npm" / "node_modules" / ".bin" / "sf"
SF_TIMEOUT_S = 180


# ---- simple-salesforce's Bulk API 1.0 handler -------------------------------------------


def test_simple_salesforce_bulk_v1_insert_upsert_query(emulator: EmulatorHandle) -> None:
    sf = emulator.salesforce()

    inserted = sf.bulk.Account.insert(
        [
            {"Name": "Initech", "External_Id__c": "A-1", "NumberOfEmployees": 10},
            {"Name": "Umbrella", "External_Id__c": "A-2"},
            {"External_Id__c": "A-3"},  # no Name: REQUIRED_FIELD_MISSING for this one only
        ]
    )
    assert [r["success"] for r in inserted] == [True, True, False]
    assert all(r["created"] for r in inserted[:2])
    assert inserted[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert inserted[2]["id"] is None
    stored = {r["Id"]: r for r in emulator.records("Account")}
    assert {stored[r["id"]]["Name"] for r in inserted[:2]} == {"Initech", "Umbrella"}

    # Upsert by external id: A-2 exists (updated), A-9 does not (created).
    upserted = sf.bulk.Account.upsert(
        [
            {"External_Id__c": "A-2", "Name": "Umbrella Corp"},
            {"External_Id__c": "A-9", "Name": "Hooli"},
        ],
        external_id_field="External_Id__c",
    )
    assert [(r["success"], r["created"]) for r in upserted] == [(True, False), (True, True)]
    assert upserted[0]["id"] == inserted[1]["id"]
    names = sorted(r["Name"] for r in emulator.records("Account"))
    assert names == ["Hooli", "Initech", "Umbrella Corp"]

    # A Bulk 1.0 query: a JSON job, one batch, result ids, then the rows.
    rows = sf.bulk.Account.query(
        "SELECT Id, Name, NumberOfEmployees FROM Account WHERE Name != 'Hooli' ORDER BY Name"
    )
    assert [(r["Name"], r["NumberOfEmployees"]) for r in rows] == [
        ("Initech", 10),
        ("Umbrella Corp", None),
    ]
    assert rows[0]["attributes"]["type"] == "Account"
    assert rows[0]["Id"] == inserted[0]["id"]

    # Update and delete through the same handler.
    updated = sf.bulk.Account.update([{"Id": inserted[0]["id"], "Name": "Initrode"}])
    assert updated[0]["success"] and not updated[0]["created"]
    deleted = sf.bulk.Account.delete([{"Id": upserted[1]["id"]}])
    assert deleted[0]["success"]
    assert sorted(r["Name"] for r in emulator.records("Account")) == ["Initrode", "Umbrella Corp"]


def test_simple_salesforce_bulk_v1_query_all_sees_deleted(emulator: EmulatorHandle) -> None:
    sf = emulator.salesforce()
    created = sf.bulk.Contact.insert([{"LastName": "Keep"}, {"LastName": "Gone"}])
    sf.bulk.Contact.delete([{"Id": created[1]["id"]}])
    live = sf.bulk.Contact.query("SELECT LastName FROM Contact")
    everything = sf.bulk.Contact.query_all("SELECT LastName, IsDeleted FROM Contact")
    assert [r["LastName"] for r in live] == ["Keep"]
    assert sorted((r["LastName"], r["IsDeleted"]) for r in everything) == [
        ("Gone", True),
        ("Keep", False),
    ]


# ---- the request log and the per-client counter ------------------------------------------


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorHandle, Path]]:
    work = tmp_path_factory.mktemp("emulator-log")
    log = work / "requests.jsonl"
    with start_emulator(work, "--log", str(log)) as handle:
        yield handle, log


def _log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_request_log_lines_and_no_secrets(logged: tuple[EmulatorHandle, Path]) -> None:
    emu, log = logged
    http = emu.session()
    http.get(emu.url("/services/data/v62.0/query"), params={"q": "SELECT Id FROM Account"})
    http.get(emu.url("/__emulator/stats"))
    # Credentials in a query string (the token endpoint reads them there too).
    token_answer = requests.post(
        emu.url("/services/oauth2/token"),
        params={"grant_type": "password", "username": "u@example.com", "password": "hunter2"},
        verify=emu.ca_bundle,
        timeout=10,
    )
    assert token_answer.status_code == 200
    requests.get(
        emu.url("/services/data/v62.0/limits"),
        headers={"Authorization": "Bearer not-a-token"},
        verify=emu.ca_bundle,
        timeout=10,
    )

    lines = _log_lines(log)
    by_path = {line["path"].split("?")[0]: line for line in lines}
    query = by_path["/services/data/v62.0/query"]
    assert query["method"] == "GET" and query["status"] == 200 and query["api_call"] is True
    assert query["path"] == "/services/data/v62.0/query?q=SELECT+Id+FROM+Account"
    assert isinstance(query["duration_ms"], float) and query["time"].endswith("Z")
    assert query["client"] == hashlib.sha256(emu.access_token.encode()).hexdigest()[:16]
    assert by_path["/__emulator/stats"]["api_call"] is False  # test routes are not API calls
    assert by_path["/services/data/v62.0/limits"]["status"] == 401
    assert by_path["/services/data/v62.0/limits"]["api_call"] is False
    token_line = by_path["/services/oauth2/token"]
    assert "password=***" in token_line["path"] and "username=u%40example.com" in token_line["path"]

    text = log.read_text()
    assert "hunter2" not in text
    assert emu.access_token not in text
    assert emu.access_token.split("!")[1] not in text
    assert token_answer.json()["access_token"] not in text


def test_api_calls_per_client(logged: tuple[EmulatorHandle, Path]) -> None:
    emu, _ = logged
    emu.reset()

    def token_for(client_id: str) -> str:
        answer = requests.post(
            emu.url("/services/oauth2/token"),
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "s"},
            verify=emu.ca_bundle,
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    app_a, app_b = token_for("app-a"), token_for("app-b")
    for _ in range(3):
        emu.session(app_a).get(emu.url("/services/data/v62.0/limits")).raise_for_status()
    emu.session(app_b).get(emu.url("/services/data/v62.0/sobjects")).raise_for_status()
    emu.http.get(emu.url("/services/data/v62.0/limits")).raise_for_status()

    stats = emu.stats()
    by_client = stats["api_calls_by_client"]
    assert by_client["by_client_id"] == {"app-a": 3, "app-b": 1}
    sha = {t: hashlib.sha256(t.encode()).hexdigest()[:16] for t in (app_a, app_b)}
    assert by_client["by_token_sha256"][sha[app_a]] == 3
    assert by_client["by_token_sha256"][sha[app_b]] == 1
    own = hashlib.sha256(emu.access_token.encode()).hexdigest()[:16]
    assert by_client["by_token_sha256"][own] == 1
    assert stats["api_calls"] == 5
    emu.reset()
    assert emu.stats()["api_calls_by_client"]["by_client_id"] == {}


# ---- the Salesforce CLI ---------------------------------------------------------------------


def _sf_binary() -> str | None:
    if SF_LOCAL.exists():
        return str(SF_LOCAL)
    return shutil.which("sf")


@pytest.fixture
def sf_cli(tmp_path: Path) -> Iterator[tuple[EmulatorHandle, Path, dict[str, str], str]]:
    binary = _sf_binary()
    if binary is None:
        pytest.skip(
            "the Salesforce CLI (sf) is not installed: `make sf-cli` installs it with npm into "
            ".sf_activation/npm (skipped when npm is missing or offline)"
        )
    log = tmp_path / "requests.jsonl"
    with start_emulator(tmp_path / "emulator", "--log", str(log)) as emu:
        home = tmp_path / "home"
        home.mkdir()
        env = {
            "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(home),  # the CLI's config and auth files go here, not the user's
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "SF_ACCESS_TOKEN": emu.access_token,
            "NODE_EXTRA_CA_CERTS": str(emu.ca_bundle),
            "SF_DISABLE_TELEMETRY": "true",
            "SF_AUTOUPDATE_DISABLE": "true",
            "SF_USE_GENERIC_UNIX_KEYCHAIN": "true",
            "SF_SKIP_NEW_VERSION_CHECK": "true",
            "SF_DISABLE_AUTOUPDATE": "true",
            "SF_HIDE_RELEASE_NOTES": "true",
        }
        yield emu, log, env, binary


def _sf(binary: str, env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [binary, *args, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SF_TIMEOUT_S,
        check=False,
    )
    # --json puts the answer on stdout whatever happened; warnings may go to stderr.
    start = done.stdout.find("{")
    assert start >= 0, f"sf {args[:3]} printed no JSON: {done.stdout}\n{done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout[start:])
    assert done.returncode == 0 and answer.get("status") == 0, (done.stdout, done.stderr)
    return answer


def test_salesforce_cli_login_query_and_bulk_export(
    sf_cli: tuple[EmulatorHandle, Path, dict[str, str], str], tmp_path: Path
) -> None:
    emu, log, env, sf = sf_cli
    names = ["Acme", "Globex", "Initech"]
    created = emu.http.post(
        emu.url("/services/data/v62.0/composite/sobjects"),
        json={
            "allOrNone": True,
            "records": [{"attributes": {"type": "Account"}, "Name": n} for n in names],
        },
        timeout=10,
    )
    created.raise_for_status()
    ids = {r["id"] for r in created.json()}

    login = _sf(
        sf,
        env,
        tmp_path,
        "org",
        "login",
        "access-token",
        "--instance-url",
        emu.instance_url,
        "--no-prompt",
        "--alias",
        "emu",
    )
    assert login["result"]["orgId"].startswith("00D")
    assert login["result"]["instanceUrl"].rstrip("/") == emu.instance_url

    query = _sf(
        sf,
        env,
        tmp_path,
        "data",
        "query",
        "--query",
        "SELECT Id, Name FROM Account",
        "--target-org",
        "emu",
    )
    records = query["result"]["records"]
    assert sorted(r["Name"] for r in records) == names
    assert {r["Id"] for r in records} == ids

    out = tmp_path / "accounts.csv"
    export = _sf(
        sf,
        env,
        tmp_path,
        "data",
        "export",
        "bulk",
        "--query",
        "SELECT Id, Name FROM Account ORDER BY Name",
        "--output-file",
        str(out),
        "--wait",
        "5",
        "--target-org",
        "emu",
    )
    assert export["result"]["totalSize"] == 3
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["Name"] for r in rows] == names
    assert {r["Id"] for r in rows} == ids

    # What the CLI really asked for: it keeps the instance URL with a trailing slash
    # (hence `//services/...`), and the export is a Bulk 2.0 query job.
    asked = [
        (line["method"], line["path"].split("?")[0], line["status"]) for line in _log_lines(log)
    ]
    assert ("GET", "//services/data/v62.0/query", 200) in asked
    assert ("POST", "/services/data/v62.0/jobs/query", 200) in asked
    assert any(m == "GET" and p.endswith("/results") and st == 200 for m, p, st in asked)
    assert emu.access_token not in log.read_text()
