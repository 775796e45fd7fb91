"""Polymorphic lookups by External ID (`What:Account.External_Id__c` in `fields:`) reach
Salesforce on both transports: Task.WhatId ends up the Id of the Account or Opportunity
whose External ID the row names. Real command, emulator over HTTPS, DuckDB warehouse.

The wire forms are Salesforce's: sObject Collections nests
`"What": {"attributes": {"type": "Account"}, "External_Id__c": "A-1"}`, Bulk API 2.0 heads
the column `Account:What.External_Id__c` (ObjectType:RelationshipName.IndexedFieldName).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

PARENTS = """
object: {object}
operation: upsert
primary_key: ext
external_id: External_Id__c
query: SELECT ext, name{extra} FROM {table}
transport: composite
fields:
  ext: External_Id__c
  name: Name
{fields}"""

TASKS = """
object: Task
operation: insert
primary_key: task_key
query: SELECT task_key, subject, parent_ext FROM tasks WHERE parent_kind = '{kind}'
transport: {transport}
fields:
  subject: Subject
  parent_ext: "What:{kind}.External_Id__c"
"""


def _parents(ws: Workspace) -> tuple[dict[str, str], dict[str, str]]:
    """Accounts A-1..A-3 and Opportunities O-1..O-2 upserted by External ID: their Ids."""
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS ext, 'Acct ' || i AS name FROM range(1, 4) t(i)"
    )
    ws.sql(
        "CREATE TABLE opportunities AS SELECT 'O-' || i AS ext, 'Opp ' || i AS name, "
        "'Prospecting' AS stage, DATE '2030-01-01' AS close_date FROM range(1, 3) t(i)"
    )
    ws.model("accounts", PARENTS.format(object="Account", extra="", table="accounts", fields=""))
    ws.model(
        "opportunities",
        PARENTS.format(
            object="Opportunity",
            extra=", stage, close_date",
            table="opportunities",
            fields="  stage: StageName\n  close_date: CloseDate\n",
        ),
    )
    for name in ("accounts", "opportunities"):
        summary = ws.sync(name)
        assert summary["rejected"] == 0, summary
    accounts = {k: r["Id"] for k, r in ws.records_by("Account").items()}
    opportunities = {k: r["Id"] for k, r in ws.records_by("Opportunity").items()}
    return accounts, opportunities


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_task_what_id_is_set_from_an_account_or_opportunity_external_id(
    tmp_path: Path, emulator: EmulatorHandle, transport: str
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    accounts, opportunities = _parents(ws)
    ws.sql(
        "CREATE TABLE tasks AS SELECT * FROM (VALUES "
        "('t1', 'Call A-1', 'Account', 'A-1'), ('t2', 'Call A-3', 'Account', 'A-3'), "
        "('t3', 'Demo O-2', 'Opportunity', 'O-2'), ('t4', 'Demo O-1', 'Opportunity', 'O-1')"
        ") t(task_key, subject, parent_kind, parent_ext)"
    )
    for kind in ("Account", "Opportunity"):
        ws.model(f"tasks_{kind.lower()}", TASKS.format(kind=kind, transport=transport))
        summary = ws.sync(f"tasks_{kind.lower()}")
        assert summary["sent"] == 2 and summary["rejected"] == 0, (summary, ws.rejects(summary))
    what = {t["Subject"]: t["WhatId"] for t in emulator.records("Task")}
    assert what == {
        "Call A-1": accounts["A-1"],
        "Call A-3": accounts["A-3"],
        "Demo O-2": opportunities["O-2"],
        "Demo O-1": opportunities["O-1"],
    }
    # The emulator derives AccountId from an Account WhatId, as a real org does.
    by_subject = {t["Subject"]: t for t in emulator.records("Task")}
    assert by_subject["Call A-3"]["AccountId"] == accounts["A-3"]
    # Nothing changed: nothing is sent again (the lookup's payload hashes are stable).
    assert ws.sync("tasks_account")["sent"] == 0


def test_emulator_refuses_a_polymorphic_type_the_field_does_not_take(
    emulator: EmulatorHandle,
) -> None:
    http = emulator.http
    account = http.post(
        emulator.url("/services/data/v62.0/sobjects/Account"),
        json={"Name": "Acme", "External_Id__c": "A-9"},
    ).json()["id"]
    body = {
        "allOrNone": False,
        "records": [
            {
                "attributes": {"type": "Task"},
                "Subject": "ok",
                "What": {"attributes": {"type": "Account"}, "External_Id__c": "A-9"},
            },
            {
                "attributes": {"type": "Task"},
                "Subject": "a person is not a What",
                "What": {"attributes": {"type": "Contact"}, "External_Id__c": "A-9"},
            },
        ],
    }
    results = http.post(emulator.url("/services/data/v62.0/composite/sobjects"), json=body).json()
    assert results[0]["success"], results
    assert not results[1]["success"]
    assert results[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert results[1]["errors"][0]["fields"] == ["WhatId"]
    assert [t["WhatId"] for t in emulator.records("Task")] == [account]
