"""The plan staged by a run's planning step is sent by its sync step only while it is still
the plan that step would make: same run, same model file and SQL, same full-resync
choice, no other run's commits in between. Otherwise the sync step plans again, once.

Engine level (what the Dagster steps call), emulator over HTTPS, DuckDB warehouse. The
sync step of an adopted plan is given a warehouse that does not exist: it cannot have
queried it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from sf_activation.config import Settings
from sf_activation.models import load_model
from sf_activation.sync import SyncRun
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

MODEL = """
object: Account
operation: upsert
primary_key: id
external_id: External_Id__c
query: SELECT id, name FROM accounts
transport: composite
fields:
  id: External_Id__c
  name: Name
"""


def _setup(tmp_path: Path, emulator: EmulatorHandle) -> tuple[Workspace, Settings]:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS id, 'Name ' || i AS name FROM range(50) t(i)"
    )
    ws.model("accounts", MODEL)
    return ws, Settings.from_env(ws.env)


def _no_warehouse(settings: Settings, tmp_path: Path) -> Settings:
    missing = tmp_path / "no-such-dir" / "warehouse.duckdb"
    return settings.model_copy(update={"warehouse_url": SecretStr(f"duckdb:///{missing}")})


def _plans(ws: Workspace) -> list[Path]:
    return sorted((Path(ws.state_url) / "accounts" / "plans").glob("*/*"))


def test_the_sync_step_sends_the_staged_plan_without_querying(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws, settings = _setup(tmp_path, emulator)
    spec = load_model(ws.models / "accounts.yml")
    staged = SyncRun(spec, settings, run_id="run-1").stage()
    assert (staged.added, staged.dry_run) == (50, True)
    assert [p.name for p in _plans(ws)] == ["plan.duckdb", "plan.json"]
    assert not emulator.records("Account")

    sent = SyncRun(
        spec, _no_warehouse(settings, tmp_path), run_id="run-1", use_staged_plan=True
    ).execute()
    assert (sent.plan_source, sent.succeeded, sent.added) == ("staged", 50, 50)
    assert len(emulator.records("Account")) == 50
    assert _plans(ws) == []  # removed once sent


def test_an_edited_model_file_or_another_runs_commit_makes_it_plan_again(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws, settings = _setup(tmp_path, emulator)
    spec = load_model(ws.models / "accounts.yml")

    # The model file edited between the steps: the staged plan is not the model's any more.
    SyncRun(spec, settings, run_id="run-1").stage()
    ws.sql("UPDATE accounts SET name = name || ' (edited)'")
    ws.model("accounts", MODEL.replace("SELECT id, name", "SELECT id, upper(name) AS name"))
    edited = load_model(ws.models / "accounts.yml")
    first = SyncRun(edited, settings, run_id="run-1", use_staged_plan=True).execute()
    assert (first.plan_source, first.succeeded) == ("warehouse", 50)
    names = {r["Name"] for r in emulator.records("Account")}
    assert names == {f"NAME {i} (EDITED)" for i in range(50)}

    # Another run committed between the steps: the staged plan would re-send its rows.
    SyncRun(edited, settings, run_id="run-2").stage()
    ws.sql("UPDATE accounts SET name = name || '!' WHERE id = 'A-1'")
    other = ws.sync("accounts")
    assert other["succeeded"] == 1
    second = SyncRun(edited, settings, run_id="run-2", use_staged_plan=True).execute()
    assert (second.plan_source, second.sent) == ("warehouse", 0)

    # A plan staged by another run is never sent by this one.
    SyncRun(edited, settings, run_id="run-3").stage()
    third = SyncRun(edited, settings, run_id="run-4", use_staged_plan=True).execute()
    assert third.plan_source == "warehouse"

    # A full resync asked only of the sync step is not the staged (incremental) plan.
    SyncRun(edited, settings, run_id="run-5").stage()
    fourth = SyncRun(
        edited, settings, run_id="run-5", use_staged_plan=True, full_resync=True
    ).execute()
    assert (fourth.plan_source, fourth.sent) == ("warehouse", 50)
