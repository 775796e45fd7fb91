"""Time-window partitions for insert-only activity models with `partition_by:`, and the
model restricted to one run's window."""

import datetime as dt
from collections.abc import Callable

import dagster as dg

from sf_activation.config import Settings
from sf_activation.models import ModelSpec
from sf_activation.windows import Window, partition_bounds, restrict_to_window


def partitions_for(spec: ModelSpec) -> dg.TimeWindowPartitionsDefinition | None:
    """Time-window partitions for an insert-only activity model with `partition_by:`.

    The windows are UTC (`partition_by.start`/`end` are converted to UTC, offsets and all).
    An unaligned start or end is widened to the cadence's boundaries so the partitions
    cover every instant from start to end; each run reads only the part of its window
    inside [start, end) (`spec_for_run`).
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


def spec_for_run(
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
