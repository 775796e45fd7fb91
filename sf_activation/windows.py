"""Partition windows: UTC instants, whatever the warehouse session's time zone.

A :class:`Window` is ``[start, end)`` of two aware UTC datetimes. Dagster's partitions
(`sf_activation.dagster.partitions`) and ``sf-activation sync MODEL --window START..END``
both end up here: :func:`restrict_to_window` turns a model with ``partition_by:`` into
the same model reading one window of its partition column.

What a window means for each type of partition column (docs/models.md, "Time zones and
partition windows"):

- ``TIMESTAMP WITH TIME ZONE`` (Postgres/DuckDB ``timestamptz``, Snowflake
  ``TIMESTAMP_LTZ``/``TIMESTAMP_TZ``, BigQuery ``TIMESTAMP``): an instant, compared as an
  instant;
- a naive ``TIMESTAMP`` (Snowflake ``TIMESTAMP_NTZ``, BigQuery ``DATETIME``): holds UTC
  wall-clock time;
- ``DATE``: the day that starts at its UTC midnight; a date is in the window when its
  midnight is.

The column is compared, bare, against a literal of its own type that no session setting
can reinterpret: a naive ``TIMESTAMP '2024-01-01 00:00:00'`` literal against a
``timestamptz`` column would be read in the session's time zone (DuckDB's follows the
machine's, Snowflake's defaults to America/Los_Angeles), shifting every window. Keeping
the column bare keeps indexes and partition pruning working, and the session's time zone
is left alone (the model's own ``now()`` or ``date_trunc`` keep their meaning). The
column's type comes from the query's result schema: a probe that reads no rows
(:func:`probe_column_kind`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
from sqlalchemy.engine import make_url

from sf_activation.models import ModelError, ModelSpec, PartitionBy, check_columns
from sf_activation.warehouse import (
    BigQueryWarehouse,
    DuckDBWarehouse,
    SnowflakeWarehouse,
    Warehouse,
)

ColumnKind = Literal["timestamp", "timestamptz", "date"]
"""A partition column's type: naive timestamp (UTC), timestamp with time zone, date."""

# The warehouses whose literals are written per dialect (the backend names
# `Warehouse.from_url` dispatches on). Any other SQLAlchemy dialect gets standard SQL.
DIALECTS = ("duckdb", "postgresql", "snowflake", "bigquery")
GENERIC = "generic"

WINDOW_FORM = (
    "START..END with ISO dates or datetimes, END exclusive, no offset meaning UTC "
    "(e.g. 2024-01-01..2024-01-08 or 2024-01-01T06:00:00+02:00..2024-01-01T12:00:00+02:00)"
)


# --------------------------------------------------------------------------- instants


def to_utc(value: dt.date | dt.datetime) -> dt.datetime:
    """An aware UTC datetime: a naive datetime is UTC, an offset is converted (not
    dropped), a date is its midnight in UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            utc = value.replace(tzinfo=dt.UTC)
        else:
            utc = value.astimezone(dt.UTC)
        # A plain datetime (not a pendulum or other subclass), so formatting is predictable.
        return dt.datetime(
            utc.year,
            utc.month,
            utc.day,
            utc.hour,
            utc.minute,
            utc.second,
            utc.microsecond,
            tzinfo=dt.UTC,
        )
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def partition_bounds(pb: PartitionBy) -> tuple[dt.datetime, dt.datetime | None]:
    """`partition_by.start` and `.end` as UTC instants (end None: open-ended)."""
    return to_utc(pb.start), (to_utc(pb.end) if pb.end is not None else None)


def format_instant(value: dt.datetime) -> str:
    """`2024-01-01T00:00:00Z` (microseconds only when there are some)."""
    text = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def _parse_instant(part: str, which: str, text: str) -> dt.datetime:
    if not part:
        raise ValueError(f"{which} is missing in {text!r}; expected {WINDOW_FORM}")
    try:
        # Python 3.11 reads dates, `T` or space separated datetimes, `Z` and offsets.
        parsed = dt.datetime.fromisoformat(part)
    except ValueError:
        raise ValueError(
            f"{which} {part!r} is not an ISO date or datetime; expected {WINDOW_FORM}"
        ) from None
    return to_utc(parsed)


@dataclass(frozen=True)
class Window:
    """`[start, end)`: two aware UTC datetimes, end exclusive, end after start.

    Naive datetimes given to the constructor are taken as UTC, aware ones converted, dates
    are their UTC midnight. An empty or inverted window raises ValueError.
    """

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        start, end = to_utc(self.start), to_utc(self.end)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if end <= start:
            what = "empty" if end == start else "inverted"
            raise ValueError(
                f"window {format_instant(start)}..{format_instant(end)} is {what}: "
                "END must be after START (END is exclusive)"
            )

    @classmethod
    def parse(cls, text: str) -> Window:
        """`START..END` as the CLI takes it; ValueError (one line) naming what is wrong."""
        raw = text.strip()
        if raw.count("..") != 1:
            raise ValueError(f"{text!r} is not a window; expected {WINDOW_FORM}")
        head, tail = (p.strip() for p in raw.split(".."))
        start = _parse_instant(head, "START", text)
        end = _parse_instant(tail, "END", text)
        return cls(start, end)

    def clipped_to(self, pb: PartitionBy) -> Window:
        """The part of this window inside `partition_by`'s [start, end)."""
        lo, hi = partition_bounds(pb)
        start = max(self.start, lo)
        end = self.end if hi is None else min(self.end, hi)
        if end <= start:
            raise ValueError(
                f"window {self} is outside partition_by's {format_instant(lo)}.."
                f"{format_instant(hi) if hi else '(open)'}"
            )
        return Window(start, end)

    def __str__(self) -> str:
        return f"{format_instant(self.start)}..{format_instant(self.end)}"


