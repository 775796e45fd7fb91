"""The asset factory: one model file becomes `warehouse/<model>`, `salesforce/<model>` and the
`rejected_rows` check on the latter.

This layer only translates: model spec -> asset definitions, run config -> sync options,
`SyncSummary` -> materialization metadata and check results. The work is `plan_sync` and
`run_sync` in `sf_activation.sync`, the same code path as `sf-activation plan|sync`.
"""

import datetime as dt
import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from sf_activation.config import Settings
from sf_activation.dagster_resources import SalesforceResource, SyncSettingsResource, build_settings
from sf_activation.models import ModelSpec
from sf_activation.rejects import mask_redacted
from sf_activation.summary import SyncSummary
from sf_activation.sync import plan_sync, run_sync
from sf_activation.windows import Window, partition_bounds, restrict_to_window

GROUP_NAME = "sf_activation"
CHECK_NAME = "rejected_rows"
SALESFORCE_POOL = "salesforce"
MODEL_TAG = "sf_activation/model"
SAMPLE_ROWS = 10
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


# ------------------------------------------------------------------------ partitions


def partitions_for(spec: ModelSpec) -> dg.TimeWindowPartitionsDefinition | None:
    """Time-window partitions for an insert-only activity model with `partition_by:`.

    The windows are UTC (`partition_by.start`/`end` are converted to UTC, offsets and all).
    An unaligned start or end is widened to the cadence's boundaries so the partitions
    cover every instant from start to end; each run reads only the part of its window
    inside [start, end) (`_spec_for_run`).
    """
    pb = spec.partition_by
    if pb is None:
        return None
    start, end = partition_bounds(pb)
    kinds: dict[str, Callable[..., dg.TimeWindowPartitionsDefinition]] = {
        "hourly": dg.HourlyPartitionsDefinition,
        "daily": dg.DailyPartitionsDefinition,
        "weekly": dg.WeeklyPartitionsDefinition,
        "monthly": dg.MonthlyPartitionsDefinition,
    }
    # Dagster drops a datetime's offset rather than converting it: give it naive UTC.
    first = _cadence_floor(start, pb.cadence).replace(tzinfo=None)
    last = _cadence_ceil(end, pb.cadence).replace(tzinfo=None) if end is not None else None
    return kinds[pb.cadence](start_date=first, end_date=last, timezone="UTC")


def _cadence_floor(value: dt.datetime, cadence: str) -> dt.datetime:
    """The start of the UTC partition holding `value` (Dagster's boundaries: weeks start
    on Sunday, months on the 1st, all at 00:00)."""
    if cadence == "hourly":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if cadence == "weekly":
        return day - dt.timedelta(days=(day.weekday() + 1) % 7)
    if cadence == "monthly":
        return day.replace(day=1)
    return day


def _cadence_ceil(value: dt.datetime, cadence: str) -> dt.datetime:
    """The end of the UTC partition holding the instant just before `value`."""
    floor = _cadence_floor(value, cadence)
    if floor == value:
        return value
    if cadence == "hourly":
        return floor + dt.timedelta(hours=1)
    if cadence == "weekly":
        return floor + dt.timedelta(days=7)
    if cadence == "monthly":
        return (floor + dt.timedelta(days=32)).replace(day=1)
    return floor + dt.timedelta(days=1)


def spec_for_window(
    spec: ModelSpec, start: dt.datetime, end: dt.datetime, warehouse_url: str
) -> ModelSpec:
    """The model restricted to [start, end) of its partition column (see
    `sf_activation.windows.restrict_to_window`: UTC instants in any session time zone)."""
    return restrict_to_window(spec, Window(start, end), warehouse_url)


def _spec_for_run(
    spec: ModelSpec, context: dg.AssetExecutionContext, settings: Settings
) -> ModelSpec:
    if spec.partition_by is None:
        return spec
    # A single-run backfill of a range sees the whole range as one window; the first and
    # last partitions may reach past partition_by's start and end, which bound the read.
    window = context.partition_time_window
    clipped = Window(window.start, window.end).clipped_to(spec.partition_by)
    return spec_for_window(
        spec, clipped.start, clipped.end, settings.warehouse_url.get_secret_value()
    )


# ------------------------------------------------------------------------ metadata


