"""Dagster definitions: every model file in SF_ACTIVATION_MODELS_DIR becomes assets, a check,
a job and (with `schedule:`) a schedule. Adding a model never needs Python.

`dagster dev` / `dagster definitions validate` find this module through `workspace.yaml`
or `[tool.dagster]` in pyproject.toml. What each piece shows in the UI: docs/dagster.md.
"""

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from sf_activation.config import DEFAULT_MODELS_DIR
from sf_activation.dagster.alerts import build_alert_sensors
from sf_activation.dagster.assets import (
    GROUP_NAME,
    MODEL_TAG,
    SyncConfig,
    build_model_assets,
)
from sf_activation.dagster.dbt import AssetJob, SyncTarget, build_dbt_sensor
from sf_activation.dagster.failures import broken_model_assets, load_error_line
from sf_activation.dagster.partitions import partitions_for
from sf_activation.dagster.resources import resources_from_env
from sf_activation.dagster.translator import SfActivationTranslator
from sf_activation.models import ModelError, ModelSpec, load_models_isolated
from sf_activation.parents import model_dependencies, parent_models

ALL_JOB_NAME = "sync_all"
AUTOMATION_SENSOR_NAME = "sf_activation_automation"

log = logging.getLogger(__name__)

__all__ = [
    "SyncConfig",
    "build_definitions",
    "job_name",
    "resolve_models_dir",
    "schedule_name",
]


def job_name(model: str) -> str:
    return f"sync_{model}"


def schedule_name(model: str) -> str:
    return f"sync_{model}_schedule"


def resolve_models_dir(environ: Mapping[str, str] | None = None) -> Path:
    """SF_ACTIVATION_MODELS_DIR, else ./models, else the models/ beside this package (so the
    example models load whichever directory `dagster` was started from)."""
    env = os.environ if environ is None else environ
    configured = env.get("SF_ACTIVATION_MODELS_DIR")
    if configured:
        return Path(configured)
    local = Path(DEFAULT_MODELS_DIR)
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / DEFAULT_MODELS_DIR


def _model_job(spec: ModelSpec, keys: list[dg.AssetKey]) -> AssetJob:
    return dg.define_asset_job(
        job_name(spec.name),
        selection=dg.AssetSelection.assets(*keys),
        description=f"Plan and sync model {spec.name} ({spec.operation} {spec.object}).",
        partitions_def=partitions_for(spec),
        # One run per model at a time (dagster.yaml limits this tag per value): two runs
        # of one model would send the same changes twice.
        tags={MODEL_TAG: spec.name},
    )


def _stand_in_name(name: str, taken: set[str]) -> str | None:
    """The asset name a broken model file is shown under: its name, or for a file name
    that is not a valid model name (`my-model.yml`) the nearest valid one, unless that
    belongs to another model."""
    candidate = re.sub(r"[^A-Za-z0-9_]", "_", name)[:100]
    if not re.match(r"[A-Za-z_]", candidate):
        candidate = f"_{candidate}"[:100]
    return None if candidate in taken else candidate


def _broken_model_job(name: str, error: ModelError, keys: list[dg.AssetKey]) -> AssetJob:
    # Keeps `sync_<model>` launchable (a Launchpad bookmark, `dagster job launch`): it
    # fails with the file's mistake instead of "job not found".
    return dg.define_asset_job(
        job_name(name),
        selection=dg.AssetSelection.assets(*keys),
        description=f"Model {name} cannot load: {load_error_line(error)}",
        tags={MODEL_TAG: name},
    )


def _model_schedule(spec: ModelSpec, job: AssetJob) -> dg.ScheduleDefinition:
    assert spec.schedule is not None
    partitions_def = partitions_for(spec)
    description = (
        f"`schedule: {spec.schedule}` in {spec.display_path} (UTC); "
        f"`schedule_status: {spec.schedule_status}`"
    )
    # Stopped unless the model file says `schedule_status: running`: a new deployment (or
    # a fresh clone's `make dev`) starts no sync nobody asked for. A toggle in the UI
    # overrides this default and is kept in the instance.
    default_status = (
        dg.DefaultScheduleStatus.RUNNING
        if spec.schedule_status == "running"
        else dg.DefaultScheduleStatus.STOPPED
    )
    if partitions_def is None:
        return dg.ScheduleDefinition(
            name=schedule_name(spec.name),
            job=job,
            cron_schedule=spec.schedule,
            execution_timezone="UTC",
            default_status=default_status,
            description=description,
        )

    @dg.schedule(
        name=schedule_name(spec.name),
        job=job,
        cron_schedule=spec.schedule,
        execution_timezone="UTC",
        default_status=default_status,
        description=description + "; syncs the latest complete window",
    )
    def _partitioned_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        key = partitions_def.get_last_partition_key(current_time=context.scheduled_execution_time)
        if key is None:
            return dg.SkipReason("no complete partition window yet")
        return dg.RunRequest(run_key=f"{spec.name}:{key}", partition_key=key)

    return _partitioned_schedule