# --------------------------------------------------------------------------- SQL


def dialect_of(warehouse: Warehouse) -> str:
    """`duckdb`, `postgresql`, `snowflake`, `bigquery`, or `generic` for other dialects."""
    if isinstance(warehouse, DuckDBWarehouse):
        return "duckdb"
    if isinstance(warehouse, SnowflakeWarehouse):
        return "snowflake"
    if isinstance(warehouse, BigQueryWarehouse):
        return "bigquery"
    try:
        name = make_url(warehouse.display_url).get_backend_name()
    except Exception:  # an unparseable URL cannot have opened a reader; be safe
        return GENERIC
    return name if name in DIALECTS else GENERIC


def quote_column(name: str, dialect: str) -> str:
    """The partition column as an identifier of `dialect`."""
    if dialect == "bigquery":
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    if dialect == "snowflake" and name == name.lower():
        # Snowflake's upper-cased unquoted names come back lower-cased (normalise_name);
        # the column itself is upper case. A name with an upper-case letter was quoted.
        name = name.upper()
    return '"' + name.replace('"', '""') + '"'


def _timestamp_text(value: dt.datetime) -> str:
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text


def _epoch(value: dt.datetime) -> str:
    """`<seconds>, 0` or `<microseconds>, 6`: Snowflake TO_TIMESTAMP_* arguments."""
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}, 0"
    return f"{micros}, 6"


def _first_midnight(value: dt.datetime) -> dt.date:
    """The first date whose UTC midnight is at or after `value`."""
    day = value.date()
    return day if value.time() == dt.time(0) else day + dt.timedelta(days=1)


def bound_literal(value: dt.datetime, kind: ColumnKind, dialect: str) -> str:
    """A SQL literal of the column's type for the UTC instant `value`, whose meaning no
    session setting (time zone, timestamp type mapping, input formats) changes."""
    value = to_utc(value)
    if kind == "date":
        day = _first_midnight(value)
        if dialect == "snowflake":
            return f"DATE_FROM_PARTS({day.year}, {day.month}, {day.day})"
        return f"DATE '{day.isoformat()}'"
    text = _timestamp_text(value)
    if dialect == "snowflake":
        # Seconds since the epoch: TIMESTAMP_NTZ gets UTC wall-clock time, TIMESTAMP_TZ the
        # instant (compared with LTZ and TZ columns as instants). No input format involved,
        # and TIMESTAMP_TYPE_MAPPING does not matter.
        function = "TO_TIMESTAMP_NTZ" if kind == "timestamp" else "TO_TIMESTAMP_TZ"
        return f"{function}({_epoch(value)})"
    if dialect == "bigquery":
        return f"DATETIME '{text}'" if kind == "timestamp" else f"TIMESTAMP '{text}+00:00'"
    if kind == "timestamp":
        return f"TIMESTAMP '{text}'"
    if dialect in ("duckdb", "postgresql"):
        return f"TIMESTAMPTZ '{text}+00'"
    return f"TIMESTAMP WITH TIME ZONE '{text}+00:00'"


