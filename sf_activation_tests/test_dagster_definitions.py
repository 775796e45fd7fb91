"""What the Dagster UI lists for the example models, and that it loads without credentials;
what it shows for a broken model file, the schedules' status, the sync's figures and a
failing `rejected_rows` check (runs against the emulator over real HTTPS)."""

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from sf_activation.dagster.resources import (
    SalesforceResource,
    SyncSettingsResource,
    resources_from_env,
)
from sf_activation.definitions import build_definitions, resolve_models_dir
from sf_activation.models import load_model, load_models

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"

ACCOUNTS = """\
object: Account
operation: upsert
primary_key: account_id
external_id: External_Id__c
query: SELECT account_id, name FROM accounts
fields:
  account_id: External_Id__c
  name: Name
max_reject_rate: 0.01
"""

CONTACTS = """\
object: Contact
operation: upsert
primary_key: contact_id
external_id: External_Id__c
query: SELECT contact_id, last_name, account_id FROM contacts
fields:
  contact_id: External_Id__c
  last_name: LastName
  account_id: Account.External_Id__c
max_reject_rate: 0.5
"""

ACTIVITY = """\
object: Case
operation: insert
primary_key: event_id
query: SELECT event_id, subject, occurred_at FROM activity
fields:
  subject: Subject
partition_by: {column: occurred_at, start: 2024-01-01, cadence: daily}
"""


def test_every_example_model_becomes_two_assets_a_check_a_job_and_a_schedule() -> None:
    defs = build_definitions(MODELS, resources=resources_from_env({}))
    dg.Definitions.validate_loadable(defs)
    specs = load_models(MODELS)
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    for name, spec in specs.items():
        assert dg.AssetKey(["warehouse", name]) in keys
        assert dg.AssetKey(["salesforce", name]) in keys
        assert dg.AssetCheckKey(dg.AssetKey(["salesforce", name]), "rejected_rows") in set(
            graph.asset_check_keys
        )
        # The warehouse asset depends on the dbt models the model reads.
        deps = graph.get(dg.AssetKey(["warehouse", name])).parent_keys
        assert {dg.AssetKey(m) for m in spec.dbt_models} <= deps
        job = defs.resolve_job_def(f"sync_{name}")
        assert dg.AssetKey(["salesforce", name]) in job.asset_layer.selected_asset_keys
        if spec.schedule:
            schedule = defs.resolve_schedule_def(f"sync_{name}_schedule")
            assert schedule.cron_schedule == spec.schedule
    assert defs.resolve_job_def("sync_all")
    assert defs.resolve_sensor_def("dbt_run_results_sensor")
    salesforce_asset = defs.resolve_assets_def(dg.AssetKey(["salesforce", "accounts"]))
    assert salesforce_asset.op.pool == "salesforce"


def test_full_resync_and_allow_deletes_are_run_config_of_the_sync_step() -> None:
    defs = build_definitions(MODELS, resources=resources_from_env({}))
    job = defs.resolve_job_def("sync_prospect_leads")
    config = {"ops": {"salesforce__prospect_leads": {"config": {"full_resync": True}}}}
    assert job.run_config_schema.config_type is not None
    result = dg.validate_run_config(job, config)
    assert result["ops"]["salesforce__prospect_leads"]["config"] == {
        "full_resync": True,
        "allow_deletes": False,
    }


def test_secrets_reach_the_resources_as_env_var_names_only() -> None:
    env = {"SALESFORCE_ACCESS_TOKEN": "00Dfake!secret", "SALESFORCE_INSTANCE_URL": "https://x"}
    resources = resources_from_env(env)
    salesforce = resources["salesforce"]
    # What the UI shows for the resource is the variable's name, never its value.
    assert isinstance(salesforce.access_token, dg.EnvVar)
    assert salesforce.access_token.env_var_name == "SALESFORCE_ACCESS_TOKEN"
    assert "00Dfake!secret" not in repr(salesforce)
    assert salesforce.password is None  # unset variables are read at run time, not required


