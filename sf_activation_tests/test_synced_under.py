"""A state is only meaningful for the settings it was made under (object, external id,
null handling): changing them either re-sends what must change or is refused, never
silently sends to the wrong place. Real command, emulator over HTTPS, DuckDB warehouse.
"""

from __future__ import annotations

import json
from pathlib import Path

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

MODEL = """
object: {object}
operation: mirror
primary_key: account_id
external_id: External_Id__c
query: SELECT account_id, name, revenue FROM accounts
transport: composite
nulls: {nulls}
fields:
  account_id: External_Id__c
{fields}"""


def _model(ws: Workspace, *, object_name: str = "Account", nulls: str = "clear") -> None:
    # A mapping that fits the object, so only the change of object can stop the run.
    fields = (
        "  name: Name\n  revenue: AnnualRevenue\n"
        if object_name == "Account"
        else "  name: LastName\n"
    )
    ws.model("m", MODEL.format(object=object_name, nulls=nulls, fields=fields))


def _accounts(ws: Workspace) -> None:
    ws.sql(
        "CREATE OR REPLACE TABLE accounts AS SELECT 'A-' || i AS account_id, 'A ' || i AS name, "
        "10.0 * i AS revenue FROM range(1, 21) t(i)"
    )


def test_switching_nulls_from_keep_to_clear_clears_what_was_kept(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    _accounts(ws)
    _model(ws, nulls="keep")
    ws.sync("m")
    ws.sql("UPDATE accounts SET revenue = NULL WHERE account_id = 'A-3'")
    kept = ws.sync("m")
    assert kept["changed"] == 1
    held = ws.records_by("Account")
    assert float(held["A-3"]["AnnualRevenue"]) == 30.0  # keep: the null left it alone
    _model(ws, nulls="clear")
    cleared = ws.sync("m")
    assert cleared["full_resync"] and cleared["sent"] == 20, cleared
    assert ws.records_by("Account")["A-3"]["AnnualRevenue"] is None
    assert ws.sync("m")["sent"] == 0  # once, not every run


def test_moving_a_model_to_another_object_is_refused_before_anything_is_sent(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    _accounts(ws)
    _model(ws)
    ws.sync("m")
    before = {r["Id"] for r in emulator.records("Account")}
    calls = ws.write_calls()
    ws.sql("DELETE FROM accounts WHERE account_id = 'A-1'")
    _model(ws, object_name="Contact")
    refused = ws.run("sync", "m", "--json", check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "object: is Contact" in refused.stderr
    assert "made syncing Account" in refused.stderr and "m.yml" in refused.stderr
    assert ws.write_calls() == calls  # nothing sent, no Account deleted by Id
    assert {r["Id"] for r in emulator.records("Account")} == before
    assert emulator.records("Contact") == []
    plan = ws.run("plan", "m", "--json", check=False)
    assert plan.returncode == 2 and "object: is Contact" in plan.stderr
    _model(ws)  # restored: the mirror goes on where it was
    assert ws.sync("m")["deleted"] == 1


def test_changing_a_fields_on_null_resends_every_row_once(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    _accounts(ws)
    revenue = "  revenue: {{field: AnnualRevenue, on_null: {mode}}}\n"
    body = MODEL.format(object="Account", nulls="clear", fields="  name: Name\n{fields}")
    ws.model("m", body.format(fields=revenue.format(mode="keep")))
    ws.sync("m")
    ws.sql("UPDATE accounts SET revenue = NULL WHERE account_id = 'A-3'")
    assert ws.sync("m")["changed"] == 1
    assert float(ws.records_by("Account")["A-3"]["AnnualRevenue"]) == 30.0  # kept
    ws.model("m", body.format(fields=revenue.format(mode="clear")))
    cleared = ws.sync("m")
    assert cleared["full_resync"] and cleared["sent"] == 20, cleared
    assert ws.records_by("Account")["A-3"]["AnnualRevenue"] is None
    assert ws.sync("m")["sent"] == 0  # once, not every run


def test_a_synced_under_file_from_before_on_null_reads_as_unchanged(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    _accounts(ws)
    ws.model(
        "m",
        MODEL.format(
            object="Account",
            nulls="clear",
            fields="  name: Name\n  revenue: {field: AnnualRevenue, on_null: keep}\n",
        ),
    )
    ws.sync("m")
    (path,) = Path(ws.state_url).glob("**/synced_under.json")
    old = json.loads(path.read_text())
    del old["field_nulls"]  # as written before field null modes were recorded
    path.write_text(json.dumps(old))
    again = ws.sync("m")
    assert not again["full_resync"] and again["sent"] == 0, again