def window_predicate(column: str, window: Window, kind: ColumnKind, dialect: str) -> str:
    """`<column> >= <start> AND <column> < <end>` in `dialect`, for a column of `kind`."""
    col = quote_column(column, dialect)
    lo = bound_literal(window.start, kind, dialect)
    hi = bound_literal(window.end, kind, dialect)
    return f"{col} >= {lo} AND {col} < {hi}"


def _inner_sql(spec: ModelSpec) -> str:
    return spec.sql_text.strip().rstrip(";").rstrip()


def window_sql(spec: ModelSpec, window: Window, kind: ColumnKind, dialect: str) -> str:
    """The model's query restricted to `window` (the shape of `ModelSpec.partition_sql`)."""
    pb = _partition_by(spec)
    predicate = window_predicate(pb.column, window, kind, dialect)
    # Newlines keep a trailing `-- comment` in the model from swallowing the closing paren.
    return f"SELECT * FROM (\n{_inner_sql(spec)}\n) AS _model WHERE {predicate}"


def spec_in_window(spec: ModelSpec, window: Window, kind: ColumnKind, dialect: str) -> ModelSpec:
    """The model reading only `window`, for a partition column of `kind` (no warehouse)."""
    return spec.model_copy(update={"sql_text": window_sql(spec, window, kind, dialect)})


# --------------------------------------------------------------------------- probing


def column_kind(typ: pa.DataType) -> ColumnKind | None:
    """The kind of a partition column from its Arrow type (None: not a date or timestamp)."""
    if pa.types.is_timestamp(typ):
        return "timestamptz" if typ.tz else "timestamp"
    if pa.types.is_date(typ):
        return "date"
    return None


def probe_sql(spec: ModelSpec, dialect: str) -> str:
    """One row, NULL, typed as the partition column: the model's rows are not read
    (`LIMIT 0`), and the NULL row is there because readers yield no empty batch."""
    col = quote_column(_partition_by(spec).column, dialect)
    return (
        f"SELECT * FROM (SELECT {col} FROM (\n{_inner_sql(spec)}\n) AS _model LIMIT 0) "
        "AS _probe UNION ALL SELECT NULL"
    )


def probe_column_kind(spec: ModelSpec, warehouse: Warehouse) -> ColumnKind:
    """The partition column's kind, from the query's result schema.

    A column that is not a date or timestamp is a ModelError naming the file and key.
    On a dialect whose reader cannot tell a NULL's type (SQLAlchemy dialects other than
    Postgres) an unknown type is taken as a naive UTC timestamp.
    """
    pb = _partition_by(spec)
    dialect = dialect_of(warehouse)
    typ: pa.DataType = pa.null()
    for batch in warehouse.iter_batches(probe_sql(spec, dialect), batch_rows=1):
        typ = batch.schema.field(0).type
        break
    kind = column_kind(typ)
    if kind is not None:
        return kind
    if dialect == GENERIC and (pa.types.is_null(typ) or pa.types.is_string(typ)):
        return "timestamp"
    raise ModelError(
        f"{spec.display_path}: partition_by.column: column {pb.column!r} is {typ} in the "
        "warehouse; a partition column must be a DATE, a TIMESTAMP (holding UTC) or a "
        "TIMESTAMP WITH TIME ZONE: CAST it in the model SQL"
    )


def restrict_to_window(spec: ModelSpec, window: Window, warehouse: Warehouse | str) -> ModelSpec:
    """The model reading only `window` of its partition column, correct for the column's
    type in any session time zone. `warehouse` is a reader or a warehouse URL."""
    _partition_by(spec)
    if isinstance(warehouse, str):
        with Warehouse.from_url(warehouse) as reader:
            return restrict_to_window(spec, window, reader)
    # The columns first: a missing partition column is named as a model error, not as
    # the probe's SQL failing.
    check_columns(spec, warehouse.columns(spec.sql_text))
    kind = probe_column_kind(spec, warehouse)
    return spec_in_window(spec, window, kind, dialect_of(warehouse))


def _partition_by(spec: ModelSpec) -> PartitionBy:
    if spec.partition_by is None:
        raise ModelError(
            f"{spec.display_path}: partition_by: missing; only a model with partition_by: "
            "can be read one window at a time"
        )
    return spec.partition_by


__all__ = [
    "ColumnKind",
    "Window",
    "bound_literal",
    "column_kind",
    "dialect_of",
    "format_instant",
    "partition_bounds",
    "probe_column_kind",
    "restrict_to_window",
    "spec_in_window",
    "to_utc",
    "window_predicate",
    "window_sql",
]
