"""Shared pieces of the reliability tests: a model's data set with rows made to fail in
every way, and the check of the promise (Salesforce holds exactly the valid rows with the
right values and no duplicates; the last reject file holds exactly the rest, with reasons).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

from sf_activation_tests.support.workspace import Workspace

# Rows the plan refuses (never sent) and rows Salesforce refuses (a lookup to a parent
# that does not exist): every one must end in the reject file with its reason.
INVALID_ROWS = {
    None: "NULL_PRIMARY_KEY",
    "R-DUP": "DUPLICATE_PRIMARY_KEY",
    "R-LONG": "STRING_TOO_LONG",
}
ORPHANS = ("R-ORPHAN-0", "R-ORPHAN-1", "R-ORPHAN-2")


def model_body(
    operation: str,
    transport: str,
    *,
    key_field: str = "External_Id__c",
    extra: str = "",
) -> str:
    """An Account model over the `accounts` table; `key_field` receives the primary key."""
    external = "external_id: External_Id__c\n" if operation != "insert" else ""
    return (
        f"object: Account\noperation: {operation}\nprimary_key: account_id\n{external}"
        "query: SELECT account_id, name, revenue, parent_id FROM accounts\n"
        f"transport: {transport}\nmax_delete_rate: 0.5\n"
        f"fields:\n  account_id: {key_field}\n  name: Name\n  revenue: AnnualRevenue\n"
        "  parent_id: Parent.External_Id__c\n" + extra
    )


def create_accounts(ws: Workspace, valid: int, *, prefix: str = "R-", name: str = "Row") -> None:
    """`valid` good rows plus the invalid and orphan rows above."""
    ws.sql(
        f"CREATE OR REPLACE TABLE accounts AS SELECT '{prefix}' || i AS account_id, "
        f"'{name} ' || i AS name, i * 10.0 AS revenue, CAST(NULL AS VARCHAR) AS parent_id "
        f"FROM range({valid}) t(i)"
    )
    ws.sql("INSERT INTO accounts VALUES (NULL, 'no key', 1.0, NULL)")
    ws.sql(
        "INSERT INTO accounts VALUES ('R-DUP', 'dup one', 1.0, NULL), ('R-DUP', 'dup two', 2, NULL)"
    )
    ws.sql("INSERT INTO accounts VALUES ('R-LONG', ?, 1.0, NULL)", ["x" * 300])
    for pk in ORPHANS:
        ws.sql("INSERT INTO accounts VALUES (?, 'orphan', 1.0, 'NO-SUCH-PARENT')", [pk])


def expected_valid(ws: Workspace) -> dict[str, tuple[str, float]]:
    """pk -> (Name, AnnualRevenue) of the rows that should be in Salesforce."""
    rows = ws.sql(
        "SELECT account_id, name, revenue FROM accounts WHERE account_id IS NOT NULL "
        "AND parent_id IS NULL AND length(name) <= 255 AND account_id IN "
        "(SELECT account_id FROM accounts GROUP BY 1 HAVING count(*) = 1)"
    )
    return {pk: (name, float(revenue)) for pk, name, revenue in rows}


def expected_rejects(ws: Workspace, orphan_code: str) -> list[tuple[str | None, str]]:
    """(primary key, error code) of every row that cannot land."""
    present = {r[0] for r in ws.sql("SELECT DISTINCT account_id FROM accounts")}
    out: list[tuple[str | None, str]] = []
    for pk, code in INVALID_ROWS.items():
        if pk in present:
            out += [(pk, code)] * (2 if pk == "R-DUP" else 1)
    out += [(pk, orphan_code) for pk in ORPHANS if pk in present]
    return sorted(out, key=lambda p: (p[0] or "", p[1]))


def sync_until_settled(
    ws: Workspace, model: str, *, reruns: int = 2, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run, then rerun while rows were left pending (at most `reruns` times)."""
    runs = [ws.sync(model, env=env)]
    while _unsettled(runs[-1]) and len(runs) <= reruns:
        if runs[-1].get("unconfirmed"):
            time.sleep(1.2)  # held creates are released after the grace (Workspace: 1 s)
        runs.append(ws.sync(model, env=env))
    return runs


def _unsettled(summary: dict[str, Any]) -> bool:
    return bool(summary["retried"] or summary["stopped_reason"] or summary.get("unconfirmed"))


def assert_promise_kept(
    ws: Workspace,
    last: dict[str, Any],
    *,
    key_field: str = "External_Id__c",
    check_rejects: bool = True,
    operation: str = "upsert",
) -> None:
    """Salesforce holds exactly the valid rows, right values, no duplicates; the last
    run's reject file holds exactly the rest, each with its reason."""
    assert not _unsettled(last), f"not settled: {last}"
    want = expected_valid(ws)
    held = ws.records_by("Account", key_field)
    assert set(held) == set(want), (
        f"missing {sorted(set(want) - set(held))[:5]}, extra {sorted(set(held) - set(want))[:5]}"
    )
    wrong = [
        pk
        for pk, (name, revenue) in want.items()
        if held[pk]["Name"] != name or float(held[pk]["AnnualRevenue"]) != revenue
    ]
    assert not wrong, f"wrong values for {wrong[:5]}: {held[wrong[0]]}"
    if not check_rejects:
        return
    rejects = ws.rejects(last)
    got = sorted(
        ((r["primary_key"], r["error_code"]) for r in rejects), key=lambda p: (p[0] or "", p[1])
    )
    # update finds no record for an orphan (it was never created); the others are refused
    # by Salesforce for the missing parent.
    orphan_code, orphan_text = (
        ("NOT_FOUND", "R-ORPHAN") if operation == "update" else ("INVALID_FIELD", "NO-SUCH-PARENT")
    )
    assert got == expected_rejects(ws, orphan_code), got
    assert all(r["message"] for r in rejects), "a reject without a reason"
    orphan_messages = [r["message"] for r in rejects if r["primary_key"] in ORPHANS]
    assert all(orphan_text in m for m in orphan_messages), orphan_messages


@dataclass
class TokenRenewer:
    """Keeps a test's emulator handle usable when the emulator expires sessions."""

    handle: Any

    def renew(self) -> None:
        response = requests.post(
            self.handle.instance_url + "/services/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": "t", "client_id": "tests"},
            verify=self.handle.ca_bundle,
            timeout=10,
        )
        response.raise_for_status()
        self.handle.access_token = response.json()["access_token"]
        if self.handle._http is not None:
            self.handle._http.close()
        self.handle._http = None
