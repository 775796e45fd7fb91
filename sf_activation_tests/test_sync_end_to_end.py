"""`sf-activation sync` end to end: the real command in a subprocess, the emulator over real
HTTPS, reject files on moto's S3 server, a DuckDB warehouse. Each test ends by checking
the user's promise: Salesforce holds exactly the model's valid rows, the reject files hold
exactly the others."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import certifi
import duckdb
import pytest

from sf_activation_tests.support.emulator import start_emulator
from sf_activation_tests.support.s3 import s3_server, s3_url  # noqa: F401

WRITE_ROUTE_MARKERS = ("composite", "jobs/ingest")


class Workspace:
    """A user's project: models, a DuckDB warehouse, local state, rejects on S3."""

    def __init__(self, root: Path, emulator: Any, rejects_url: str) -> None:
        self.root = root
        self.emulator = emulator
        self.models = root / "models"
        self.models.mkdir()
        self.warehouse = root / "warehouse.duckdb"
        self.rejects_url = rejects_url
        self.env = {
            **os.environ,
            "SALESFORCE_INSTANCE_URL": emulator.instance_url,
            "SALESFORCE_ACCESS_TOKEN": emulator.access_token,
            "SALESFORCE_CA_BUNDLE": str(emulator.ca_bundle),
            "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{self.warehouse}",
            "SF_ACTIVATION_MODELS_DIR": str(self.models),
            "SF_ACTIVATION_STATE_URL": str(root / "state"),
            "SF_ACTIVATION_REJECTS_URL": rejects_url,
            # As on many machines: requests would let this override the client's CA bundle.
            "REQUESTS_CA_BUNDLE": certifi.where(),
        }

    def sql(self, statement: str) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse))
        try:
            return con.execute(statement).fetchall()
        finally:
            con.close()

    def model(self, name: str, body: str) -> None:
        (self.models / f"{name}.yml").write_text(textwrap.dedent(body))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sf_activation", *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"sf-activation {' '.join(args)} failed:\n{result.stderr}")
        return result

    def sync(self, model: str, *extra: str) -> dict[str, Any]:
        result = self.run("sync", model, "--json", *extra)
        return json.loads(result.stdout)

    def write_calls(self) -> int:
        routes = self.emulator.stats()["requests_by_route"]
        return sum(n for route, n in routes.items() if any(m in route for m in WRITE_ROUTE_MARKERS))

    def rejects(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        if not summary["rejects_url"]:
            return []
        bucket, _, key = summary["rejects_url"].removeprefix("s3://").partition("/")
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


@pytest.fixture
def workspace(tmp_path: Path, emulator: Any, s3_url: str) -> Workspace:  # noqa: F811
    return Workspace(tmp_path, emulator, f"{s3_url}/rejects")


ACCOUNTS_MODEL = """
    object: Account
    operation: {operation}
    primary_key: account_id
    external_id: External_Id__c
    query: SELECT account_id, name, revenue, industry FROM accounts
    transport: {transport}
    fields:
      account_id: External_Id__c
      name: Name
      revenue: AnnualRevenue
      industry: Industry
"""


def _accounts_by_external_id(emulator: Any) -> dict[str, dict[str, Any]]:
    records = emulator.records("Account")
    ids = Counter(r.get("External_Id__c") for r in records)
    assert all(n == 1 for n in ids.values()), f"duplicates in Salesforce: {ids.most_common(3)}"
    return {r["External_Id__c"]: r for r in records}


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_first_sync_lands_valid_rows_and_rejects_invalid_ones_then_rerun_sends_nothing(
    workspace: Workspace, transport: str
) -> None:
    workspace.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS account_id, 'Account ' || i AS name, "
        "i * 1000.0 AS revenue, 'Banking' AS industry FROM range(450) t(i)"
    )
    workspace.sql("INSERT INTO accounts VALUES (NULL, 'no key', 1, 'Banking')")
    workspace.sql("INSERT INTO accounts VALUES ('A-7', 'second A-7', 2, 'Banking')")
    workspace.model("accounts", ACCOUNTS_MODEL.format(operation="upsert", transport=transport))

    first = workspace.sync("accounts")

    assert first["rows"] == 452
    assert (first["invalid"], first["added"], first["succeeded"], first["failed"]) == (
        3,
        449,
        449,
        0,
    )
    assert first["rejected"] == 3
    assert first["transport"] == transport
    in_salesforce = _accounts_by_external_id(workspace.emulator)
    assert set(in_salesforce) == {f"A-{i}" for i in range(450) if i != 7}
    assert in_salesforce["A-12"]["Name"] == "Account 12"
    assert in_salesforce["A-12"]["AnnualRevenue"] == 12000.0
    rejects = workspace.rejects(first)
    assert sorted(r["error_code"] for r in rejects) == [
        "DUPLICATE_PRIMARY_KEY",
        "DUPLICATE_PRIMARY_KEY",
        "NULL_PRIMARY_KEY",
    ]
    assert {r["primary_key"] for r in rejects} == {None, "A-7"}
    assert all(r["model"] == "accounts" and r["object"] == "Account" for r in rejects)
    if transport == "composite":
        assert first["api_calls"] <= 1 + -(-449 // 200) + 1  # describe + full batches (+ limits)

    writes_before = workspace.write_calls()
    second = workspace.sync("accounts")
    assert (second["sent"], second["unchanged"], second["added"]) == (0, 449, 0)
    assert workspace.write_calls() == writes_before, (
        "a run with nothing changed wrote to Salesforce"
    )


def test_edits_and_mirror_deletes_reach_salesforce(workspace: Workspace) -> None:
    workspace.sql(
        "CREATE TABLE accounts AS SELECT 'M-' || i AS account_id, 'Mirror ' || i AS name, "
        "i * 10.0 AS revenue, 'Energy' AS industry FROM range(300) t(i)"
    )
    workspace.model("mirrored", ACCOUNTS_MODEL.format(operation="mirror", transport="composite"))
    assert workspace.sync("mirrored")["succeeded"] == 300

    workspace.sql(
        "UPDATE accounts SET name = name || ' (renamed)' WHERE account_id IN ('M-1','M-2')"
    )
    workspace.sql("DELETE FROM accounts WHERE account_id IN ('M-10', 'M-11', 'M-12')")
    summary = workspace.sync("mirrored")

    assert (summary["changed"], summary["removed"], summary["deleted"]) == (2, 3, 3)
    assert summary["sent"] == 2
    in_salesforce = _accounts_by_external_id(workspace.emulator)
    assert len(in_salesforce) == 297
    assert "M-10" not in in_salesforce
    assert in_salesforce["M-1"]["Name"] == "Mirror 1 (renamed)"
    assert workspace.sync("mirrored")["sent"] == 0


def test_mirror_refuses_to_wipe_salesforce_when_the_query_returns_nothing(
    workspace: Workspace,
) -> None:
    workspace.sql(
        "CREATE TABLE accounts AS SELECT 'W-' || i AS account_id, 'Wipe ' || i AS name, "
        "1.0 AS revenue, 'Energy' AS industry FROM range(50) t(i)"
    )
    workspace.model("mirrored", ACCOUNTS_MODEL.format(operation="mirror", transport="composite"))
    workspace.sync("mirrored")
    workspace.sql("DELETE FROM accounts")

    refused = workspace.run("sync", "mirrored", check=False)

    assert refused.returncode == 3
    assert "refusing to delete 50 of 50" in refused.stderr
    assert "max_delete_rate" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert len(workspace.emulator.records("Account")) == 50


CONTACTS_MODEL = """
    object: Contact
    operation: upsert
    primary_key: contact_id
    external_id: External_Id__c
    query: SELECT contact_id, last_name, email, account_id FROM contacts
    transport: composite
    fields:
      contact_id: External_Id__c
      last_name: LastName
      email: Email
      account_id: Account.External_Id__c
"""


def test_rejected_rows_are_retried_and_land_once_the_data_is_fixed(workspace: Workspace) -> None:
    workspace.sql(
        "CREATE TABLE accounts AS SELECT 'P-' || i AS account_id, 'Parent ' || i AS name, "
        "1.0 AS revenue, 'Media' AS industry FROM range(5) t(i)"
    )
    workspace.sql(
        "CREATE TABLE contacts AS SELECT 'C-' || i AS contact_id, 'Person ' || i AS last_name, "
        "'p' || i || '@example.com' AS email, 'P-' || (i % 6) AS account_id FROM range(60) t(i)"
    )
    workspace.model("accounts", ACCOUNTS_MODEL.format(operation="upsert", transport="composite"))
    workspace.model("contacts", CONTACTS_MODEL)
    workspace.sync("accounts")

    first = workspace.sync("contacts")

    # Contacts of the missing parent P-5 are refused by Salesforce; the rest land.
    assert (first["succeeded"], first["failed"], first["rejected"]) == (50, 10, 10)
    rejects = workspace.rejects(first)
    assert {r["primary_key"] for r in rejects} == {f"C-{i}" for i in range(60) if i % 6 == 5}
    assert all("P-5" in r["message"] for r in rejects)
    assert all(r["record"]["Account.External_Id__c"] == "P-5" for r in rejects)
    shown = workspace.run("rejects", "contacts")
    assert "C-5" in shown.stdout

    workspace.sql("INSERT INTO accounts VALUES ('P-5', 'Parent 5', 1.0, 'Media')")
    workspace.sync("accounts")
    second = workspace.sync("contacts")

    assert (second["pending"], second["succeeded"], second["rejected"]) == (10, 10, 0)
    contacts = workspace.emulator.records("Contact")
    accounts = {r["Id"]: r["External_Id__c"] for r in workspace.emulator.records("Account")}
    assert len(contacts) == 60
    assert {accounts[c["AccountId"]] for c in contacts if c["External_Id__c"] == "C-5"} == {"P-5"}


def test_a_run_killed_mid_way_resumes_without_resending_confirmed_rows(
    tmp_path: Path,
    s3_url: str,  # noqa: F811
) -> None:
    with start_emulator(tmp_path / "emu", "--latency-ms", "40") as emulator:
        root = tmp_path / "ws"
        root.mkdir()
        workspace = Workspace(root, emulator, f"{s3_url}/rejects")
        workspace.sql(
            "CREATE TABLE accounts AS SELECT 'K-' || i AS account_id, 'Killed ' || i AS name, "
            "1.0 AS revenue, 'Retail' AS industry FROM range(6000) t(i)"
        )
        body = textwrap.dedent(ACCOUNTS_MODEL.format(operation="upsert", transport="composite"))
        workspace.model("accounts", body + "concurrency: 2\n")
        process = subprocess.Popen(
            [sys.executable, "-m", "sf_activation", "sync", "accounts", "--json"],
            env=workspace.env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while len(emulator.records("Account")) < 3000 and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
        landed_before_kill = len(emulator.records("Account"))
        assert 3000 <= landed_before_kill < 6000

        resumed = workspace.sync("accounts")

        # Rows confirmed before the kill are not sent again; only calls in flight (at most
        # `concurrency` of 200 records, plus one answered but not yet committed) may be, and
        # the confirmed rows still in the state commit buffer (SF_ACTIVATION_COMMIT_ROWS).
        in_flight = (2 + 1) * 200 + 2_000
        assert resumed["unchanged"] >= landed_before_kill - in_flight
        assert resumed["sent"] <= 6000 - landed_before_kill + in_flight
        assert resumed["rows"] == 6000
        assert len(_accounts_by_external_id(emulator)) == 6000
        assert workspace.sync("accounts")["sent"] == 0


def test_errors_are_one_line_with_the_right_exit_status(workspace: Workspace) -> None:
    workspace.model("broken", "object: Account\noperation: upsret\n")
    bad_model = workspace.run("sync", "broken", check=False)
    assert bad_model.returncode == 2
    assert "broken.yml" in bad_model.stderr and "operation" in bad_model.stderr
    assert "Traceback" not in bad_model.stderr

    missing = workspace.run("sync", "nope", check=False)
    assert missing.returncode == 2
    assert "nope" in missing.stderr

    workspace.sql("CREATE TABLE accounts (account_id VARCHAR, name VARCHAR)")
    workspace.model(
        "unknown_field",
        """
        object: Account
        operation: upsert
        primary_key: account_id
        external_id: External_Id__c
        query: SELECT account_id, name FROM accounts
        fields:
          account_id: External_Id__c
          name: Nmae
        """,
    )
    wrong_field = workspace.run("sync", "unknown_field", check=False)
    assert wrong_field.returncode == 2
    assert "Nmae" in wrong_field.stderr and "name" in wrong_field.stderr
    assert workspace.write_calls() == 0


def _seed_accounts(workspace: Workspace, n: int) -> None:
    workspace.sql(
        f"CREATE TABLE accounts AS SELECT 'U-' || i AS account_id, 'Seed ' || i AS name, "
        f"1.0 AS revenue, 'Banking' AS industry FROM range({n}) t(i)"
    )
    workspace.model("seed", ACCOUNTS_MODEL.format(operation="upsert", transport="composite"))
    assert workspace.sync("seed")["succeeded"] == n


def test_update_by_external_id_never_creates_and_rejects_missing_records(
    workspace: Workspace,
) -> None:
    _seed_accounts(workspace, 20)
    workspace.sql(
        "CREATE TABLE renames AS SELECT 'U-' || i AS account_id, 'Renamed ' || i AS name "
        "FROM range(25) t(i)"
    )
    workspace.model(
        "renames",
        """
        object: Account
        operation: update
        primary_key: account_id
        external_id: External_Id__c
        query: SELECT account_id, name FROM renames
        fields:
          account_id: External_Id__c
          name: Name
        """,
    )

    summary = workspace.sync("renames")

    assert (summary["succeeded"], summary["failed"], summary["rejected"]) == (20, 5, 5)
    in_salesforce = _accounts_by_external_id(workspace.emulator)
    assert len(in_salesforce) == 20
    assert in_salesforce["U-3"]["Name"] == "Renamed 3"
    rejects = workspace.rejects(summary)
    assert {r["primary_key"] for r in rejects} == {f"U-{i}" for i in range(20, 25)}
    assert {r["error_code"] for r in rejects} == {"NOT_FOUND"}


def test_delete_operation_deletes_the_listed_records_once(workspace: Workspace) -> None:
    _seed_accounts(workspace, 30)
    workspace.sql("CREATE TABLE gone AS SELECT 'U-' || i AS account_id FROM range(10) t(i)")
    workspace.model(
        "gone",
        """
        object: Account
        operation: delete
        primary_key: account_id
        external_id: External_Id__c
        query: SELECT account_id FROM gone
        fields:
          account_id: External_Id__c
        """,
    )

    summary = workspace.sync("gone")

    assert summary["succeeded"] == 10
    remaining = _accounts_by_external_id(workspace.emulator)
    assert set(remaining) == {f"U-{i}" for i in range(10, 30)}
    assert workspace.sync("gone")["sent"] == 0


def test_plan_and_validate_send_nothing(workspace: Workspace) -> None:
    workspace.sql(
        "CREATE TABLE accounts AS SELECT 'V-' || i AS account_id, 'Plan ' || i AS name, "
        "2.5 AS revenue, 'Energy' AS industry FROM range(40) t(i)"
    )
    workspace.model("accounts", ACCOUNTS_MODEL.format(operation="upsert", transport="auto"))
    workspace.model("broken", "object: Account\noperation: upsert\n")

    plan = json.loads(workspace.run("plan", "accounts", "--json").stdout)
    validate = workspace.run("validate", check=False)

    assert (plan["dry_run"], plan["rows"], plan["added"], plan["sent"]) == (True, 40, 40, 0)
    assert plan["sample_changes"][0]["changes"]["Name"]["after"].startswith("Plan ")
    assert validate.returncode == 2
    assert "ok  accounts" in validate.stdout
    assert "ERR broken" in validate.stdout and "primary_key" in validate.stdout
    assert workspace.write_calls() == 0
    assert workspace.emulator.records("Account") == []


def test_children_of_one_parent_are_sent_together(workspace: Workspace) -> None:
    # Parallel batches writing children of the same parent collide on the parent's lock
    # (UNABLE_TO_LOCK_ROW); rows are grouped by parent before they are batched.
    workspace.sql(
        "CREATE TABLE accounts AS SELECT 'P-' || i AS account_id, 'Parent ' || i AS name, "
        "1.0 AS revenue, 'Media' AS industry FROM range(3) t(i)"
    )
    workspace.sql(
        "CREATE TABLE contacts AS SELECT 'C-' || i AS contact_id, 'Person ' || i AS last_name, "
        "'p' || i || '@example.com' AS email, 'P-' || (i % 3) AS account_id FROM range(600) t(i)"
    )
    workspace.model("accounts", ACCOUNTS_MODEL.format(operation="upsert", transport="composite"))
    workspace.model("contacts", CONTACTS_MODEL)
    workspace.sync("accounts")

    assert workspace.sync("contacts")["succeeded"] == 600

    parents = [c["AccountId"] for c in workspace.emulator.records("Contact")]
    changes_of_parent = sum(1 for a, b in zip(parents, parents[1:], strict=False) if a != b)
    assert changes_of_parent == 2, "contacts of one account were spread over batches"