def plan_metadata(spec: ModelSpec, summary: SyncSummary) -> dict[str, Any]:
    """What `warehouse/<model>` shows: the model's rows and what a sync would do with them."""
    to_send = summary.added + summary.changed + summary.pending
    return {
        "dagster/row_count": dg.MetadataValue.int(summary.rows),
        "added": dg.MetadataValue.int(summary.added),
        "changed": dg.MetadataValue.int(summary.changed),
        "removed": dg.MetadataValue.int(summary.removed),
        "invalid": dg.MetadataValue.int(summary.invalid),
        "unchanged": dg.MetadataValue.int(summary.unchanged),
        "pending": dg.MetadataValue.int(summary.pending),
        "to_send": dg.MetadataValue.int(to_send),
        "transport": dg.MetadataValue.text(summary.transport),
        "sample_changes": dg.MetadataValue.json(
            mask_redacted(summary.sample_changes[:SAMPLE_ROWS], set(spec.redact))
        ),
        "plan_duration_s": dg.MetadataValue.float(float(summary.duration_s)),
    }


def sync_metadata(summary: SyncSummary) -> dict[str, Any]:
    """What `salesforce/<model>` shows: what Salesforce was sent and what it answered."""
    metadata: dict[str, Any] = {
        "sent": dg.MetadataValue.int(summary.sent),
        "succeeded": dg.MetadataValue.int(summary.succeeded),
        "failed": dg.MetadataValue.int(summary.failed),
        "retried": dg.MetadataValue.int(summary.retried),
        "rejected": dg.MetadataValue.int(summary.rejected),
        "deleted": dg.MetadataValue.int(summary.deleted),
        "api_calls": dg.MetadataValue.int(summary.api_calls),
        "transport": dg.MetadataValue.text(summary.transport),
        "bulk_job_ids": dg.MetadataValue.json(list(summary.bulk_job_ids)),
        "duration_s": dg.MetadataValue.float(float(summary.duration_s)),
        "full_resync": dg.MetadataValue.bool(summary.full_resync),
        "sync_run_id": dg.MetadataValue.text(summary.run_id),
        "rows": dg.MetadataValue.int(summary.rows),
        "added": dg.MetadataValue.int(summary.added),
        "changed": dg.MetadataValue.int(summary.changed),
        "removed": dg.MetadataValue.int(summary.removed),
        "invalid": dg.MetadataValue.int(summary.invalid),
    }
    if summary.superseded:
        metadata["superseded"] = dg.MetadataValue.int(summary.superseded)
    if summary.reconciled:
        metadata["reconciled"] = dg.MetadataValue.int(summary.reconciled)
    if summary.unconfirmed:
        metadata["unconfirmed"] = dg.MetadataValue.int(summary.unconfirmed)
    if summary.stopped_reason:
        metadata["stopped_reason"] = dg.MetadataValue.text(summary.stopped_reason)
    return metadata


def _reject_url_value(url: str) -> dg.MetadataValue:
    if "://" in url:
        return dg.MetadataValue.url(url)
    return dg.MetadataValue.path(url)


REJECT_SAMPLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("primary_key", "string"),
        dg.TableColumn("error_code", "string"),
        dg.TableColumn("message", "string"),
        dg.TableColumn("fields", "string"),
        dg.TableColumn("attempts", "int"),
    ]
)


def reject_check_result(spec: ModelSpec, summary: SyncSummary) -> dg.AssetCheckResult:
    """`rejected_rows`: WARN-severity pass at or below max_reject_rate, ERROR failure above.

    The rate is the share of the model's rows (plus mirror deletes) that did not land,
    so a model with a few permanently bad rows does not fail on every quiet run.
    """
    codes = dict(summary.reject_codes)
    # The reject file also holds failed mirror deletes, which `rejected` does not count.
    count = max(sum(codes.values()), summary.rejected)
    denominator = summary.rows + (summary.removed if spec.operation == "mirror" else 0)
    rate = count / denominator if denominator else 0.0
    passed = rate <= spec.max_reject_rate
    sample = [
        dg.TableRecord(
            {
                "primary_key": str(row.get("primary_key")),
                "error_code": str(row.get("error_code") or ""),
                "message": str(row.get("message") or "")[:300],
                "fields": ",".join(row.get("fields") or []),
                "attempts": int(row.get("attempts") or 0),
            }
        )
        for row in summary.reject_sample[:SAMPLE_ROWS]
    ]
    metadata: dict[str, Any] = {
        "count": dg.MetadataValue.int(count),
        "rate": dg.MetadataValue.float(round(rate, 6)),
        "max_reject_rate": dg.MetadataValue.float(spec.max_reject_rate),
        "by_error_code": dg.MetadataValue.json(dict(sorted(codes.items()))),
        "sample": dg.MetadataValue.table(sample, schema=REJECT_SAMPLE_SCHEMA),
    }
    if summary.rejects_url:
        metadata["reject_file"] = _reject_url_value(summary.rejects_url)
    if passed:
        description = (
            f"{count} rejected ({rate:.2%}), within max_reject_rate {spec.max_reject_rate:.2%}"
        )
    else:
        description = (
            f"{count} rejected ({rate:.2%}), above max_reject_rate {spec.max_reject_rate:.2%}"
        )
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN if passed else dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def _definition_metadata(spec: ModelSpec, side: str) -> dict[str, Any]:
    """Shown under the asset's Definition tab: the model as written, no secrets."""
    metadata: dict[str, Any] = {
        "model_file": dg.MetadataValue.path(spec.display_path),
        "object": spec.object,
        "operation": spec.operation,
        "primary_key": spec.primary_key,
        "transport": spec.transport,
        "max_reject_rate": spec.max_reject_rate,
    }
    if spec.external_id:
        metadata["external_id"] = spec.external_id
    if spec.schedule:
        metadata["schedule"] = spec.schedule
    if side == "warehouse":
        metadata["sql"] = dg.MetadataValue.md(f"```sql\n{spec.sql_text.strip()}\n```")
        columns = [
            dg.TableColumn(column, "column", description=f"-> {spec.object}.{field}")
            for column, field in spec.fields.items()
        ]
    else:
        columns = [
            dg.TableColumn(field, "field", description=f"<- column {column}")
            for column, field in spec.fields.items()
        ]
    metadata["dagster/column_schema"] = dg.TableSchema(columns=columns)
    return metadata


