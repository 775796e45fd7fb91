"""A self-referencing lookup (Account.Parent by External ID) goes in waves by depth within
one run: every parent is confirmed by Salesforce before its children are written, whatever
order the query returns and however the rows fall into parallel calls or Bulk jobs.

Real command, emulator over HTTPS, DuckDB warehouse. The chains are built so that sorting
by the parent's key (what grouped children by parent before) puts a child ahead of its
own parent: K-9 ← K-8 ← K-7 ← K-6 per chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

CHAINS = 60
DEPTH = 4

ACCOUNTS = """
object: Account
operation: upsert
primary_key: id
external_id: External_Id__c
query: SELECT id, name, parent FROM hierarchy ORDER BY depth DESC
transport: {transport}
fields:
  id: External_Id__c
  name: Name
  parent: Parent.External_Id__c
"""


def _workspace(tmp_path: Path, emulator: EmulatorHandle) -> Workspace:
    ws = Workspace(tmp_path / "ws", emulator)
    # Chain c: C{c}-K-9 (root) <- C{c}-K-8 <- C{c}-K-7 <- C{c}-K-6.
    ws.sql(
        f"""
        CREATE TABLE hierarchy AS
        SELECT 'C' || c || '-K-' || (9 - d) AS id, 'Account ' || c || '/' || d AS name,
               CASE WHEN d > 0 THEN 'C' || c || '-K-' || (10 - d) END AS parent, d AS depth
        FROM range({CHAINS}) a(c), range({DEPTH}) b(d)
        """
    )
    return ws


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_parents_land_before_children_in_one_run(
    tmp_path: Path, emulator: EmulatorHandle, transport: str
) -> None:
    ws = _workspace(tmp_path, emulator)
    ws.model("accounts", ACCOUNTS.format(transport=transport))
    summary = ws.sync("accounts")
    assert (summary["succeeded"], summary["failed"]) == (CHAINS * DEPTH, 0), ws.rejects(summary)
    records = ws.records_by("Account")
    by_id = {r["Id"]: key for key, r in records.items()}
    assert len(records) == CHAINS * DEPTH
    for c in range(CHAINS):
        for d in range(1, DEPTH):
            child = records[f"C{c}-K-{9 - d}"]
            assert by_id[child["ParentId"]] == f"C{c}-K-{10 - d}"
    # Nothing changed: nothing sent, and no wave is made of nothing.
    assert ws.sync("accounts")["sent"] == 0


def test_a_parent_cycle_is_refused_by_salesforce_not_looped(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE hierarchy AS SELECT * FROM (VALUES "
        "('X-1', 'One', 'X-2', 0), ('X-2', 'Two', 'X-1', 0), ('Y-1', 'Root', NULL, 0)) "
        "t(id, name, parent, depth)"
    )
    ws.model("accounts", ACCOUNTS.format(transport="composite"))
    summary = ws.sync("accounts")
    # The root lands; the two that point at each other cannot both be first.
    assert summary["sent"] == 3 and summary["succeeded"] >= 1
    assert "Y-1" in ws.records_by("Account")
