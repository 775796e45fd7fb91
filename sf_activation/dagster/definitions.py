"""Dagster definitions: every model file in SF_ACTIVATION_MODELS_DIR becomes assets, a check,
a job and (with `schedule:`) a schedule. Adding a model never needs Python.

`dagster dev` / `dagster definitions validate` find this module through `workspace.yaml`
or `[tool.dagster]` in pyproject.toml. What each piece shows in the UI: docs/dagster.md.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from sf_activation.config import DEFAULT_MODELS_DIR
from sf_activation.dagster.assets import (
    GROUP_NAME,
    MODEL_TAG,
    SyncConfig,
    build_model_assets,
    dbt_asset_key,
    salesforce_key,
    warehouse_key,
)
from sf_activation.dagster.dbt import AssetJob, SyncTarget, build_dbt_sensor
from sf_activation.dagster.partitions import partitions_for
from sf_activation.dagster.resources import resources_from_env
from sf_activation.models import ModelSpec, load_models

ALL_JOB_NAME = "sync_all"
AUTOMATION_SENSOR_NAME = "sf_activation_automation"

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


def _model_job(spec: ModelSpec) -> AssetJob:
    return dg.define_asset_job(
        job_name(spec.name),
        selection=dg.AssetSelection.assets(warehouse_key(spec.name), salesforce_key(spec.name)),
        description=f"Plan and sync model {spec.name} ({spec.operation} {spec.object}).",
        partitions_def=partitions_for(spec),
        # One run per model at a time (dagster.yaml limits this tag per value): two runs
        # of one model would send the same changes twice.
        tags={MODEL_TAG: spec.name},
    )


def _model_schedule(spec: ModelSpec, job: AssetJob) -> dg.ScheduleDefinition:
    assert spec.schedule is not None
    partitions_def = partitions_for(spec)
    description = f"`schedule: {spec.schedule}` in {spec.display_path} (UTC)"
    if partitions_def is None:
        return dg.ScheduleDefinition(
            name=schedule_name(spec.name),
            job=job,
            cron_schedule=spec.schedule,
            execution_timezone="UTC",
            # The model file asks for the schedule: it runs without a click in the UI.
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=description,
        )

    @dg.schedule(
        name=schedule_name(spec.name),
        job=job,
        cron_schedule=spec.schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
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
) -> dg.Definitions:
    """Everything Dagster shows for the models in `models_dir`.

    `declare_dbt_assets=False` when the dbt project is loaded into the same definitions
    with dagster-dbt (its assets then own the dbt keys the warehouse assets depend on).
    """
    specs = load_models(Path(models_dir))
    assets: list[Any] = []
    jobs: list[AssetJob] = []
    schedules: list[dg.ScheduleDefinition] = []
    targets: list[SyncTarget] = []
    unpartitioned: list[dg.AssetKey] = []
    automated: list[dg.AssetKey] = []
    dbt_models: dict[dg.AssetKey, list[str]] = {}

    for spec in specs.values():
        wh_asset, sf_asset = build_model_assets(spec, automation=automation)
        assets += [wh_asset, sf_asset]
        job = _model_job(spec)
        jobs.append(job)
        if spec.schedule:
            schedules.append(_model_schedule(spec, job))
        if spec.partition_by is None:
            unpartitioned += [warehouse_key(spec.name), salesforce_key(spec.name)]
        if spec.dbt_models:
            targets.append(
                SyncTarget(spec.name, job.name, tuple(spec.dbt_models), partitions_for(spec))
            )
            if automation:
                automated += [warehouse_key(spec.name), salesforce_key(spec.name)]
        for name in spec.dbt_models:
            dbt_models.setdefault(dbt_asset_key(name), []).append(spec.name)

    if declare_dbt_assets:
        # Built by dbt outside this code location; the sensor records their rebuilds.
        assets += [
            dg.AssetSpec(
                key,
                group_name="dbt",
                kinds={"dbt"},
                description=f"dbt model read by {', '.join(readers)}; built outside Dagster",
            )
            for key, readers in dbt_models.items()
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

    sensors: list[dg.SensorDefinition] = []
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
        metadata={"models_dir": str(models_dir), "group": GROUP_NAME},
    )
