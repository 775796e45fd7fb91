"""The dbt sensor against a real dbt project (dbt-duckdb) built in a temp directory.

The project's dbt.log is in dbt's default text format unless `json_log=True` (the
`flags: log_format_file: json` docs/dagster.md asks for): text-format tests cover the
sensor reading run_results.json alone, JSON-format ones the log.
"""

import json
import os
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from sf_activation.definitions import build_definitions

DBT = Path(sys.executable).parent / "dbt"

pytestmark = pytest.mark.skipif(not DBT.exists(), reason="dbt is not installed in this venv")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _dbt_project(root: Path, json_log: bool = False) -> Path:
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
    if json_log:
        with (project / "dbt_project.yml").open("a", encoding="utf-8") as handle:
            handle.write("flags:\n  log_format_file: json\n")
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


def _dbt(project: Path, *args: str, env_extra: dict[str, str] | None = None) -> None:
    env = {
        **os.environ,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        **(env_extra or {}),
    }
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
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_sensor_context(cursor=cursor, definitions=defs, instance=instance) as context,
    ):
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
    assert (cursor["generated_at"], cursor["invocation_id"]) == (
        results["metadata"]["generated_at"],
        results["metadata"]["invocation_id"],
    )

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


def _json_defs(tmp_path: Path) -> tuple[Path, dg.Definitions]:
    project = _dbt_project(tmp_path, json_log=True)
    return project, build_definitions(_models(tmp_path), dbt_target_dir=str(project / "target"))


@pytest.mark.parametrize("after", [("test",), ("docs", "generate")])
def test_dbt_run_then_another_command_before_one_tick_still_syncs(
    tmp_path: Path, after: tuple[str, ...]
) -> None:
    project, defs = _json_defs(tmp_path)
    _dbt(project, "build")
    first = _tick(defs, None)
    assert _requested(first).keys() == {"sync_accounts", "sync_contacts", "sync_events"}

    # `dbt run && dbt test` between two ticks: run_results.json now only holds the second
    # command, dbt.log holds both.
    _dbt(project, "run", "--select", "fct_accounts")
    _dbt(project, *after)
    results = json.loads((project / "target" / "run_results.json").read_text())
    assert results["args"]["which"] == after[-1]
    data = _tick(defs, first.cursor)
    assert _requested(data) == {"sync_accounts": None, "sync_contacts": None}
    assert {e.asset_key for e in data.asset_events} == {dg.AssetKey("fct_accounts")}
    run_id = {r.tags["dbt/invocation_id"] for r in data.run_requests}
    assert len(run_id) == 1 and run_id != {results["metadata"]["invocation_id"]}

    # However often the sensor ticks afterwards, the invocation does not trigger again.
    again = _tick(defs, data.cursor)
    assert not again.run_requests and not again.asset_events
    assert again.cursor in (None, data.cursor)


def test_dbt_run_and_test_before_the_first_tick_sync(tmp_path: Path) -> None:
    # No cursor yet (a new sensor, or one reset in the UI): the latest invocation that
    # rebuilt something triggers, not the `dbt test` after it.
    project, defs = _json_defs(tmp_path)
    _dbt(project, "run", "--select", "fct_contacts")
    _dbt(project, "test")
    data = _tick(defs, None)
    assert _requested(data) == {"sync_contacts": None}
    assert not _tick(defs, data.cursor).run_requests


def test_commands_that_rebuild_nothing_and_failed_models_trigger_nothing(tmp_path: Path) -> None:
    project, defs = _json_defs(tmp_path)
    _dbt(project, "run", "--select", "fct_accounts")
    cursor = _tick(defs, None).cursor
    # compile and docs generate log "success" for every model; test logs tests only;
    # fct_broken fails.
    for command in (("test",), ("compile",), ("docs", "generate"), ("run", "-s", "fct_broken")):
        _dbt(project, *command)
        data = _tick(defs, cursor)
        assert not data.run_requests and not data.asset_events, command
        assert data.cursor not in (None, cursor), command
        cursor = data.cursor
    # Several invocations between two ticks: one sync per model, a materialization per
    # rebuild, the failed model's reader never synced.
    _dbt(project, "run", "--select", "fct_accounts", "fct_broken")
    _dbt(project, "run", "--select", "fct_accounts")
    _dbt(project, "compile")
    data = _tick(defs, cursor)
    assert _requested(data) == {"sync_accounts": None, "sync_contacts": None}
    materialized = [e.asset_key for e in data.asset_events]
    assert materialized == [dg.AssetKey("fct_accounts")] * 2
    assert not _tick(defs, data.cursor).run_requests


def _log(project: Path) -> Path:
    return project / "logs" / "dbt.log"


def test_an_invocation_still_running_at_the_tick_triggers_once_it_finishes(
    tmp_path: Path,
) -> None:
    project, defs = _json_defs(tmp_path)
    _dbt(project, "run", "--select", "fct_events")
    cursor = _tick(defs, None).cursor
    _dbt(project, "run", "--select", "fct_accounts")
    # The tick comes while dbt is still writing: cut the log before the invocation's
    # last events (and in the middle of a line), as it was a moment before it finished.
    log = _log(project)
    whole = log.read_bytes()
    cut = whole.rindex(b'"name": "ResourceReport"')
    cut = whole.rindex(b"\n", 0, cut) + 30
    with log.open("r+b") as handle:
        handle.truncate(cut)
    running = _tick(defs, cursor)
    assert not running.run_requests and not running.asset_events
    assert "waiting for dbt invocation" in (running.skip_message or "")
    cursor = running.cursor or cursor
    with log.open("ab") as handle:
        handle.write(whole[cut:])
    done = _tick(defs, cursor)
    assert _requested(done) == {"sync_accounts": None, "sync_contacts": None}
    assert not _tick(defs, done.cursor).run_requests


