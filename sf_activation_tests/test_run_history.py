"""Run history: every sync — the command or a Dagster step — leaves a run record beside the
state, listed by `sf-activation runs MODEL` newest first; failed runs too; old records
pruned on write; a record that cannot be written never fails the run.

Real command in a subprocess (`Workspace`), the emulator over HTTPS, a real Dagster
instance for the Dagster run.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource
from sf_activation.definitions import build_definitions, job_name
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.reliability import create_accounts, model_body
from sf_activation_tests.support.workspace import Workspace


def _materialization(instance: dg.DagsterInstance, run_id: str, key: list[str]) -> dict:
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            if mat.asset_key == dg.AssetKey(key):
                return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {key} in run {run_id}")


def _runs_json(ws: Workspace, *extra: str) -> list[dict]:
    out = ws.run("runs", "m", "--json", *extra).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_cli_and_dagster_runs_are_listed_newest_first_with_counts_and_triggers(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 5)  # 5 good rows, 4 invalid, 3 orphans Salesforce refuses
    ws.model("m", model_body("upsert", "composite"))
    first = ws.sync("m")
    ws.sql("UPDATE accounts SET name = name || ' v2' WHERE account_id IN ('R-0', 'R-1')")
    second = ws.sync("m")
    assert (first["succeeded"], first["failed"]) == (5, 3)
    assert (second["changed"], second["succeeded"], second["failed"]) == (2, 2, 3)

    defs = build_definitions(
        ws.models,
        resources={
            "salesforce": SalesforceResource(
                instance_url=emulator.instance_url,
                access_token=emulator.access_token,
                ca_bundle=str(emulator.ca_bundle),
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=f"duckdb:///{ws.warehouse}",
                models_dir=str(ws.models),
                state_url=ws.state_url,
                rejects_url=ws.rejects_url,
            ),
        },
        declare_dbt_assets=False,
        automation=False,
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(job_name("m")).execute_in_process(
            instance=instance, raise_on_error=False
        )
        meta = _materialization(instance, result.run_id, ["salesforce", "m"])
    dagster_run_id = result.run_id

    records = _runs_json(ws)
    assert len(records) == 3
    newest, middle, oldest = records
    assert [r["trigger"] for r in records] == [dagster_run_id, "cli", "cli"]
    assert newest["trigger_kind"] == "dagster" and newest["run_id"] == dagster_run_id
    assert [oldest["run_id"], middle["run_id"]] == [first["run_id"], second["run_id"]]
    assert oldest["started_at"] < middle["started_at"] < newest["started_at"]
    # The counts are the run's own, not the model's totals.
    assert (oldest["counts"]["added"], oldest["counts"]["succeeded"]) == (8, 5)
    assert (middle["counts"]["changed"], middle["counts"]["succeeded"]) == (2, 2)
    assert (newest["counts"]["pending"], newest["counts"]["sent"]) == (3, 3)
    assert newest["counts"]["succeeded"] == 0 and newest["counts"]["unchanged"] == 5
    for record, summary in ((oldest, first), (middle, second)):
        assert record["api_calls"] == summary["api_calls"] > 0
        assert record["rejects"] == summary["rejected"] == 7
        assert record["rejects_url"] == summary["rejects_url"]
        assert record["reject_codes"] == summary["reject_codes"]
        assert record["outcome"] == "succeeded" and record["error"] is None
        assert record["transport"] == "composite"
        assert record["duration_s"] >= summary["duration_s"] > 0
    assert newest["rejects"] == 7 and newest["reject_codes"]["INVALID_FIELD"] == 3

    # The Dagster materialization links to its record, which is the newest one.
    record_path = Path(meta["run_record"])
    assert record_path.is_file() and record_path.parent == Path(ws.state_url) / "m" / "runs"
    assert json.loads(record_path.read_text())["run_id"] == dagster_run_id
    assert meta["sync_run_id"] == dagster_run_id

    limited = ws.run("runs", "m", "--limit", "2")
    assert "2 of 3 runs" in limited.stdout
    assert first["run_id"] not in limited.stdout  # the oldest is the one left out
    limited_json = ws.run("runs", "m", "--json", "--limit", "2")
    assert len(limited_json.stdout.splitlines()) == 2 and "2 of 3" in limited_json.stderr


def test_unknown_model_is_one_line_and_exit_2(tmp_path: Path, emulator: EmulatorHandle) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    result = ws.run("runs", "nope", check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "nope" in result.stderr
    assert result.stdout == ""


def test_a_failed_run_is_recorded_with_its_one_line_error_and_no_secret(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 3)
    ws.model("m", model_body("upsert", "composite"))
    bad_token = "00D000000000001!AQ4AQBadTokenValueThatMustNeverBeShown"
    failed = ws.run("sync", "m", "--json", env={"SALESFORCE_ACCESS_TOKEN": bad_token}, check=False)
    assert failed.returncode == 1
    (record,) = _runs_json(ws)
    assert record["outcome"] == "failed" and record["trigger"] == "cli"
    assert record["error"] and "\n" not in record["error"]
    assert "Authentication" in record["error"] or "401" in record["error"]
    assert record["counts"]["sent"] == 0
    for path in (Path(ws.state_url) / "m" / "runs").iterdir():
        assert bad_token not in path.read_text()
    table = ws.run("runs", "m").stdout
    assert "failed" in table and "1 of 1 runs" in table


def test_records_past_retention_are_pruned_on_write(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 2)
    ws.model("m", model_body("upsert", "composite"))
    ws.sync("m")
    runs = Path(ws.state_url) / "m" / "runs"
    (kept,) = sorted(runs.glob("*.json"))
    old = runs / "20200101T000000.000Z-old-run.json"
    old.write_text(kept.read_text())
    (runs / "20200101T000000.000Z-old-run.requests.jsonl").write_text("{}\n")
    assert len(_runs_json(ws)) == 2
    ws.sync("m", env={"SF_ACTIVATION_RUN_HISTORY_DAYS": "1"})
    names = sorted(p.name for p in runs.iterdir())
    assert not any(n.startswith("20200101") for n in names)
    assert len([n for n in names if n.endswith(".json")]) == 2


def test_a_record_that_cannot_be_written_does_not_fail_the_run(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, 2)
    ws.model("m", model_body("upsert", "composite"))
    ws.sync("m")
    runs = Path(ws.state_url) / "m" / "runs"
    for path in runs.iterdir():
        path.unlink()
    runs.rmdir()
    runs.write_text("not a directory")  # the record's directory cannot be made
    result = ws.run("sync", "m", "--json")
    summary = json.loads(result.stdout)
    assert summary["run_record_url"] is None and summary["rows"] == 9
    assert "could not write the run record" in result.stderr
