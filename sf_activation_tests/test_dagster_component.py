"""The models directory as a Dagster Component (loaded, checked and scaffolded by the real
`dg` CLI in a project laid out as dg expects), and the translator that names the assets."""

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sf_activation.dagster.assets import dbt_asset_key, salesforce_key, warehouse_key
from sf_activation.dagster.component import SfActivationComponent
from sf_activation.dagster.resources import resources_from_env
from sf_activation.dagster.translator import Layer, SfActivationTranslator
from sf_activation.definitions import build_definitions
from sf_activation.models import ModelError, ModelSpec

BIN = Path(sys.executable).parent
DG = BIN / "dg"
DBT = BIN / "dbt"
COMPONENT = "sf_activation.dagster.component.SfActivationComponent"
PACKAGE = "acme_syncs"

needs_dg = pytest.mark.skipif(not DG.exists(), reason="dg (dagster-dg-cli) is not installed")
needs_dbt = pytest.mark.skipif(not DBT.exists(), reason="dbt is not installed in this venv")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def _models(directory: Path) -> Path:
    """Two models: accounts reads the dbt model fct_accounts; contacts looks accounts up
    (so salesforce/contacts depends on salesforce/accounts)."""
    _write(
        directory / "accounts.yml",
        """
        description: Accounts from the CRM mart.
        object: Account
        operation: upsert
        primary_key: account_id
        external_id: External_Id__c
        query: select account_id, name from fct_accounts
        fields:
          account_id: External_Id__c
          name: Name
        schedule: "0 * * * *"
        dbt_models: [fct_accounts]
        """,
    )
    _write(
        directory / "contacts.yml",
        """
        object: Contact
        operation: upsert
        primary_key: contact_id
        external_id: External_Id__c
        sql: contacts.sql
        fields:
          contact_id: External_Id__c
          account_id: Account.External_Id__c
          last_name: LastName
        """,
    )
    _write(directory / "contacts.sql", "select contact_id, account_id, last_name from contacts")
    return directory


def _dg_project(root: Path) -> Path:
    """A project as `dg` expects it: pyproject.toml with [tool.dg], src/<pkg>/definitions.py
    loading src/<pkg>/defs, and nothing under defs yet."""
    _write(
        root / "pyproject.toml",
        f"""
        [project]
        name = "{PACKAGE}"
        version = "0.1.0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "{PACKAGE}"

        [tool.dg.cli]
        telemetry.enabled = false
        """,
    )
    package = root / "src" / PACKAGE
    _write(package / "__init__.py", "")
    _write(package / "defs" / "__init__.py", "")
    _write(
        package / "definitions.py",
        """
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs() -> dg.Definitions:
            return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        """,
    )
    return root


def _defs_dir(project: Path, name: str) -> Path:
    return project / "src" / PACKAGE / "defs" / name


