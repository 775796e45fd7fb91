"""Records are identified by their match key as Salesforce compares it.

A mirror never deletes the record a current row maps to.

Salesforce matches an upsert by External ID case-insensitively (unless the field was made
case sensitive), so `acme-7` becoming `ACME-7` is the same record; and a primary key that
dbt regenerates while the External ID stays is the same record too. The rows whose old
key left the model must not have their record deleted: the upsert of the current row
just wrote to it. Rows that share a match key are explained, never merged into one record.
Real command, emulator over HTTPS, DuckDB warehouse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

MIRROR_BY_KEY = """
object: Account
operation: mirror
primary_key: account_id
external_id: External_Id__c
query: SELECT account_id, name FROM accounts
transport: composite
max_delete_rate: 1.0
fields:
  account_id: External_Id__c
  name: Name
"""

MIRROR_BY_SURROGATE = """
object: Account
operation: mirror
primary_key: row_id
external_id: External_Id__c
query: SELECT row_id, account_key, name FROM accounts
transport: composite
max_delete_rate: 1.0
fields:
  account_key: External_Id__c
  name: Name
"""


def _ids(emulator: EmulatorHandle) -> dict[str, str]:
    return {r["Id"]: r["External_Id__c"] for r in emulator.records("Account")}


def test_a_key_whose_case_changes_keeps_its_record(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'acme-' || i AS account_id, 'A ' || i AS name FROM range(50) t(i)"
    )
    ws.model("m", MIRROR_BY_KEY)
    ws.sync("m")
    before = _ids(emulator)
    assert len(before) == 50
    ws.sql(
        "UPDATE accounts SET account_id = upper(account_id), name = name || '!' WHERE account_id = 'acme-7'"
    )
    second = ws.sync("m")
    assert second["deleted"] == 0 and second["superseded"] == 1, second
    after = _ids(emulator)
    assert set(after) == set(before)  # the same 50 records, none deleted
    third = ws.sync("m")  # and it stays so: nothing to send, nothing to delete
    assert third["sent"] == 0 and third["deleted"] == 0 and set(_ids(emulator)) == set(before)


def test_a_regenerated_primary_key_keeps_the_record(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'row-' || i AS row_id, 'K-' || i AS account_key, "
        "'A ' || i AS name FROM range(10) t(i)"
    )
    ws.model("m", MIRROR_BY_SURROGATE)
    ws.sync("m")
    before = _ids(emulator)
    # dbt rebuilt the table: every surrogate key is new, the External IDs are not.
    ws.sql("UPDATE accounts SET row_id = 'new-' || row_id")
    second = ws.sync("m")
    assert second["deleted"] == 0 and second["superseded"] == 10, second
    assert _ids(emulator) == before
    # A row that really left the model is still deleted.
    ws.sql("DELETE FROM accounts WHERE account_key = 'K-3'")
    third = ws.sync("m")
    assert third["deleted"] == 1
    assert sorted(_ids(emulator).values()) == sorted(v for v in before.values() if v != "K-3")


UPSERT = """
object: Account
operation: upsert
primary_key: row_id
external_id: External_Id__c
query: SELECT row_id, account_key, name FROM accounts
transport: {transport}
fields:
  account_key: External_Id__c
  name: Name
"""


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_rows_sharing_an_external_id_are_explained_never_merged(
    tmp_path: Path, emulator: EmulatorHandle, transport: str
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    # 400 rows: the first and the last share a key (two calls apart); two others differ
    # only in case, which Salesforce compares case-insensitively.
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'row-' || i AS row_id, 'K-' || i AS account_key, "
        "'A ' || i AS name FROM range(400) t(i)"
    )
    ws.sql("UPDATE accounts SET account_key = 'K-0' WHERE row_id = 'row-399'")
    ws.sql("UPDATE accounts SET account_key = 'acme-9' WHERE row_id = 'row-100'")
    ws.sql("UPDATE accounts SET account_key = 'ACME-9' WHERE row_id = 'row-200'")
    ws.model("m", UPSERT.format(transport=transport))
    first = ws.sync("m")
    dupes = {"row-0", "row-399", "row-100", "row-200"}
    rejected = {r["primary_key"]: r for r in ws.rejects(first)}
    assert set(rejected) == dupes, sorted(rejected)
    assert {r["error_code"] for r in rejected.values()} == {"DUPLICATE_EXTERNAL_ID"}
    assert all("case-insensitively" in r["message"] for r in rejected.values())
    assert first["invalid"] == 4 and first["succeeded"] == 396 and first["sent"] == 396
    held = ws.records_by("Account")
    assert len(held) == 396 and "K-0" not in held and "acme-9" not in {k.lower() for k in held}
    # Stable: the next run sends nothing and explains the same four rows again.
    second = ws.sync("m")
    assert second["sent"] == 0 and second["invalid"] == 4
    # Fixing the data lands them.
    ws.sql("UPDATE accounts SET account_key = 'K-399' WHERE row_id = 'row-399'")
    ws.sql("UPDATE accounts SET account_key = 'K-200' WHERE row_id = 'row-200'")
    third = ws.sync("m")
    assert third["invalid"] == 0 and third["succeeded"] == 4
    assert len(ws.records_by("Account")) == 400


UPDATE_BY_KEY = """
object: Account
operation: {operation}
primary_key: account_key
external_id: External_Id__c
query: SELECT account_key, name FROM accounts
transport: composite
fields:
  account_key: External_Id__c
  name: Name