def test_models_dir_resolves_from_the_environment_or_the_repo(tmp_path: Path) -> None:
    assert resolve_models_dir({"SF_ACTIVATION_MODELS_DIR": str(tmp_path)}) == tmp_path


def _dagster_definitions_validate(models_dir: Path | None = None) -> Any:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SALESFORCE_", "SF_ACTIVATION_", "DAGSTER_HOME"))
    }
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    if models_dir is not None:
        env["SF_ACTIVATION_MODELS_DIR"] = str(models_dir)
    return subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_dagster_definitions_validate_passes_from_the_repo_root_without_credentials() -> None:
    result = _dagster_definitions_validate()
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_dbt_inside_dagster_automation_syncs_only_models_whose_dbt_models_updated() -> None:
    defs = build_definitions(MODELS, resources=resources_from_env({}))
    keys = list(defs.resolve_all_asset_keys())
    instance = dg.DagsterInstance.ephemeral()

    def requested(cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return {k for k in keys if result.get_num_requested(k)}, result.cursor

    for key in keys:  # everything synced once
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    nothing, cursor = requested()
    assert nothing == set()

    # dbt rebuilt crm_accounts: plan and sync the accounts model, in the same tick.
    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey("crm_accounts")))
    after_dbt, cursor = requested(cursor)
    assert after_dbt == {
        dg.AssetKey(["warehouse", "accounts"]),
        dg.AssetKey(["salesforce", "accounts"]),
    }

    # A preview of a warehouse asset by hand does not send anything to Salesforce.
    instance.report_runless_asset_event(
        dg.AssetMaterialization(dg.AssetKey(["warehouse", "contacts"]))
    )
    after_preview, _ = requested(cursor)
    assert after_preview == set()


# ------------------------------------------------------------------ broken model files


def _examples_with_mistakes(tmp_path: Path) -> Path:
    """The example models, with a typo in contacts.yml and opportunities defined twice."""
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    contacts = models / "contacts.yml"
    contacts.write_text(contacts.read_text().replace("operation: upsert", "operation: upsret"))
    shutil.copy(models / "opportunities.yml", models / "opportunities.yaml")
    return models


def test_a_broken_model_file_shows_on_its_own_assets_and_the_other_models_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = _examples_with_mistakes(tmp_path)
    typo = f"{models / 'contacts.yml'}: operation: 'upsret' is not one of insert, update, "
    twice = f"{models / 'opportunities.yml'}: model name 'opportunities' is also defined by "

    with caplog.at_level(logging.WARNING):
        defs = build_definitions(models, resources=resources_from_env({}))
    dg.Definitions.validate_loadable(defs)

    # One warning per broken model at load time, with the loader's line.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(typo in w for w in warnings), warnings
    assert any(twice in w for w in warnings), warnings

    # The other models keep their assets, checks, jobs, schedules and sensors.
    graph = defs.resolve_asset_graph()
    for name in ("accounts", "prospect_leads"):
        sf_key = dg.AssetKey(["salesforce", name])
        assert dg.AssetCheckKey(sf_key, "rejected_rows") in set(graph.asset_check_keys)
        assert sf_key in defs.resolve_job_def(f"sync_{name}").asset_layer.selected_asset_keys
        assert defs.resolve_schedule_def(f"sync_{name}_schedule")
    assert defs.resolve_sensor_def("dbt_run_results_sensor")
    assert defs.resolve_sensor_def("sf_activation_automation")

    # A broken model is two assets in the same group whose description is the mistake;
    # it has no schedule (its cron is in the file that does not load).
    schedules = {s.name for s in defs.get_repository_def().schedule_defs}
    for name, line in (("contacts", typo), ("opportunities", twice)):
        for side in ("warehouse", "salesforce"):
            node = graph.get(dg.AssetKey([side, name]))
            assert node.group_name == "sf_activation"
            assert "cannot load" in (node.description or "")
            assert line in (node.description or "")
        assert f"sync_{name}_schedule" not in schedules

    # Materializing it fails the step with the loader's one line.
    result = defs.resolve_job_def("sync_contacts").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "warehouse__contacts"
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"ModelError: {typo}")
    assert "\n" not in description
    # `sync_all` holds it too: a run meant to sync every model fails while one cannot load.
    selected = defs.resolve_job_def("sync_all").asset_layer.selected_asset_keys
    assert dg.AssetKey(["salesforce", "contacts"]) in selected
    assert dg.AssetKey(["salesforce", "accounts"]) in selected


