"""The asset factory: one model file becomes `warehouse/<model>`, `salesforce/<model>` and the
`rejected_rows` check on the latter.

This layer only translates: model spec -> asset definitions, run config -> sync options,
`SyncSummary` -> materialization metadata and check results. The work is `plan_sync` and
`run_sync` in `sf_activation.sync`, the same code path as `sf-activation plan|sync`.
"""

import time
import warnings
from collections.abc import Callable

import dagster as dg

from sf_activation.dagster.failures import user_errors_as_failures
from sf_activation.dagster.metadata import (
    CHECK_NAME,
    code_version,
    definition_metadata,
    plan_metadata,
    reject_check_result,
    sync_metadata,
)
from sf_activation.dagster.partitions import partitions_for, spec_for_run
from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource, build_settings
from sf_activation.models import ModelSpec
from sf_activation.sync import plan_sync, run_sync

GROUP_NAME = "sf_activation"
SALESFORCE_POOL = "salesforce"
MODEL_TAG = "sf_activation/model"
PROGRESS_LOG_SECONDS = 10.0


class SyncConfig(dg.Config):
    """Launchpad options of `salesforce/<model>` (run config key: `salesforce__<model>`)."""

    full_resync: bool = False
    """Send every row, changed or not (state is rebuilt from what Salesforce answers)."""
    allow_deletes: bool = False
    """mirror: delete even when more than the model's max_delete_rate of rows left it."""


def warehouse_key(model: str) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", model])


def salesforce_key(model: str) -> dg.AssetKey:
    return dg.AssetKey(["salesforce", model])


def dbt_asset_key(name: str) -> dg.AssetKey:
    """`fct_accounts` -> AssetKey(["fct_accounts"]) (dagster-dbt's default key for a model);
    `analytics/fct_accounts` for a project whose translator prefixes keys."""
    return dg.AssetKey([part for part in name.split("/") if part])


def _progress_logger(context: dg.AssetExecutionContext) -> Callable[[str, int, int], None]:
    last = [0.0]

    def report(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_LOG_SECONDS:
            return
        last[0] = now
        context.log.info(f"{phase}: {done}" + (f" of {total}" if total else "") + " rows")

    return report


# ------------------------------------------------------------------------ the factory


def build_model_assets(
    spec: ModelSpec, *, automation: bool = True
) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """`warehouse/<model>` and `salesforce/<model>` (with its `rejected_rows` check)."""
    name = spec.name
    wh_key = warehouse_key(name)
    sf_key = salesforce_key(name)
    partitions_def = partitions_for(spec)
    backfill_policy = dg.BackfillPolicy.single_run() if partitions_def else None
    # With dbt inside the same deployment, the automation sensor re-plans after the dbt
    # models are rebuilt and syncs in the same tick (see docs/dagster.md). The conditions
    # do nothing until that sensor is switched on.
    wh_condition = dg.AutomationCondition.eager() if automation and spec.dbt_models else None
    sf_condition = (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
        & ~dg.AutomationCondition.in_progress()
        if wh_condition is not None
        else None
    )

    # BackfillPolicy is marked beta; a range backfill of a partitioned model needs it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _build(
            spec, wh_key, sf_key, partitions_def, backfill_policy, wh_condition, sf_condition
        )


def _build(
    spec: ModelSpec,
    wh_key: dg.AssetKey,
    sf_key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition | None,
    backfill_policy: dg.BackfillPolicy | None,
    wh_condition: dg.AutomationCondition | None,
    sf_condition: dg.AutomationCondition | None,
) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    name = spec.name
    tags = {"object": spec.object, "operation": spec.operation}
    version = code_version(spec)
    description = spec.description or f"{spec.operation} {spec.object} from {spec.display_path}"

    @dg.asset(
        key=wh_key,
        deps=[dbt_asset_key(m) for m in spec.dbt_models],
        group_name=GROUP_NAME,
        kinds={"sql"},
        tags=tags,
        description=f"The rows of model {name} and the plan against the last sync. {description}",
        metadata=definition_metadata(spec, "warehouse"),
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        code_version=version,
        automation_condition=wh_condition,
    )
    def _warehouse(
        context: dg.AssetExecutionContext,
        salesforce: SalesforceResource,
        sync_settings: SyncSettingsResource,
    ) -> dg.MaterializeResult:
        settings = build_settings(salesforce, sync_settings)
        with user_errors_as_failures():
            run_spec = spec_for_run(spec, context, settings)
            # A dry run: it reads describe and state, sends nothing. Deletes beyond
            # max_delete_rate are refused by the sync step, where allow_deletes is set.
            summary = plan_sync(
                run_spec,
                settings,
                run_id=context.run.run_id,
                allow_deletes=True,
                progress=_progress_logger(context),
            )
        context.log.info(
            f"{name}: {summary.rows} rows; added {summary.added}, changed {summary.changed}, "
            f"removed {summary.removed}, invalid {summary.invalid}, pending {summary.pending}"
        )
        return dg.MaterializeResult(metadata=plan_metadata(spec, summary))

    @dg.asset(
        key=sf_key,
        deps=[wh_key],
        group_name=GROUP_NAME,
        kinds={"salesforce"},
        tags=tags,
        description=f"Model {name} in Salesforce: {description}",
        metadata=definition_metadata(spec, "salesforce"),
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        code_version=version,
        automation_condition=sf_condition,
        pool=SALESFORCE_POOL,
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=sf_key,
                description=(
                    f"Rows Salesforce rejected or that could not be sent; fails above "
                    f"max_reject_rate {spec.max_reject_rate:.2%}"
                ),
                blocking=True,
            )
        ],
    )
    def _salesforce(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        salesforce: SalesforceResource,
        sync_settings: SyncSettingsResource,
    ) -> dg.MaterializeResult:
        settings = build_settings(salesforce, sync_settings)
        with user_errors_as_failures():
            run_spec = spec_for_run(spec, context, settings)
            summary = run_sync(
                run_spec,
                settings,
                run_id=context.run.run_id,
                full_resync=config.full_resync,
                allow_deletes=config.allow_deletes,
                progress=_progress_logger(context),
            )
        context.log.info(
            f"{name}: sent {summary.sent}, succeeded {summary.succeeded}, failed "
            f"{summary.failed}, retried {summary.retried}, {summary.api_calls} API calls "
            f"({summary.transport})"
        )
        if summary.stopped_reason:
            context.log.warning(f"{name}: stopped early: {summary.stopped_reason}")
        if summary.stopped == "unreachable":
            # What Salesforce confirmed is saved and the rest is pending; the run did not
            # do its work, and a schedule or sensor must see that.
            raise dg.Failure(
                description=f"{name}: {summary.stopped_reason}; rerun to send the rest",
                metadata=sync_metadata(summary),
            )
        return dg.MaterializeResult(
            metadata=sync_metadata(summary),
            check_results=[reject_check_result(spec, summary)],
        )

    return _warehouse, _salesforce
