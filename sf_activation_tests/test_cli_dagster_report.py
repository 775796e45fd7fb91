"""A sync from the command line shows on the Dagster instance of DAGSTER_HOME: the asset
`salesforce/<model>` gets a materialization with the run's metadata (trigger `cli`) and
its `rejected_rows` check an evaluation, as a Dagster run would record them.

Real command, emulator over HTTPS, DuckDB warehouse, a real (SQLite) Dagster instance.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

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


def test_a_cli_sync_is_recorded_on_the_dagster_instance(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS id, 'Name ' || i AS name FROM range(25) t(i)"
    )
    ws.model("accounts", MODEL)
    home = tmp_path / "dagster_home"
    home.mkdir()
    summary = ws.sync("accounts", env={"DAGSTER_HOME": str(home)})
    assert summary["succeeded"] == 25

    with dg.DagsterInstance.from_config(str(home)) as instance:
        key = dg.AssetKey(["salesforce", "accounts"])
        event = instance.get_latest_materialization_event(key)
        assert event is not None
        mat = event.asset_materialization
        assert mat is not None
        meta = {k: v.value for k, v in mat.metadata.items()}
        assert (meta["sent"], meta["succeeded"], meta["trigger"]) == (25, 25, "cli")
        assert meta["sync_run_id"] == summary["run_id"]
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(key, "rejected_rows")]
        )
        record = check[dg.AssetCheckKey(key, "rejected_rows")]
        assert record.status.value == "SUCCEEDED"


def test_without_dagster_home_nothing_is_reported(tmp_path: Path, emulator: EmulatorHandle) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS id, 'Name ' || i AS name FROM range(3) t(i)"
    )
    ws.model("accounts", MODEL)
    result = ws.run("sync", "accounts")
    assert result.stderr == "" and "dagster" not in result.stdout.lower()