def _code_version(spec: ModelSpec) -> str:
    # Changes when the model file or its SQL changes, so the UI flags the assets as stale.
    digest = hashlib.sha256(spec.path.read_bytes() if spec.path.exists() else b"")
    digest.update(spec.sql_text.encode())
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------------ errors


@contextmanager
def _user_errors_as_failures() -> Iterator[None]:
    """Re-raise errors a user can act on as a one-line Failure; anything else as it is."""
    try:
        yield
    except Exception as exc:
        failure = _as_failure(exc)
        if failure is None:
            raise
        raise failure from exc


def _as_failure(exc: Exception) -> dg.Failure | None:
    """Errors a user can act on become a one-line Failure instead of a traceback."""
    from sf_activation.diff import DeleteRateExceeded
    from sf_activation.interrupts import SyncInterrupted
    from sf_activation.lease import LeaseError, LeaseHeld
    from sf_activation.models import ModelError
    from sf_activation.rejects import RejectsError
    from sf_activation.salesforce.errors import SalesforceError
    from sf_activation.state import StateError
    from sf_activation.warehouse import WarehouseError

    known = (
        ModelError,
        SalesforceError,
        WarehouseError,
        RejectsError,
        StateError,
        LeaseError,
        SyncInterrupted,
    )
    if isinstance(exc, LeaseHeld):
        # Another run (CLI, another job, a backfill) is syncing this model: not a failure of
        # the data, and retrying at once would only be refused again.
        return dg.Failure(description=str(exc), allow_retries=False)
    if isinstance(exc, DeleteRateExceeded):
        hint = " Launch with `allow_deletes: true` in the Launchpad if the deletes are meant."
        return dg.Failure(description=f"{exc}{hint}", allow_retries=False)
    if isinstance(exc, known):
        return dg.Failure(
            description=f"{type(exc).__name__}: {exc}",
            metadata={"error": dg.MetadataValue.text(type(exc).__name__)},
        )
    return None


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
    code_version = _code_version(spec)
    description = spec.description or f"{spec.operation} {spec.object} from {spec.display_path}"

    @dg.asset(
        key=wh_key,
        deps=[dbt_asset_key(m) for m in spec.dbt_models],
        group_name=GROUP_NAME,
        kinds={"sql"},
        tags=tags,
        description=f"The rows of model {name} and the plan against the last sync. {description}",
        metadata=_definition_metadata(spec, "warehouse"),
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        code_version=code_version,
        automation_condition=wh_condition,
    )
    def _warehouse(
        context: dg.AssetExecutionContext,
        salesforce: SalesforceResource,
        sync_settings: SyncSettingsResource,
    ) -> dg.MaterializeResult:
        settings = build_settings(salesforce, sync_settings)
        with _user_errors_as_failures():
            run_spec = _spec_for_run(spec, context, settings)
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
        metadata=_definition_metadata(spec, "salesforce"),
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        code_version=code_version,
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
        with _user_errors_as_failures():
            run_spec = _spec_for_run(spec, context, settings)
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
