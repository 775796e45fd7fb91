"""The dbt sensor: syncs after dbt runs outside Dagster (cron, dbt Cloud, CI).

It reads `run_results.json` in SF_ACTIVATION_DBT_TARGET_DIR, reports the dbt models that
were rebuilt successfully as materializations of their asset keys (so the lineage graph
shows when they were last built), and requests the sync jobs of the models that read them.
The cursor is the invocation's `generated_at` + `invocation_id`: each dbt invocation
triggers once, however often the sensor ticks.

When dbt runs inside the same Dagster deployment (dagster-dbt), declarative automation
does the same job; see docs/dagster.md.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

# What `dg.define_asset_job` returns; dagster does not export the class under a public name.
AssetJob = Any

DBT_TARGET_DIR_VARIABLE = "SF_ACTIVATION_DBT_TARGET_DIR"
SENSOR_NAME = "dbt_run_results_sensor"
# dbt commands that rebuild relations; `compile` and `docs generate` also write
# run_results.json with "success" results, but nothing changed in the warehouse.
REBUILDING_COMMANDS = {"run", "build", "seed", "snapshot"}
REBUILT_RESOURCE_TYPES = ("model.", "seed.", "snapshot.")


@dataclass(frozen=True)
class SyncTarget:
    """One model's view for the sensor: its sync job and the dbt models it reads."""

    model: str
    job_name: str
    dbt_models: tuple[str, ...]
    partitions_def: dg.PartitionsDefinition | None = None


@dataclass(frozen=True)
class DbtInvocation:
    invocation_id: str
    generated_at: str
    command: str | None
    rebuilt: dict[str, dict[str, Any]]  # dbt node name -> its result

    @property
    def cursor(self) -> str:
        return json.dumps({"generated_at": self.generated_at, "invocation_id": self.invocation_id})


def _node_name(unique_id: str) -> str:
    # model.<package>.<name>[.v<version>]: the asset key dagster-dbt gives is the name.
    parts = unique_id.split(".")
    return parts[2] if len(parts) >= 3 else parts[-1]


def read_run_results(path: Path) -> DbtInvocation:
    """Parse dbt's run_results.json: which models, seeds and snapshots were rebuilt."""
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = data.get("metadata") or {}
    command = (data.get("args") or {}).get("which")
    rebuilt: dict[str, dict[str, Any]] = {}
    if command is None or command in REBUILDING_COMMANDS:
        for result in data.get("results") or []:
            unique_id = str(result.get("unique_id") or "")
            if unique_id.startswith(REBUILT_RESOURCE_TYPES) and result.get("status") == "success":
                rebuilt[_node_name(unique_id)] = result
    return DbtInvocation(
        invocation_id=str(meta.get("invocation_id") or ""),
        generated_at=str(meta.get("generated_at") or ""),
        command=command,
        rebuilt=rebuilt,
    )


def _key_name(dbt_model: str) -> str:
    return dbt_model.rstrip("/").split("/")[-1]


def _materialization(
    key: dg.AssetKey, invocation: DbtInvocation, result: dict[str, Any]
) -> dg.AssetMaterialization:
    metadata: dict[str, Any] = {
        "dbt_unique_id": dg.MetadataValue.text(str(result.get("unique_id"))),
        "dbt_invocation_id": dg.MetadataValue.text(invocation.invocation_id),
        "dbt_generated_at": dg.MetadataValue.text(invocation.generated_at),
        "execution_time_s": dg.MetadataValue.float(float(result.get("execution_time") or 0.0)),
    }
    if result.get("relation_name"):
        metadata["relation_name"] = dg.MetadataValue.text(str(result["relation_name"]))
    rows = (result.get("adapter_response") or {}).get("rows_affected")
    if isinstance(rows, int) and rows >= 0:
        metadata["rows_affected"] = dg.MetadataValue.int(rows)
    return dg.AssetMaterialization(
        asset_key=key,
        description=f"rebuilt by dbt {invocation.command or ''} outside Dagster".replace("  ", " "),
        metadata=metadata,
    )


def evaluate_run_results(
    run_results: Path, cursor: str | None, targets: Sequence[SyncTarget]
) -> dg.SensorResult | dg.SkipReason:
    """One sensor tick, separate from the decorator so it can be called directly."""
    if not run_results.is_file():
        return dg.SkipReason(f"no {run_results} yet (dbt has not run)")
    try:
        invocation = read_run_results(run_results)
    except (OSError, ValueError) as exc:
        # dbt may be writing the file right now; the next tick reads it whole.
        return dg.SkipReason(f"cannot read {run_results}: {exc}")
    if invocation.cursor == cursor:
        return dg.SkipReason(f"no dbt invocation since {invocation.invocation_id}")

    events: dict[dg.AssetKey, dg.AssetMaterialization] = {}
    run_requests: list[dg.RunRequest] = []
    for target in targets:
        hit = [m for m in target.dbt_models if _key_name(m) in invocation.rebuilt]
        if not hit:
            continue
        for dbt_model in hit:
            key = dg.AssetKey([p for p in dbt_model.split("/") if p])
            events[key] = _materialization(
                key, invocation, invocation.rebuilt[_key_name(dbt_model)]
            )
        partition_key = None
        if target.partitions_def is not None:
            # An activity model syncs its latest complete window; older windows are
            # backfilled by hand from the UI.
            partition_key = target.partitions_def.get_last_partition_key()
            if partition_key is None:
                continue
        run_requests.append(
            dg.RunRequest(
                job_name=target.job_name,
                run_key=f"dbt:{invocation.invocation_id}:{target.model}",
                partition_key=partition_key,
                tags={
                    "sf_activation/trigger": "dbt",
                    "dbt/invocation_id": invocation.invocation_id,
                    "dbt/models": ",".join(sorted(_key_name(m) for m in hit)),
                },
            )
        )
    if not run_requests:
        return dg.SensorResult(
            skip_reason=(
                f"dbt invocation {invocation.invocation_id} rebuilt "
                f"{len(invocation.rebuilt)} node(s), none read by a model"
            ),
            cursor=invocation.cursor,
        )
    return dg.SensorResult(
        run_requests=run_requests, asset_events=list(events.values()), cursor=invocation.cursor
    )


def build_dbt_sensor(
    targets: Sequence[SyncTarget],
    jobs: Sequence[AssetJob],
    target_dir: str | None = None,
) -> dg.SensorDefinition:
    """The sensor over SF_ACTIVATION_DBT_TARGET_DIR (read at every tick)."""
    env_dir = os.environ.get(DBT_TARGET_DIR_VARIABLE)
    default_status = (
        dg.DefaultSensorStatus.RUNNING
        if (target_dir or env_dir)
        else dg.DefaultSensorStatus.STOPPED
    )

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=30,
        default_status=default_status,
        description=(
            "Reads dbt's run_results.json in SF_ACTIVATION_DBT_TARGET_DIR and syncs the "
            "models whose dbt_models were rebuilt, once per dbt invocation."
        ),
    )
    def dbt_run_results_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        directory = target_dir or os.environ.get(DBT_TARGET_DIR_VARIABLE)
        if not directory:
            return dg.SkipReason(f"{DBT_TARGET_DIR_VARIABLE} is not set")
        return evaluate_run_results(Path(directory) / "run_results.json", context.cursor, targets)

    return dbt_run_results_sensor
