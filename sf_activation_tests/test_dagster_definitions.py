"""What the Dagster UI lists for the example models, and that it loads without credentials."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from sf_activation.dagster.resources import resources_from_env
from sf_activation.definitions import build_definitions, resolve_models_dir
from sf_activation.models import load_models

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


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


def test_dagster_definitions_validate_passes_from_the_repo_root_without_credentials() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SALESFORCE_", "SF_ACTIVATION_", "DAGSTER_HOME"))
    }
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
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
