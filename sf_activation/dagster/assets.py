"""The asset factory: one model file becomes `warehouse/<model>`, `salesforce/<model>` and the
`rejected_rows` check on the latter.

This layer only translates: model spec -> asset definitions, run config -> sync options,
`SyncSummary` -> materialization metadata and check results. The work is `plan_sync` and
`run_sync` in `sf_activation.sync`, the same code path as `sf-activation plan|sync`.
"""

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import dagster as dg

from sf_activation.dagster.failures import rejected_rows_failure, user_errors_as_failures
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
from sf_activation.dagster.translator import GROUP_NAME as GROUP_NAME
from sf_activation.dagster.translator import SfActivationTranslator
from sf_activation.dagster.translator import dbt_asset_key as dbt_asset_key
from sf_activation.dagster.translator import salesforce_key as salesforce_key
from sf_activation.dagster.translator import warehouse_key as warehouse_key
from sf_activation.models import ModelSpec
from sf_activation.sync import plan_sync, run_sync, stage_sync

SALESFORCE_POOL = "salesforce"
MODEL_TAG = "sf_activation/model"
# A run with this tag set to "true" resyncs every row (as `full_resync: true` in the
# Launchpad does; runs launched with that config get the tag, so the run list shows it).
FULL_RESYNC_TAG = "sf_activation/full_resync"
PROGRESS_LOG_SECONDS = 10.0


class SyncConfig(dg.Config):
    """Launchpad options of `salesforce/<model>` (run config key: `salesforce__<model>`)."""

    full_resync: bool = False
    """Send every row, changed or not (state is rebuilt from what Salesforce answers)."""
    allow_deletes: bool = False
    """mirror: delete even when more than the model's max_delete_rate of rows left it."""


def _full_resync_asked(context: dg.AssetExecutionContext, sf_key: dg.AssetKey) -> bool:
    """Whether this run resyncs every row: the sync step's `full_resync` run config (read
    here too, so the plan staged for it is a full resync's) or the run tag."""
    if context.run.tags.get(FULL_RESYNC_TAG) == "true":
        return True
    ops = (context.run.run_config or {}).get("ops") or {}
    config = (ops.get(sf_key.to_python_identifier()) or {}).get("config") or {}
    return bool(config.get("full_resync"))


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
    spec: ModelSpec,
    *,
    automation: bool = True,
    parents: Mapping[str, list[str]] | None = None,
    after: Sequence[str] = (),
    translator: SfActivationTranslator | None = None,
) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """`warehouse/<model>` and `salesforce/<model>` (with its `rejected_rows` check); keys,
    groups and the dbt keys come from `translator` (default: `SfActivationTranslator()`).

    `after`: the models whose records this one's lookups point at (`parents`: parent
    object -> those models); `salesforce/<model>` depends on theirs, so a run that syncs
    both sends the parents first, on any executor.
    """
    name = spec.name
    translator = translator if translator is not None else SfActivationTranslator()
    wh_key = translator.get_asset_key("warehouse", name)
    sf_key = translator.get_asset_key("salesforce", name)
    partitions_def = partitions_for(spec)
    backfill_policy = dg.BackfillPolicy.single_run() if partitions_def else None
    # With dbt inside the same deployment, the automation sensor re-plans after the dbt
    # models are rebuilt and syncs in the same tick (see docs/dagster.md). The conditions
    # do nothing until that sensor is switched on.
    wh_condition = dg.AutomationCondition.eager() if automation and spec.dbt_models else None
    sf_condition = (
        # Its own plan, not a parent model's sync, is what requests it.
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).allow(
            dg.AssetSelection.assets(wh_key)
        )
        & ~dg.AutomationCondition.in_progress()
        if wh_condition is not None
        else None
    )

    # BackfillPolicy is marked beta; a range backfill of a partitioned model needs it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _build(
            spec,
            wh_key,
            sf_key,
            partitions_def,
            backfill_policy,
            wh_condition,
            sf_condition,
            parents=dict(parents) if parents is not None else None,
            upstream=[translator.get_asset_key("salesforce", m) for m in after],
            translator=translator,
        )


def _build(
    spec: ModelSpec,
    wh_key: dg.AssetKey,
    sf_key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition | None,
    backfill_policy: dg.BackfillPolicy | None,
    wh_condition: dg.AutomationCondition | None,
    sf_condition: dg.AutomationCondition | None,
    *,
    parents: dict[str, list[str]] | None,
    upstream: list[dg.AssetKey],
    translator: SfActivationTranslator,
) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    name = spec.name
    tags = {"object": spec.object, "operation": spec.operation}
    version = code_version(spec)
    description = spec.description or f"{spec.operation} {spec.object} from {spec.display_path}"

    @dg.asset(
        key=wh_key,
        deps=[translator.get_dbt_asset_key(m) for m in spec.dbt_models],
        group_name=translator.get_group_name("warehouse", name),
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
        full_resync = _full_resync_asked(context, sf_key)
        if full_resync and context.run.tags.get(FULL_RESYNC_TAG) != "true":
            # Shown on the run in the UI's run list, and read by every step of the run.
            context.instance.add_run_tags(context.run.run_id, {FULL_RESYNC_TAG: "true"})
        selection = context.run.asset_selection
        # A model with `redact:` values is not staged: the plan file holds every value in
        # clear, and nothing redacted may be kept beside the state. Its sync step plans
        # for itself (the query runs twice for such models).
        sends = (selection is None or sf_key in selection) and not (
            spec.redact or spec.primary_key_redacted
        )
        with user_errors_as_failures():
            run_spec = spec_for_run(spec, context, settings)
            # It reads describe and state, sends nothing. Deletes beyond max_delete_rate
            # are refused by the sync step, where allow_deletes is set. When this run also
            # syncs the model, the plan is staged for that step, which sends it without
            # querying the warehouse again.
            summary = (stage_sync if sends else plan_sync)(
                run_spec,
                settings,
                run_id=context.run.run_id,
                full_resync=full_resync,
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
        deps=[wh_key, *upstream],
        group_name=translator.get_group_name("salesforce", name),
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
    ) -> Iterator[dg.MaterializeResult]:
        settings = build_settings(salesforce, sync_settings)
        with user_errors_as_failures():
            run_spec = spec_for_run(spec, context, settings)
            summary = run_sync(
                run_spec,
                settings,
                run_id=context.run.run_id,
                full_resync=config.full_resync or context.run.tags.get(FULL_RESYNC_TAG) == "true",
                allow_deletes=config.allow_deletes,
                progress=_progress_logger(context),
                use_staged_plan=True,
                parents=parents,
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
        check = reject_check_result(spec, summary)
        yield dg.MaterializeResult(metadata=sync_metadata(summary), check_results=[check])
        if not check.passed:
            # The materialization and the check result are recorded by now; failing the
            # step here replaces Dagster's own blocking-check error (a stack trace naming
            # only the check) with one line: model, rate against max_reject_rate, file.
            raise rejected_rows_failure(spec, summary, check)

    # The translator's last word on owners, tags, kinds, automation (never the key).
    return (
        _warehouse.map_asset_specs(lambda s: translator.get_asset_spec("warehouse", spec, s)),
        _salesforce.map_asset_specs(lambda s: translator.get_asset_spec("salesforce", spec, s)),
    )