def _dg(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `dg`, on this venv's Python: the venv is the active one (VIRTUAL_ENV, PATH)
    and the project's package is importable from src/ without being installed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SALESFORCE_", "SF_ACTIVATION_", "DAGSTER_HOME", "VIRTUAL_ENV"))
    }
    env.update(
        VIRTUAL_ENV=str(Path(sys.prefix)),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(project / "src"),
        DAGSTER_DISABLE_TELEMETRY="1",
        NO_COLOR="1",
    )
    result = subprocess.run(
        [str(DG), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, f"dg {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _list_defs(project: Path) -> dict[str, Any]:
    return json.loads(_dg(project, "list", "defs", "--json").stdout)


def _assets_by_key(listing: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["asset_key"]: a for a in listing["assets"]}


def _tags(asset: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in asset.get("tags") or []}


SYNCS_YAML = f"""
type: {COMPONENT}
attributes:
  models_dir: models
  translation:
    owners: [team:revops]
    tags:
      sf_object: "{{{{ model.object }}}}"
      layer: "{{{{ layer }}}}"
post_processing:
  assets:
    - target: "key:salesforce/*"
      attributes:
        group_name: salesforce_syncs
        tags:
          pager: revops-oncall
"""


# ------------------------------------------------------------------------ dg, end to end


@needs_dg
def test_dg_lists_the_components_assets_check_jobs_and_sensors_with_the_yaml_attributes(
    tmp_path: Path,
) -> None:
    project = _dg_project(tmp_path / "proj")
    syncs = _defs_dir(project, "syncs")
    _models(syncs / "models")
    _write(syncs / "defs.yaml", SYNCS_YAML)

    components = json.loads(_dg(project, "list", "components", "--json").stdout)
    assert COMPONENT in {item["key"] for item in components["items"]}

    listing = _list_defs(project)
    assets = _assets_by_key(listing)
    assert set(assets) == {
        "warehouse/accounts",
        "salesforce/accounts",
        "warehouse/contacts",
        "salesforce/contacts",
        "fct_accounts",
    }
    assert {c["key"] for c in listing["asset_checks"]} == {
        "salesforce/accounts:rejected_rows",
        "salesforce/contacts:rejected_rows",
    }
    assert {j["name"] for j in listing["jobs"]} == {"sync_accounts", "sync_contacts", "sync_all"}
    assert {s["name"] for s in listing["sensors"]} == {
        "dbt_run_results_sensor",
        "sf_activation_automation",
        "sf_activation_alerts",
        "sf_activation_budget_alerts",
    }
    assert [(s["name"], s["cron_schedule"]) for s in listing["schedules"]] == [
        ("sync_accounts_schedule", "0 * * * *")
    ]
    # The same resources as the sf_activation code location, read from the environment.
    assert {(r["name"], r["type"]) for r in listing["resources"]} == {
        ("salesforce", "sf_activation.dagster.resources.SalesforceResource"),
        ("sync_settings", "sf_activation.dagster.resources.SyncSettingsResource"),
    }

    # Lineage: dbt model -> plan -> sync; a lookup's parent model syncs first.
    assert assets["warehouse/accounts"]["dependency_keys"] == ["fct_accounts"]
    assert assets["salesforce/accounts"]["dependency_keys"] == ["warehouse/accounts"]
    assert set(assets["salesforce/contacts"]["dependency_keys"]) == {
        "warehouse/contacts",
        "salesforce/accounts",
    }

    # `translation`: on every asset of the models, with the model file's values.
    for key in ("warehouse/accounts", "salesforce/accounts"):
        assert assets[key]["owners"] == [{"team": "revops"}]
        assert _tags(assets[key])["sf_object"] == "Account"
        assert _tags(assets[key])["object"] == "Account"  # the factory's own tags stay
    assert _tags(assets["warehouse/contacts"])["layer"] == "warehouse"
    assert _tags(assets["salesforce/contacts"])["layer"] == "salesforce"
    assert assets["warehouse/accounts"]["kinds"] == ["sql"]
    assert assets["salesforce/accounts"]["kinds"] == ["salesforce"]
    # `post_processing`: only where its target selects.
    assert assets["salesforce/contacts"]["group_name"] == "salesforce_syncs"
    assert _tags(assets["salesforce/contacts"])["pager"] == "revops-oncall"
    assert assets["warehouse/contacts"]["group_name"] == "sf_activation"
    assert "pager" not in _tags(assets["warehouse/contacts"])
    assert assets["fct_accounts"]["group_name"] == "dbt"
    # The automation conditions of a model that reads dbt models are there too.
    assert assets["warehouse/accounts"].get("automation_condition")
    assert not assets["warehouse/contacts"].get("automation_condition")


@needs_dg
def test_dg_check_defs_passes_and_names_a_mistake_in_defs_yaml(tmp_path: Path) -> None:
    project = _dg_project(tmp_path / "proj")
    syncs = _defs_dir(project, "syncs")
    _models(syncs / "models")
    _write(syncs / "defs.yaml", SYNCS_YAML)

    checked = _dg(project, "check", "defs", "--use-active-venv")
    assert "All definitions loaded successfully" in checked.stdout

    _write(syncs / "defs.yaml", f"type: {COMPONENT}\nattributes:\n  models_dirr: models\n")
    broken = _dg(project, "check", "defs", "--use-active-venv", check=False)
    assert broken.returncode != 0
    assert "models_dirr" in broken.stdout + broken.stderr


@needs_dg
def test_dg_scaffold_defs_writes_a_defs_yaml_that_loads(tmp_path: Path) -> None:
    # Without --models-dir: a models/ directory with an example model beside defs.yaml.
    project = _dg_project(tmp_path / "proj")
    _dg(project, "scaffold", "defs", COMPONENT, "syncs")
    syncs = _defs_dir(project, "syncs")
    defs_yaml = (syncs / "defs.yaml").read_text()
    assert f"type: {COMPONENT}" in defs_yaml
    assert "models_dir: models" in defs_yaml
    assert (syncs / "models" / "example_contacts.yml").is_file()
    assert set(_assets_by_key(_list_defs(project))) == {
        "warehouse/example_contacts",
        "salesforce/example_contacts",
    }

    # With --models-dir: the project's existing models, named from the project root.
    other = _dg_project(tmp_path / "other")
    _models(other / "models")
    _dg(other, "scaffold", "defs", COMPONENT, "crm_syncs", "--models-dir", "models")
    crm_yaml = (_defs_dir(other, "crm_syncs") / "defs.yaml").read_text()
    assert "models_dir: '{{ context.project_root }}/models'" in crm_yaml
    assert not (_defs_dir(other, "crm_syncs") / "models").exists()
    listing = _list_defs(other)
    assert {"warehouse/accounts", "salesforce/contacts"} <= set(_assets_by_key(listing))
    assert "sync_accounts" in {j["name"] for j in listing["jobs"]}
    assert "All definitions loaded successfully" in (
        _dg(other, "check", "defs", "--use-active-venv").stdout
    )


# ------------------------------------------------------------------------ the translator


def test_the_default_translator_names_the_assets_as_before() -> None:
    translator = SfActivationTranslator()
    assert translator.get_asset_key("warehouse", "accounts") == dg.AssetKey(
        ["warehouse", "accounts"]
    )
    assert translator.get_asset_key("salesforce", "accounts") == dg.AssetKey(
        ["salesforce", "accounts"]
    )
    assert translator.get_group_name("salesforce", "accounts") == "sf_activation"
    assert translator.get_dbt_asset_key("fct_accounts") == dg.AssetKey(["fct_accounts"])
    assert translator.get_dbt_asset_key("analytics/fct_accounts") == dg.AssetKey(
        ["analytics", "fct_accounts"]
    )
    # The functions other code imports are the same defaults.
    assert warehouse_key("m") == dg.AssetKey(["warehouse", "m"])
    assert salesforce_key("m") == dg.AssetKey(["salesforce", "m"])
    assert dbt_asset_key("a/b") == dg.AssetKey(["a", "b"])


class CrmTranslator(SfActivationTranslator):
    """Keys under crm/, one group per Salesforce layer, dbt keys under dbt/."""

    def get_asset_key(self, layer: Layer, model: str) -> dg.AssetKey:
        return super().get_asset_key(layer, model).with_prefix("crm")

    def get_group_name(self, layer: Layer, model: str) -> str | None:
        return f"crm_{layer}"

    def get_dbt_asset_key(self, dbt_model: str) -> dg.AssetKey:
        return super().get_dbt_asset_key(dbt_model).with_prefix("dbt")

    def get_dbt_asset_spec(self, key: dg.AssetKey, readers: Sequence[str]) -> dg.AssetSpec:
        return super().get_dbt_asset_spec(key, readers).replace_attributes(group_name="crm_dbt")

    def get_asset_spec(self, layer: Layer, model: ModelSpec, spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(owners=[f"team:{model.object.lower()}"])


def test_a_custom_translator_changes_keys_and_groups_everywhere(tmp_path: Path) -> None:
    defs = build_definitions(
        _models(tmp_path / "models"),
        resources=resources_from_env({}),
        translator=CrmTranslator(),
        dbt_target_dir=str(tmp_path / "target"),
    )
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "sync_accounts",
        "sync_contacts",
        "sync_all",
    }
    graph = defs.resolve_asset_graph()
    wh, sf = (
        dg.AssetKey(["crm", "warehouse", "accounts"]),
        dg.AssetKey(["crm", "salesforce", "accounts"]),
    )
    wh_contacts = dg.AssetKey(["crm", "warehouse", "contacts"])
    sf_contacts = dg.AssetKey(["crm", "salesforce", "contacts"])
    dbt_key = dg.AssetKey(["dbt", "fct_accounts"])
    assert set(graph.get_all_asset_keys()) == {wh, sf, wh_contacts, sf_contacts, dbt_key}
    # Dependencies, checks and groups follow the translator.
    assert graph.get(wh).parent_keys == {dbt_key}
    assert graph.get(sf).parent_keys == {wh}
    assert graph.get(sf_contacts).parent_keys == {wh_contacts, sf}
    assert dg.AssetCheckKey(sf, "rejected_rows") in set(graph.asset_check_keys)
    assert graph.get(wh).group_name == "crm_warehouse"
    assert graph.get(sf).group_name == "crm_salesforce"
    assert graph.get(dbt_key).group_name == "crm_dbt"
    assert graph.get(sf_contacts).owners == ["team:contact"]
    # Each model's job still selects both of its assets; sync_all every one of them.
    assert defs.resolve_job_def("sync_accounts").asset_layer.selected_asset_keys == {wh, sf}
    assert defs.resolve_job_def("sync_contacts").asset_layer.selected_asset_keys == {
        wh_contacts,
        sf_contacts,
    }
    assert defs.resolve_job_def("sync_all").asset_layer.selected_asset_keys == {
        wh,
        sf,
        wh_contacts,
        sf_contacts,
    }
    # The automation sensor targets the translated keys of the model that reads dbt.
    automation = defs.resolve_sensor_def("sf_activation_automation")
    assert automation.asset_selection.resolve(graph) == {wh, sf}
    # The dbt sensor reports dbt's rebuild under the translated dbt key.
    run_results = _write(
        tmp_path / "target" / "run_results.json",
        json.dumps(
            {
                "metadata": {"invocation_id": "inv-1", "generated_at": "2024-01-01T00:00:00Z"},
                "args": {"which": "build"},
                "results": [{"unique_id": "model.crm.fct_accounts", "status": "success"}],
            }
        ),
    )
    sensor = defs.resolve_sensor_def("dbt_run_results_sensor")
    assert run_results.parent == tmp_path / "target"
    with dg.build_sensor_context(cursor=None, definitions=defs) as context:
        tick = sensor.evaluate_tick(context)
    assert {e.asset_key for e in tick.asset_events} == {dbt_key}
    assert [r.job_name for r in tick.run_requests] == ["sync_accounts"]


# ------------------------------------------------------------------------ the Component


def test_the_component_in_python_binds_or_leaves_resources_and_guards_keys(
    tmp_path: Path,
) -> None:
    from dagster.components.core.component_tree import ComponentTree

    context = ComponentTree.for_test().load_context
    models = _models(tmp_path / "models")

    defs = SfActivationComponent(models_dir=str(models)).build_defs(context)
    assert set(defs.resources or {}) == {"salesforce", "sync_settings"}
    assert dg.AssetKey(["warehouse", "accounts"]) in set(defs.resolve_all_asset_keys())

    # The project binds its own resources: the component must not bind a second copy.
    bare = SfActivationComponent(models_dir=str(models), bind_resources=False)
    assert not bare.build_defs(context).resources

    # A subclass supplies its translator.
    class CrmComponent(SfActivationComponent):
        def get_translator(self, context: dg.ComponentLoadContext) -> SfActivationTranslator:
            return CrmTranslator()

    crm = CrmComponent(models_dir=str(models)).build_defs(context)
    assert dg.AssetKey(["crm", "salesforce", "accounts"]) in set(crm.resolve_all_asset_keys())

    # `translation` sets attributes; a key it changes is refused with the reason.
    def rekey(spec: dg.AssetSpec, data: Any) -> dg.AssetSpec:
        return spec.replace_attributes(key=spec.key.with_prefix("x"))

    with pytest.raises(dg.DagsterInvalidDefinitionError, match="get_asset_key"):
        SfActivationComponent(models_dir=str(models), translation=rekey).build_defs(context)


# ------------------------------------------------------------------------ dagster-dbt


def _dbt_manifest(root: Path) -> Path:
    """A real manifest.json: `dbt parse` of a two-model dbt-duckdb project."""
    project = root / "dbt"
    _write(
        project / "dbt_project.yml",
        """
        name: crm
        version: "1.0.0"
        profile: crm
        model-paths: ["models"]
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
    _write(project / "models" / "fct_accounts.sql", "select 'ACC-1' as account_id, 'Acme' as name")
    _write(project / "models" / "stg_accounts.sql", "select 1 as id")
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    subprocess.run(
        [str(DBT), "parse", "--project-dir", str(project), "--profiles-dir", str(project)],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    return project / "target" / "manifest.json"


@needs_dbt
def test_dbt_keys_resolved_through_dagster_dbt_match_the_dbt_assets(tmp_path: Path) -> None:
    from dagster_dbt import DagsterDbtTranslator, dbt_assets

    manifest = _dbt_manifest(tmp_path)

    class AnalyticsDbtTranslator(DagsterDbtTranslator):
        def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
            return super().get_asset_key(dbt_resource_props).with_prefix(["analytics", "crm"])

    dbt_translator = AnalyticsDbtTranslator()

    @dbt_assets(manifest=manifest, dagster_dbt_translator=dbt_translator)
    def crm_dbt(context: dg.AssetExecutionContext):  # never run: only its keys matter
        yield from ()

    expected = dg.AssetKey(["analytics", "crm", "fct_accounts"])
    assert expected in set(crm_dbt.keys)

    translator = SfActivationTranslator(
        dbt_manifest=manifest, dagster_dbt_translator=dbt_translator
    )
    assert translator.get_dbt_asset_key("fct_accounts") == expected
    # The default dagster-dbt translator, from the parsed manifest too.
    plain = SfActivationTranslator(dbt_manifest=json.loads(manifest.read_text()))
    assert plain.get_dbt_asset_key("fct_accounts") == dg.AssetKey(["fct_accounts"])
    with pytest.raises(ModelError, match="no_such_model"):
        translator.get_dbt_asset_key("no_such_model")

    # dbt inside the same deployment: the warehouse asset depends on the dbt asset itself.
    syncs = build_definitions(
        _models(tmp_path / "models"),
        resources=resources_from_env({}),
        declare_dbt_assets=False,
        translator=translator,
    )
    defs = dg.Definitions.merge(dg.Definitions(assets=[crm_dbt]), syncs)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["warehouse", "accounts"])).parent_keys == {expected}
    assert graph.get(expected).is_materializable  # dagster-dbt's, not a declared stand-in

    # The Component's `dbt_manifest` (relative to its folder): dagster-dbt's default keys.
    from dagster.components.core.component_tree import ComponentTree

    context = ComponentTree.for_test().load_context
    component = SfActivationComponent(
        models_dir=str(tmp_path / "models"),
        dbt_manifest=os.path.relpath(manifest, context.path),
        declare_dbt_assets=False,
    )
    graph = component.build_defs(context).resolve_asset_graph()
    assert graph.get(dg.AssetKey(["warehouse", "accounts"])).parent_keys == {
        dg.AssetKey(["fct_accounts"])
    }
