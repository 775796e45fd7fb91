"""Any other SQLAlchemy dialect (PostgreSQL first): a server-side cursor, converted to
Arrow per batch with one schema for every batch."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sf_activation.warehouse.base import (
    DEFAULT_BATCH_ROWS,
    Warehouse,
    WarehouseError,
    check_names,
    limit0,
    normalise_name,
    one_line,
    strip_sql,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# --------------------------------------------------------------------------- SQLAlchemy

# Postgres type OIDs (what psycopg2, psycopg and pg8000 put in cursor.description) mapped
# to Arrow types, so a column's type is known before any value is seen — a column that is
# all NULL in the first batch still gets its real type.
_PG_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    18: pa.string(),
    19: pa.string(),
    25: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    2950: pa.string(),  # uuid
    114: pa.string(),  # json, as JSON text
    3802: pa.string(),  # jsonb, as JSON text
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1083: pa.time64("us"),
    1266: pa.string(),  # timetz: Arrow has no time-with-zone
    1186: pa.duration("us"),
    17: pa.binary(),
    790: pa.string(),  # money, as the server formats it
    869: pa.string(),  # inet
    650: pa.string(),  # cidr
    829: pa.string(),  # macaddr
    1000: pa.list_(pa.bool_()),
    1005: pa.list_(pa.int16()),
    1007: pa.list_(pa.int32()),
    1016: pa.list_(pa.int64()),
    1021: pa.list_(pa.float32()),
    1022: pa.list_(pa.float64()),
    1009: pa.list_(pa.string()),
    1014: pa.list_(pa.string()),
    1015: pa.list_(pa.string()),
    2951: pa.list_(pa.string()),
    1182: pa.list_(pa.date32()),
    1115: pa.list_(pa.timestamp("us")),
    1185: pa.list_(pa.timestamp("us", tz="UTC")),
}
_PG_NUMERIC = 1700


def _to_text(value: Any) -> Any:
    """Python value → text for a string column (JSON for containers, ISO for dates)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, dt.date | dt.time | dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _plain(value: Any) -> Any:
    """Driver value → something pyarrow converts (memoryview, UUID, containers of them)."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _RowsToArrow:
    """Convert lists of DBAPI rows to Arrow batches with one schema for the whole result.

    Each column's type comes from the driver's description when it is informative
    (Postgres OIDs), else from the first batch's values, widened so later batches fit
    (integers → int64, decimals → precision 38). A column that is all NULL in the first
    batch and has no declared type becomes text; later values are converted to text.
    Values that do not fit the established type raise a WarehouseError naming the column.
    """

    def __init__(self, names: list[str], declared: list[pa.DataType | None]) -> None:
        self.names = names
        self.declared = declared
        self.types: list[pa.DataType] | None = None
        self.schema: pa.Schema | None = None

    def convert(self, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in self.names]
        if self.types is None:
            arrays = [self._first(i, list(col)) for i, col in enumerate(columns)]
            self.types = [a.type for a in arrays]
            self.schema = pa.schema(
                [pa.field(n, t) for n, t in zip(self.names, self.types, strict=True)]
            )
        else:
            arrays = [self._later(i, list(col)) for i, col in enumerate(columns)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _first(self, i: int, values: list[Any]) -> pa.Array:
        declared = self.declared[i]
        if declared is not None:
            return self._build(i, values, declared)
        try:
            inferred = pa.array([_plain(v) for v in values])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # Mixed Python types in one column (a driver returning a variant type): text.
            return pa.array([_to_text(v) for v in values], type=pa.string())
        typ = inferred.type
        if pa.types.is_null(typ):
            return pa.array([_to_text(v) for v in values], type=pa.string())
        if pa.types.is_integer(typ):
            typ = pa.int64()
        elif pa.types.is_decimal(typ):
            # Later rows may have more integer digits; the scale seen first is kept so
            # a value with more decimal places fails loudly instead of being rounded.
            typ = pa.decimal128(38, min(typ.scale, 38))
        elif pa.types.is_struct(typ) or pa.types.is_map(typ):
            return pa.array([_to_text(v) for v in values], type=pa.string())
        return self._build(i, values, typ)

    def _later(self, i: int, values: list[Any]) -> pa.Array:
        assert self.types is not None
        return self._build(i, values, self.types[i])

    def _build(self, i: int, values: list[Any], typ: pa.DataType) -> pa.Array:
        if pa.types.is_string(typ):
            return pa.array([_to_text(v) for v in values], type=typ)
        try:
            return pa.array([_plain(v) for v in values], type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
            bad = next((v for v in values if v is not None), None)
            raise WarehouseError(
                f"column {self.names[i]!r}: a value ({type(bad).__name__}) does not fit the "
                f"column's type {typ} (from the driver or the first rows); CAST the column "
                f"in the model SQL ({one_line(str(exc))})"
            ) from exc


def _declared_types(dialect_name: str, description: Sequence[Sequence[Any]]) -> list[Any]:
    out: list[pa.DataType | None] = []
    for col in description:
        code = col[1]
        if dialect_name != "postgresql" or not isinstance(code, int):
            out.append(None)
        elif code == _PG_NUMERIC:
            precision, scale = col[4], col[5]
            if precision and scale is not None and 0 < precision <= 38:
                out.append(pa.decimal128(precision, scale))
            else:
                out.append(None)  # unconstrained numeric: from the values
        else:
            out.append(_PG_TYPES.get(code))
    return out


class SQLAlchemyWarehouse(Warehouse):
    """Anything SQLAlchemy speaks, read through a server-side cursor.

    `stream_results` makes drivers that can (psycopg2, psycopg, pg8000, mysqlclient,
    pymysql, oracledb, …) keep the result on the server and hand it over `batch_rows`
    rows at a time; only one batch of Python rows and its Arrow copy exist at once.
    """

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        try:
            # NullPool: a sync run opens one connection for its query; nothing to keep warm.
            self._engine = create_engine(url, poolclass=NullPool)
        except Exception as exc:
            raise self._error("cannot use this warehouse URL", exc) from exc
        self._normalise = bool(getattr(self._engine.dialect, "requires_name_normalize", False))

    def _names(self, keys: Iterable[str]) -> list[str]:
        names = [str(k) for k in keys]
        if self._normalise:
            names = [normalise_name(n) for n in names]
        return check_names(names)

    def _connect(self) -> Any:
        try:
            return self._engine.connect()
        except Exception as exc:
            raise self._error("cannot connect to the warehouse", exc) from exc

    def columns(self, sql: str) -> list[str]:
        wrapped = _escape_percent(limit0(strip_sql(sql)), self._engine.dialect)
        with self._connect() as conn:
            try:
                result = conn.exec_driver_sql(wrapped)
                names = list(result.keys())
                result.close()
            except Exception as exc:
                raise self._error("query failed", exc) from exc
        return self._names(names)

    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        self._check_batch_rows(batch_rows)
        sql = strip_sql(sql)
        conn = self._connect()
        try:
            try:
                # exec_driver_sql: the model's SQL goes to the driver verbatim (no
                # SQLAlchemy bind-parameter parsing of `:name` inside it).
                result = conn.execution_options(
                    stream_results=True, yield_per=batch_rows, max_row_buffer=batch_rows
                ).exec_driver_sql(_escape_percent(sql, self._engine.dialect))
                if not result.returns_rows:
                    raise self._error("query failed", "the SQL is a statement that returns no rows")
                names = self._names(result.keys())
                # Server-side cursors fill in description with the first fetch; SQLAlchemy
                # has done that fetch by now.
                description = result.cursor.description if result.cursor is not None else None
                declared = _declared_types(
                    self._engine.dialect.name, description or [(n, None) for n in names]
                )
                converter = _RowsToArrow(names, declared)
                for rows in result.partitions(batch_rows):
                    if rows:
                        yield converter.convert(rows)
                result.close()
            except WarehouseError:
                raise
            except Exception as exc:
                raise self._error("query failed", exc) from exc
        finally:
            # The connection may already be broken; the original error matters more.
            with contextlib.suppress(Exception):
                conn.close()

    @property
    def dialect(self) -> Any:
        from sf_activation.warehouse.dialect import dialect_named

        return dialect_named(self._engine.dialect.name)

    def execute(self, sql: str) -> None:
        if self.dialect is None:
            super().execute(sql)
        try:
            with self._engine.begin() as conn:
                conn.exec_driver_sql(_escape_percent(sql, self._engine.dialect))
        except Exception as exc:
            raise self._error("statement failed", exc) from exc

    def load_rows(self, table: str, rows: pa.Table) -> None:
        """PostgreSQL through psycopg2: COPY ... FROM STDIN (CSV), one round trip for
        any number of rows; other drivers: INSERTs (`Warehouse.load_rows`)."""
        if self._engine.dialect.name != "postgresql" or self._engine.driver != "psycopg2":
            super().load_rows(table, rows)
            return
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        # Nulls as empty unquoted fields, strings always quoted: '' stays distinct.
        pacsv.write_csv(
            rows, buf, pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
        )
        buf.seek(0)
        names = ", ".join(self.dialect.quote(n) for n in rows.column_names)
        raw = self._engine.raw_connection()
        try:
            with raw.cursor() as cur:
                cur.copy_expert(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv)", buf)
            raw.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                raw.rollback()
            raise self._error("loading rows failed", exc) from exc
        finally:
            raw.close()

    def close(self) -> None:
        self._engine.dispose()


def _escape_percent(sql: str, dialect: Any) -> str:
    # pyformat/format drivers (psycopg2, pymysql) treat `%` as a placeholder marker even
    # without parameters when SQLAlchemy passes an (empty) parameter list; doubling is
    # what those drivers expect for a literal `%` (e.g. LIKE 'a%').
    if getattr(dialect, "paramstyle", None) in ("pyformat", "format"):
        return sql.replace("%", "%%")
    return sql
