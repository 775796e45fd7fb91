"""record_type, assignment_rules, duplicate_rules and delete_mode end to end: the real
`sf-activation sync` command, the emulator over HTTPS with the org configured as an admin
would (`POST /__emulator/rules`), and what Salesforce holds afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sf_activation_tests.support.workspace import Workspace

TRANSPORTS = ["composite", "bulk"]


def configure(emulator: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = emulator.http.post(emulator.url("/__emulator/rules"), json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def query_all(emulator: Any, soql: str) -> list[dict[str, Any]]:
    response = emulator.http.get(
        emulator.url("/services/data/v62.0/queryAll"), params={"q": soql}, timeout=10
    )
    response.raise_for_status()
    return response.json()["records"]


@pytest.fixture
def ws(tmp_path: Path, emulator: Any) -> Workspace:
    return Workspace(tmp_path, emulator)


def _leads(ws: Workspace, transport: str, extra: str = "") -> None:
    ws.sql(
        "CREATE OR REPLACE TABLE leads AS SELECT 'L-' || i AS lead_id, 'Last ' || i AS last, "
        "'Acme' AS company FROM range(3) t(i)"
    )
    ws.model(
        "leads",
        f"""
        object: Lead
        operation: upsert
        primary_key: lead_id
        external_id: External_Id__c
        transport: {transport}
        query: select * from leads
        fields: {{lead_id: External_Id__c, last: LastName, company: Company}}
        {extra}
        """,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_assignment_rules_false_leaves_the_owner_alone(ws: Workspace, transport: str) -> None:
    configure(ws.emulator, {"assignment_rule": {"object": "Lead"}})
    _leads(ws, transport)  # no key: the default, false
    summary = ws.sync("leads")
    assert summary["succeeded"] == 3
    leads = ws.records_by("Lead")
    assert {r["OwnerId"] for r in leads.values()} == {r["CreatedById"] for r in leads.values()}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_assignment_rules_true_runs_the_active_rule(ws: Workspace, transport: str) -> None:
    rule = configure(ws.emulator, {"assignment_rule": {"object": "Lead"}})["assignment_rule"]
    _leads(ws, transport, "assignment_rules: true")
    assert ws.sync("leads")["succeeded"] == 3
    assert {r["OwnerId"] for r in ws.records_by("Lead").values()} == {rule["owner_id"]}


def test_assignment_rules_by_id(ws: Workspace) -> None:
    rule = configure(ws.emulator, {"assignment_rule": {"object": "Lead"}})["assignment_rule"]
    _leads(ws, "bulk", f"assignment_rules: {rule['id']}")
    assert ws.sync("leads")["succeeded"] == 3
    assert {r["OwnerId"] for r in ws.records_by("Lead").values()} == {rule["owner_id"]}


def _contacts(ws: Workspace, transport: str, extra: str = "") -> None:
    existing = ws.emulator.http.post(
        ws.emulator.url("/services/data/v62.0/sobjects/Contact"),
        json={"LastName": "First", "Email": "ada@example.com"},
        timeout=10,
    )
    existing.raise_for_status()
    ws.sql(
        "CREATE OR REPLACE TABLE contacts AS SELECT * FROM (VALUES "
        "('C-1', 'Lovelace', 'ADA@example.com'), ('C-2', 'Hopper', 'grace@example.com')) "
        "t(contact_id, last, email)"
    )
    ws.model(
        "contacts",
        f"""
        object: Contact
        operation: upsert
        primary_key: contact_id
        external_id: External_Id__c
        transport: {transport}
        query: select * from contacts
        fields: {{contact_id: External_Id__c, last: LastName, email: Email}}
        {extra}
        """,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_duplicate_rules_enforce_blocks_with_a_clear_reject(ws: Workspace, transport: str) -> None:
    configure(ws.emulator, {"duplicate_rules": [{"object": "Contact", "field": "Email"}]})
    _contacts(ws, transport)
    summary = ws.sync("contacts")
    assert summary["succeeded"] == 1
    (reject,) = ws.rejects(summary)
    assert reject["error_code"] == "DUPLICATES_DETECTED"
    assert "duplicate_rules: allow_save" in reject["message"]
    if transport == "composite":  # REST names the rule; Bulk's result file does not
        assert "Standard_Contact_Duplicate_Rule" in reject["message"]
    emails = sorted(r["Email"] for r in ws.emulator.records("Contact"))
    assert emails == ["ada@example.com", "grace@example.com"]


def test_duplicate_rules_allow_save_saves_the_duplicate(ws: Workspace) -> None:
    configure(ws.emulator, {"duplicate_rules": [{"object": "Contact", "field": "Email"}]})
    _contacts(ws, "auto", "duplicate_rules: allow_save\n        bulk_threshold: 1")
    summary = ws.sync("contacts")
    assert summary["succeeded"] == 2 and summary["transport"] == "composite"
    emails = sorted(r["Email"].lower() for r in ws.emulator.records("Contact"))
    assert emails == ["ada@example.com", "ada@example.com", "grace@example.com"]


def _accounts(ws: Workspace, transport: str, extra: str, fields: str = "") -> None:
    ws.sql(
        "CREATE OR REPLACE TABLE accounts AS SELECT * FROM (VALUES "
        "('A-1', 'Acme', 'Partner'), ('A-2', 'Globex', 'Customer')) t(account_id, name, kind)"
    )
    ws.model(
        "accounts",
        f"""
        object: Account
        operation: upsert
        primary_key: account_id
        external_id: External_Id__c
        transport: {transport}
        query: select * from accounts
        fields: {{account_id: External_Id__c, name: Name{fields}}}
        {extra}
        """,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_record_type_is_set_by_developer_name(ws: Workspace, transport: str) -> None:
    types = configure(ws.emulator, {"record_types": {"Account": ["Customer", "Partner"]}})
    _accounts(ws, transport, "record_type: Partner")
    assert ws.sync("accounts")["succeeded"] == 2
    partner = types["record_types"]["Account"]["Partner"]
    assert {r["RecordTypeId"] for r in ws.records_by("Account").values()} == {partner}


def test_record_type_per_row_from_a_column(ws: Workspace) -> None:
    types = configure(ws.emulator, {"record_types": {"Account": ["Customer", "Partner"]}})
    _accounts(ws, "composite", "", ", kind: RecordType.DeveloperName")
    assert ws.sync("accounts")["succeeded"] == 2
    ids = types["record_types"]["Account"]
    accounts = ws.records_by("Account")
    assert accounts["A-1"]["RecordTypeId"] == ids["Partner"]
    assert accounts["A-2"]["RecordTypeId"] == ids["Customer"]


def test_unknown_record_type_is_refused_before_anything_is_sent(ws: Workspace) -> None:
    configure(ws.emulator, {"record_types": {"Account": ["Customer", "Partner"]}})
    _accounts(ws, "composite", "record_type: Custmer")
    result = ws.run("sync", "accounts", check=False)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "record_type: 'Custmer'" in line and "available: Customer, Partner" in line
    assert "models/accounts.yml" in line
    assert ws.write_calls() == 0 and ws.emulator.records("Account") == []


@pytest.mark.parametrize("operation", ["delete", "mirror"])
def test_hard_delete_leaves_nothing_in_the_recycle_bin(ws: Workspace, operation: str) -> None:
    _accounts(ws, "composite", "")
    assert ws.sync("accounts")["succeeded"] == 2
    if operation == "delete":
        ws.model(
            "gone",
            """
            object: Account
            operation: delete
            primary_key: account_id
            external_id: External_Id__c
            delete_mode: hard
            query: select account_id from accounts where account_id = 'A-1'
            fields: {account_id: External_Id__c}
            """,
        )
        summary = ws.sync("gone")
    else:
        ws.model(
            "accounts",
            """
            object: Account
            operation: mirror
            primary_key: account_id
            external_id: External_Id__c
            delete_mode: hard
            max_delete_rate: 1.0
            query: select * from accounts where account_id = 'A-2'
            fields: {account_id: External_Id__c, name: Name}
            """,
        )
        summary = ws.sync("accounts")
    assert any(
        "hardDelete" in route or "jobs/ingest" in route
        for route in ws.emulator.stats()["requests_by_route"]
    ), summary
    assert set(ws.records_by("Account")) == {"A-2"}
    seen = query_all(ws.emulator, "SELECT External_Id__c, IsDeleted FROM Account")
    assert [r["External_Id__c"] for r in seen] == ["A-2"]