def test_dagster_definitions_validate_passes_with_a_warning_beside_a_broken_model(
    tmp_path: Path,
) -> None:
    models = _examples_with_mistakes(tmp_path)
    result = _dagster_definitions_validate(models)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert f"{models / 'contacts.yml'}: operation: 'upsret' is not one of" in output
    assert "model contacts is left out; the other models load" in output


# ------------------------------------------------------------------------- schedules


def test_schedules_start_stopped_unless_the_model_file_says_running(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "quiet.yml").write_text(ACCOUNTS + 'schedule: "0 * * * *"\n')
    (models / "eager.yml").write_text(
        ACCOUNTS + 'schedule: "5 * * * *"\nschedule_status: running\n'
    )
    (models / "activity.yml").write_text(
        ACTIVITY + 'schedule: "0 2 * * *"\nschedule_status: running\n'
    )
    repository = build_definitions(models, resources=resources_from_env({})).get_repository_def()
    status = {s.name: s.default_status for s in repository.schedule_defs}
    assert status == {
        "sync_quiet_schedule": dg.DefaultScheduleStatus.STOPPED,
        "sync_eager_schedule": dg.DefaultScheduleStatus.RUNNING,
        "sync_activity_schedule": dg.DefaultScheduleStatus.RUNNING,
    }
    quiet = repository.get_schedule_def("sync_quiet_schedule")
    assert "schedule_status: stopped" in (quiet.description or "")

    # The example models start no schedule by themselves (a fresh `make dev` runs nothing).
    examples = build_definitions(MODELS, resources=resources_from_env({})).get_repository_def()
    assert examples.schedule_defs
    assert {s.default_status for s in examples.schedule_defs} == {dg.DefaultScheduleStatus.STOPPED}


# --------------------------------------------------------- runs against the emulator