def build_definitions(
    models_dir: Path | str,
    *,
    resources: Mapping[str, Any] | None = None,
    declare_dbt_assets: bool = True,
    automation: bool = True,
    dbt_target_dir: str | None = None,
    translator: SfActivationTranslator | None = None,
) -> dg.Definitions:
    """Everything Dagster shows for the models in `models_dir`.

    `translator` names the assets, their groups and the dbt keys (default:
    `SfActivationTranslator()`); jobs and sensors select the keys it gives.

    `declare_dbt_assets=False` when the dbt project is loaded into the same definitions
    with dagster-dbt (its assets then own the dbt keys the warehouse assets depend on).

    A model file that does not load is logged as a warning and becomes two stand-in
    assets (and its job) that show and fail with the file's mistake; the other models
    load as usual. Only a missing models directory fails the whole code location.
    """
    loaded = load_models_isolated(Path(models_dir))
    specs = loaded.specs
    assets: list[Any] = []
    jobs: list[AssetJob] = []
    schedules: list[dg.ScheduleDefinition] = []
    targets: list[SyncTarget] = []
    unpartitioned: list[dg.AssetKey] = []
    automated: list[dg.AssetKey] = []
    dbt_models: dict[dg.AssetKey, list[str]] = {}
    translator = translator if translator is not None else SfActivationTranslator()
    groups: set[str] = set()

    # Parents before children: a model whose lookups point at records another model
    # creates syncs after it (sf_activation.parents).
    after = model_dependencies(specs)
    for spec in specs.values():
        wh_asset, sf_asset = build_model_assets(
            spec,
            automation=automation,
            parents=parent_models(spec, specs),
            after=after.get(spec.name, []),
            translator=translator,
        )
        assets += [wh_asset, sf_asset]
        # The keys the translator gave, read back from the assets built with them.
        model_keys = [wh_asset.key, sf_asset.key]
        groups.update(wh_asset.group_names_by_key.values(), sf_asset.group_names_by_key.values())
        job = _model_job(spec, model_keys)
        jobs.append(job)
        if spec.schedule:
            schedules.append(_model_schedule(spec, job))
        if spec.partition_by is None:
            unpartitioned += model_keys
        dbt_keys = tuple(translator.get_dbt_asset_key(name) for name in spec.dbt_models)
        if spec.dbt_models:
            targets.append(
                SyncTarget(
                    spec.name,
                    job.name,
                    tuple(spec.dbt_models),
                    partitions_for(spec),
                    dbt_asset_keys=dbt_keys,
                )
            )
            if automation:
                automated += model_keys
        for key in dbt_keys:
            dbt_models.setdefault(key, []).append(spec.name)

    taken = set(specs)
    for name, error in loaded.errors.items():
        log.warning(
            "%s (model %s is left out; the other models load)", load_error_line(error), name
        )
        stand_in = _stand_in_name(name, taken)
        if stand_in is None:
            continue  # no valid asset key to show it under; the warning is all there is
        taken.add(stand_in)
        stand_ins = broken_model_assets(stand_in, error, translator)
        assets += stand_ins
        stand_in_keys = [a.key for a in stand_ins]
        jobs.append(_broken_model_job(stand_in, error, stand_in_keys))
        # In `sync_all` too: a run meant to sync every model fails while one cannot load.
        unpartitioned += stand_in_keys

    if declare_dbt_assets:
        # Built by dbt outside this code location; the sensor records their rebuilds.
        assets += [
            translator.get_dbt_asset_spec(key, readers) for key, readers in dbt_models.items()
        ]

    if unpartitioned:
        # Partitioned models have their own partitions and cannot share one job with the rest.
        jobs.append(
            dg.define_asset_job(
                ALL_JOB_NAME,
                selection=dg.AssetSelection.assets(*unpartitioned),
                description="Plan and sync every model that is not partitioned.",
                tags={MODEL_TAG: "all"},
            )
        )

    # Webhook alerts on failed runs, failed rejected_rows checks, API-budget stops
    # (sf_activation.dagster.alerts); stopped until switched on.
    sensors: list[dg.SensorDefinition] = build_alert_sensors()
    if targets:
        model_jobs = [j for j in jobs if j.name in {t.job_name for t in targets}]
        sensors.append(build_dbt_sensor(targets, model_jobs, target_dir=dbt_target_dir))
    if automated:
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                AUTOMATION_SENSOR_NAME,
                target=dg.AssetSelection.assets(*automated),
                default_status=dg.DefaultSensorStatus.STOPPED,
                description=(
                    "For dbt run by dagster-dbt in this deployment: syncs a model after its "
                    "dbt models are materialized. Use it or the dbt run_results sensor, not both."
                ),
            )
        )

    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=dict(resources) if resources is not None else resources_from_env(),
        metadata={
            "models_dir": str(models_dir),
            "group": ", ".join(sorted(groups)) or GROUP_NAME,
            **({"load_errors": loaded.problems} if loaded.errors else {}),
        },
    )
