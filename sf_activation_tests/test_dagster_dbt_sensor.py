"""The dbt sensor against a real dbt project (dbt-duckdb) built in a temp directory."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from sf_activation.definitions import build_definitions

DBT = Path(sys.executable).parent / "dbt"

pytestmark = pytest.mark.skipif(not DBT.exists(), reason="dbt is not installed in this venv")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _dbt_project(root: Path) -> Path:
    project = root / "dbt"
    _write(
        project / "dbt_project.yml",
        """
        name: crm
        version: "1.0.0"
        profile: crm
        model-paths: ["models"]
        models:
          crm:
            +materialized: table
        """,
    )
    _write(
        project / "profiles.yml",
        f"""
        crm:
          target: dev
          outputs:
            dev:
              type: duckdb
              path: "{root / "warehouse.duckdb"}"
              threads: 1
        """,
    )
    _write(
        project / "models" / "fct_accounts.sql",
        "select 'ACC-1' as account_id, 'Acme' as name",
    )
    _write(
        project / "models" / "fct_contacts.sql",
        "select 'C-1' as contact_id, 'ACC-1' as account_id",
    )
    _write(
        project / "models" / "fct_events.sql",
        "select 'E-1' as event_id, timestamp '2024-01-02 10:00:00' as occurred_at",
    )
    # Fails every time: the model reading it must never be synced by the sensor.
    _write(project / "models" / "fct_broken.sql", "select * from no_such_table")
    _write(
        project / "models" / "schema.yml",
        """
        version: 2
        models:
          - name: fct_accounts
            columns:
              - name: account_id
                data_tests: [unique, not_null]
        """,
    )
    return project


def _models(root: Path) -> Path:
    models = root / "models"
    common = "primary_key: id\nquery: select 1 as id\nfields:\n  id: External_Id__c\n"
    _write(
        models / "accounts.yml",
        "object: Account\noperation: upsert\nexternal_id: External_Id__c\n"
        + common
        + "dbt_models: [fct_accounts]\n",
    )
    _write(
        models / "contacts.yml",
        "object: Contact\noperation: upsert\nexternal_id: External_Id__c\n"
        + common
        + "dbt_models: [fct_contacts, fct_accounts]\n",
    )
    _write(
        models / "events.yml",
        "object: Task\noperation: insert\n"
        + "primary_key: id\nquery: select 1 as id, current_date as day\n"
        + "fields:\n  id: External_Id__c\n"
        + "dbt_models: [fct_events]\n"
        + "partition_by: {column: day, start: 2024-01-01, cadence: daily}\n",
    )
    _write(
        models / "broken_reader.yml",
        "object: Account\noperation: upsert\nexternal_id: External_Id__c\n"
        + common
        + "dbt_models: [fct_broken]\n",
    )
    _write(
        models / "no_dbt.yml",
        "object: Lead\noperation: upsert\nexternal_id: External_Id__c\n" + common,
    )
    return models


def _dbt(project: Path, *args: str) -> None:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
    subprocess.run(
        [str(DBT), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # fct_broken fails on purpose: dbt exits 1 but writes run_results.json
    )
    assert (project / "target" / "run_results.json").is_file()


def _tick(defs: dg.Definitions, cursor: str | None):
    sensor = defs.resolve_sensor_def("dbt_run_results_sensor")
    with dg.build_sensor_context(cursor=cursor, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def _requested(data) -> dict[str, str | None]:
    return {r.job_name: r.partition_key for r in data.run_requests}


def test_dbt_sensor_requests_syncs_of_models_whose_dbt_models_were_rebuilt(tmp_path: Path) -> None:
    project = _dbt_project(tmp_path)
    target = project / "target"
    defs = build_definitions(_models(tmp_path), dbt_target_dir=str(target))

    # Before dbt ever ran: nothing to read, nothing requested, cursor untouched.
    first = _tick(defs, None)
    assert not first.run_requests and first.cursor is None
    assert "dbt has not run" in (first.skip_message or "")

    _dbt(project, "build")
    results = json.loads((target / "run_results.json").read_text())
    built = _tick(defs, None)
    requested = _requested(built)
    events_partitions = defs.resolve_assets_def(dg.AssetKey(["warehouse", "events"])).partitions_def
    assert requested == {
        "sync_accounts": None,
        "sync_contacts": None,
        "sync_events": events_partitions.get_last_partition_key(),
    }
    assert all(
        r.tags["dbt/invocation_id"] == results["metadata"]["invocation_id"]
        for r in built.run_requests
    )
    # The rebuilt dbt models are reported as materializations of their asset keys.
    reported = {e.asset_key for e in built.asset_events}
    assert reported == {
        dg.AssetKey("fct_accounts"),
        dg.AssetKey("fct_contacts"),
        dg.AssetKey("fct_events"),
    }
    cursor = json.loads(built.cursor)
    assert cursor == {
        "generated_at": results["metadata"]["generated_at"],
        "invocation_id": results["metadata"]["invocation_id"],
    }

    # The same invocation never triggers twice.
    again = _tick(defs, built.cursor)
    assert not again.run_requests and not again.asset_events
    assert again.cursor in (None, built.cursor)

    # A later run of one dbt model syncs only the models that read it.
    _dbt(project, "run", "--select", "fct_accounts")
    only_accounts = _tick(defs, built.cursor)
    assert _requested(only_accounts) == {"sync_accounts": None, "sync_contacts": None}
    assert {e.asset_key for e in only_accounts.asset_events} == {dg.AssetKey("fct_accounts")}
    assert only_accounts.cursor != built.cursor

    # `dbt compile` writes run_results.json with "success" results but rebuilds nothing:
    # the cursor moves on, no sync is requested.
    _dbt(project, "compile", "--select", "fct_contacts")
    compiled = _tick(defs, only_accounts.cursor)
    assert not compiled.run_requests
    assert compiled.cursor not in (None, only_accounts.cursor)


def test_dbt_sensor_skips_without_target_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SF_ACTIVATION_DBT_TARGET_DIR", raising=False)
    defs = build_definitions(_models(tmp_path))
    data = _tick(defs, None)
    assert not data.run_requests
    assert "SF_ACTIVATION_DBT_TARGET_DIR" in (data.skip_message or "")