def test_an_invocation_that_never_finished_does_not_hold_back_later_ones(tmp_path: Path) -> None:
    project, defs = _json_defs(tmp_path)
    _dbt(project, "run", "--select", "fct_events")
    cursor = _tick(defs, None).cursor
    _dbt(project, "run", "--select", "fct_contacts")
    # dbt killed (SIGKILL, a CI timeout): no ResourceReport nor CommandCompleted.
    log = _log(project)
    lines = log.read_bytes().splitlines(keepends=True)
    start = max(i for i, line in enumerate(lines) if b'"MainReportVersion"' in line)
    lines[start:] = [
        line
        for line in lines[start:]
        if b'"ResourceReport"' not in line and b'"CommandCompleted"' not in line
    ]
    log.write_bytes(b"".join(lines))
    killed = _tick(defs, cursor)
    assert not killed.run_requests
    cursor = killed.cursor or cursor
    # Later invocations trigger once each, though the log is read again from the killed
    # invocation's start while it may still finish.
    _dbt(project, "run", "--select", "fct_accounts")
    later = _tick(defs, cursor)
    assert _requested(later) == {"sync_accounts": None, "sync_contacts": None}
    assert {r.tags["dbt/models"] for r in later.run_requests} == {"fct_accounts"}
    assert not _tick(defs, later.cursor).run_requests
    # The killed invocation still holds the read offset back...
    assert json.loads(later.cursor)["log"]["offset"] < log.stat().st_size
    # ...until the log has events 12 hours newer than its last: make it a day older.
    lines = log.read_bytes().splitlines(keepends=True)
    killed_id = json.loads(lines[start])["info"]["invocation_id"].encode()
    for i, line in enumerate(lines):
        if killed_id in line:
            event = json.loads(line)
            day = event["info"]["ts"][:10]
            earlier = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
            lines[i] = line.replace(f'"ts": "{day}'.encode(), f'"ts": "{earlier}'.encode())
    log.write_bytes(b"".join(lines))
    given_up = _tick(defs, later.cursor)
    assert not given_up.run_requests
    assert json.loads(given_up.cursor)["log"]["offset"] == log.stat().st_size
    _dbt(project, "test")
    assert not _tick(defs, given_up.cursor).run_requests


def test_the_log_is_read_from_the_cursor_offset_across_dbt_rotating_it(tmp_path: Path) -> None:
    project, defs = _json_defs(tmp_path)
    # dbt rotates dbt.log past --log-file-max-bytes; small here so that it rotates in the
    # middle of an invocation, and between ticks.
    small = {"DBT_LOG_FILE_MAX_BYTES": "40000"}
    _dbt(project, "run", "--select", "fct_events", env_extra=small)
    data = _tick(defs, None)
    assert _requested(data).keys() == {"sync_events"}
    position = json.loads(data.cursor)["log"]
    log = _log(project)
    assert position["offset"] == log.stat().st_size and position["inode"] == log.stat().st_ino
    for select, expected in (
        ("fct_accounts", {"sync_accounts", "sync_contacts"}),
        ("fct_contacts", {"sync_contacts"}),
    ):
        _dbt(project, "run", "--select", select, env_extra=small)
        _dbt(project, "test", env_extra=small)
        # The file the cursor points into is now a backup.
        assert log.stat().st_ino != json.loads(data.cursor)["log"]["inode"]
        data = _tick(defs, data.cursor)
        assert _requested(data).keys() == expected, select
        assert not _tick(defs, data.cursor).run_requests
    assert (log.parent / "dbt.log.2").is_file()  # it did rotate, more than once


def test_a_cursor_of_the_previous_version_is_accepted(tmp_path: Path) -> None:
    project, defs = _json_defs(tmp_path)
    _dbt(project, "build")
    _dbt(project, "run", "--select", "fct_events")
    # What the previous version stored after reading run_results.json.
    meta = json.loads((project / "target" / "run_results.json").read_text())["metadata"]
    old = json.dumps({"generated_at": meta["generated_at"], "invocation_id": meta["invocation_id"]})
    upgraded = _tick(defs, old)
    assert not upgraded.run_requests and not upgraded.asset_events
    assert upgraded.cursor is not None and json.loads(upgraded.cursor)["log"] is not None
    _dbt(project, "run", "--select", "fct_accounts")
    _dbt(project, "test")
    data = _tick(defs, upgraded.cursor)
    assert _requested(data) == {"sync_accounts": None, "sync_contacts": None}


def test_a_cursor_of_the_previous_version_with_a_text_log(tmp_path: Path) -> None:
    project = _dbt_project(tmp_path)
    defs = build_definitions(_models(tmp_path), dbt_target_dir=str(project / "target"))
    _dbt(project, "run", "--select", "fct_accounts")
    meta = json.loads((project / "target" / "run_results.json").read_text())["metadata"]
    old = json.dumps({"generated_at": meta["generated_at"], "invocation_id": meta["invocation_id"]})
    upgraded = _tick(defs, old)
    assert not upgraded.run_requests and not upgraded.asset_events
    _dbt(project, "run", "--select", "fct_contacts")
    data = _tick(defs, upgraded.cursor or old)
    assert _requested(data) == {"sync_contacts": None}