class Project:
    """Model files, a DuckDB warehouse, local state and rejects, and the definitions."""

    def __init__(self, root: Path, emulator: Any) -> None:
        self.models = root / "models"
        self.models.mkdir()
        self.warehouse = root / "warehouse.duckdb"
        self.rejects = root / "rejects"
        self.resources = {
            "salesforce": SalesforceResource(
                instance_url=emulator.instance_url,
                access_token=emulator.access_token,
                ca_bundle=emulator.ca_bundle,
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=f"duckdb:///{self.warehouse}",
                state_url=str(root / "state"),
                rejects_url=str(self.rejects),
            ),
        }
        self.instance = dg.DagsterInstance.ephemeral()

    def sql(self, statement: str) -> None:
        con = duckdb.connect(str(self.warehouse))
        try:
            con.execute(statement)
        finally:
            con.close()

    def model(self, name: str, body: str) -> None:
        (self.models / f"{name}.yml").write_text(textwrap.dedent(body))

    def run(self, model: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        defs = build_definitions(self.models, resources=self.resources)
        return defs.resolve_job_def(f"sync_{model}").execute_in_process(
            instance=self.instance, raise_on_error=False, **kwargs
        )


@pytest.fixture
def project(tmp_path: Path, emulator: Any) -> Project:
    return Project(tmp_path, emulator)


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


PLAN_COUNTS = ("added", "changed", "removed", "invalid", "unchanged", "pending", "to_send")


def test_the_sync_figures_add_up_and_match_the_plan(project: Project) -> None:
    project.sql("CREATE TABLE accounts AS SELECT 'P-1' AS account_id, 'Parent' AS name")
    project.sql(
        "CREATE TABLE contacts AS SELECT 'C-' || i AS contact_id, 'Person ' || i AS last_name, "
        "CASE WHEN i < 8 THEN 'P-1' ELSE 'P-404' END AS account_id FROM range(10) t(i)"
    )
    project.model("accounts", ACCOUNTS)
    project.model("contacts", CONTACTS)
    assert project.run("accounts").success
    first = project.run("contacts")  # C-8 and C-9 point at no account: rejected
    assert first.success
    assert _metadata(first, "salesforce__contacts")["failed"] == 2

    # Two rows change, one is new, the two rejected ones are retried (pending).
    project.sql("UPDATE contacts SET last_name = 'Renamed' WHERE contact_id IN ('C-0', 'C-1')")
    project.sql("INSERT INTO contacts VALUES ('C-10', 'Person 10', 'P-1')")
    second = project.run("contacts")

    planned = _metadata(second, "warehouse__contacts")
    synced = _metadata(second, "salesforce__contacts")
    assert {k: synced[k] for k in PLAN_COUNTS} == {
        "added": 1,
        "changed": 2,
        "removed": 0,
        "invalid": 0,
        "unchanged": 6,
        "pending": 2,
        "to_send": 5,
    }
    # The plan asset and the sync asset use the same names for the same figures.
    assert {k: planned[k] for k in PLAN_COUNTS} == {k: synced[k] for k in PLAN_COUNTS}
    # What was sent is what was planned, and every row of the model is in one class.
    assert synced["sent"] == synced["to_send"] == synced["succeeded"] + synced["failed"]
    classes = ("invalid", "added", "changed", "unchanged", "pending")
    assert synced["rows"] == sum(synced[k] for k in classes) == 11

    # A full resync plans (and sends) the unchanged rows too.
    resync = project.run(
        "contacts",
        run_config={"ops": {"salesforce__contacts": {"config": {"full_resync": True}}}},
    )
    resynced = _metadata(resync, "salesforce__contacts")
    assert resynced["full_resync"] is True
    assert resynced["to_send"] == resynced["sent"] == 11
    assert resynced["to_send"] == sum(
        resynced[k] for k in ("added", "changed", "pending", "unchanged")
    )


# ---------------------------------------------------------------- rejected_rows fails


def test_a_failing_rejected_rows_check_ends_the_run_with_one_line(project: Project) -> None:
    project.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS account_id, 'Account ' || i AS name "
        "FROM range(20) t(i)"
    )
    project.sql("INSERT INTO accounts VALUES (NULL, 'no key')")  # 1 of 21: above 1%
    project.model("accounts", ACCOUNTS)

    result = project.run("accounts")

    assert not result.success
    # The sync and the check are recorded all the same, with the check's figures.
    assert _metadata(result, "salesforce__accounts")["succeeded"] == 20
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("rejected_rows", False)
    assert check.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in check.metadata.items()}
    keys = {"count", "rate", "max_reject_rate", "by_error_code", "sample", "reject_file"}
    assert set(meta) == keys
    reject_file = meta["reject_file"]
    assert Path(reject_file).is_file() and str(project.rejects) in reject_file

    # The step fails with one line: the model, the rate against max_reject_rate, the file.
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "salesforce__accounts"
    path = load_model(project.models / "accounts.yml").display_path
    expected = (
        "accounts: rejected_rows failed: 1 of 21 rows rejected (4.76%), above "
        f"max_reject_rate 1.00% ({path}); reject file {reject_file}"
    )
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None and user_failure.description == expected
    message = failure.step_failure_data.error.message
    assert expected in message and "blocking asset check" not in message
    figures = {k: v.value for k, v in user_failure.metadata.items()}
    assert (figures["count"], figures["reject_file"]) == (1, reject_file)