"""


def _seed(ws: Workspace, keys: list[str]) -> dict[str, str]:
    """Records created by another integration (not this model): key -> Id."""
    sf = ws.emulator.salesforce()
    for key in keys:
        sf.Account.create({"Name": "seeded", "External_Id__c": key})
    return {r["External_Id__c"]: r["Id"] for r in ws.emulator.records("Account")}


def test_update_finds_records_whose_external_id_differs_in_case_and_long_ids(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    long_keys = [f"{'L' * 85}-{i:03d}" for i in range(300)]  # 90 characters each
    seeded = _seed(ws, ["ABC-1", *long_keys])
    rows = [("abc-1", "renamed")] + [(k, f"long {i}") for i, k in enumerate(long_keys)]
    ws.sql("CREATE TABLE accounts (account_key VARCHAR, name VARCHAR)")
    ws.sql("INSERT INTO accounts VALUES " + ", ".join(f"('{k}', '{n}')" for k, n in rows))
    ws.model("m", UPDATE_BY_KEY.format(operation="update"))
    summary = ws.sync("m")
    assert summary["failed"] == 0 and summary["succeeded"] == 301, ws.rejects(summary)[:2]
    held = {r["Id"]: r["Name"] for r in emulator.records("Account")}
    assert held[seeded["ABC-1"]] == "renamed"
    assert all(held[seeded[k]] == f"long {i}" for i, k in enumerate(long_keys))
    assert len(held) == 301  # updated, never created


def test_deleting_records_already_gone_counts_as_done(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    seeded = _seed(ws, [f"D-{i}" for i in range(10)])
    sf = emulator.salesforce()
    for key in ("D-0", "D-1"):
        sf.Account.delete(seeded[key])  # someone deleted these already
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'D-' || i AS account_key, 'x' AS name FROM range(10) t(i)"
    )
    ws.model("m", UPDATE_BY_KEY.format(operation="delete"))
    first = ws.sync("m")
    assert first["failed"] == 0 and first["rejected"] == 0 and first["succeeded"] == 10, first
    assert emulator.records("Account") == []
    second = ws.sync("m")
    assert second["sent"] == 0 and second["rejected"] == 0


def test_an_insert_models_changed_rows_leave_out_fields_set_on_create_only(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    # Lead.IsConverted is createable but not updateable: set when the Lead is created,
    # it cannot be sent when a changed row updates the record.
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE leads AS SELECT 'L-' || i AS lead_id, 'Last ' || i AS last_name, "
        "'Co' AS company, false AS converted FROM range(5) t(i)"
    )
    ws.model(
        "m",
        """
        object: Lead
        operation: insert
        primary_key: lead_id
        query: SELECT lead_id, last_name, company, converted FROM leads
        transport: composite
        fields:
          lead_id: Description
          last_name: LastName
          company: Company
          converted: IsConverted
        """,
    )
    assert ws.sync("m")["succeeded"] == 5
    ws.sql("UPDATE leads SET last_name = last_name || ' v2'")
    changed = ws.sync("m")
    assert changed["changed"] == 5 and changed["succeeded"] == 5, ws.rejects(changed)[:1]
    held = ws.records_by("Lead", "Description")
    assert len(held) == 5 and all(r["LastName"].endswith(" v2") for r in held.values())
