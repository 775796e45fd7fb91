"""What every warehouse reader shares: the interface, errors with secrets masked, and
the re-batching that keeps every batch the same size."""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

# Not `make_url`: SQLAlchemy costs 0.3 s to import and a DuckDB URL does not need it.
from sf_activation.warehouse.pandas_probe import restore_for
from sf_activation.warehouse.url import parse_url

if TYPE_CHECKING:
    from types import TracebackType

    from sf_activation.warehouse.dialect import Dialect
    from sf_activation.warehouse.url import WarehouseURL

DEFAULT_BATCH_ROWS = 50_000
# Rows per INSERT statement where a backend has no bulk load (statement size stays small).
LOAD_ROWS_PER_INSERT = 500

# Overrides the BigQuery REST endpoint (a local double or emulator in tests). A plain
# http:// endpoint is never Google's, so it is used with anonymous credentials.
BIGQUERY_ENDPOINT_ENV = "SF_ACTIVATION_BIGQUERY_API_ENDPOINT"

# Query parameters whose values are secrets: masked in messages, scrubbed from errors.
_SECRET_PARAM = re.compile(r"(password|passwd|pwd|secret|token|passcode|credentials_info)", re.I)
_MAX_DETAIL = 600
_SQL_ECHO = re.compile(r"^LINE \d+:")


class WarehouseError(Exception):
    """A warehouse could not be reached or a query failed. The message is one line, safe to log."""


# --------------------------------------------------------------------------- helpers


def normalise_name(name: str) -> str:
    """Lower-case a name that a case-folding warehouse upper-cased.

    Snowflake stores unquoted identifiers in upper case, so `select account_id` comes
    back as `ACCOUNT_ID`. A name with no lower-case letter is lower-cased; a name with a
    lower-case letter must have been quoted on purpose (`"accountId"`) and is kept.
    """
    return name.lower() if name == name.upper() else name


def one_line(text: str) -> str:
    """Collapse a driver's multi-line message (SQL excerpts, caret markers) to one line."""
    lines = [" ".join(ln.split()) for ln in str(text).splitlines()]
    # Drop caret markers and Postgres' `LINE n: <sql excerpt>` echo: the excerpt shows the
    # cursor declaration around the model's SQL rather than the model's own line.
    kept = [ln for ln in lines if ln and set(ln) - {"^", " "} and not _SQL_ECHO.match(ln)]
    joined = " ".join(kept) or "unknown error"
    if len(joined) > _MAX_DETAIL:
        joined = joined[: _MAX_DETAIL - 1] + "…"
    return joined


class _Secrets:
    """The URL as it may be shown, and the secret strings that must never be shown."""

    def __init__(self, url: WarehouseURL) -> None:
        values: list[str] = []
        if url.password:
            values.append(str(url.password))
        masked_query: dict[str, str | tuple[str, ...]] = {}
        for key, value in url.query.items():
            if _SECRET_PARAM.search(key):
                vals = value if isinstance(value, tuple) else (value,)
                values.extend(v for v in vals if v)
                masked_query[key] = "***"
            else:
                masked_query[key] = value
        self.values = [v for v in values if len(v) >= 3]
        self.display = url.set(query=masked_query).render_as_string(hide_password=True)

    def scrub(self, text: str) -> str:
        from urllib.parse import quote, quote_plus

        for value in self.values:
            for form in {value, quote(value, safe=""), quote_plus(value)}:
                text = text.replace(form, "***")
        return text


def strip_sql(sql: str) -> str:
    sql = sql.strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    if not sql:
        raise WarehouseError("the model's SQL is empty")
    return sql


def limit0(sql: str) -> str:
    # Newlines keep a trailing `-- comment` in the model from swallowing the closing paren.
    return f"SELECT * FROM (\n{sql}\n) AS sf_activation_columns LIMIT 0"


def check_names(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise WarehouseError(
                f"the query returns the column {name!r} more than once: give each column "
                "a distinct alias"
            )
        seen.add(name)
    return list(names)


class Rebatcher:
    """Turn a stream of Arrow batches of any size into batches of exactly `rows` rows.

    Also renames columns and holds the schema of the first batch for the whole stream:
    later batches are cast to it (a Snowflake chunk may, say, carry a narrower integer
    type than the one before), so consumers see one schema.
    """

    def __init__(
        self,
        rows: int,
        rename: Callable[[str], str] | None = None,
        widen_ints: bool = False,
    ) -> None:
        self.rows = rows
        self.rename = rename
        self.widen_ints = widen_ints
        self.schema: pa.Schema | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.schema is None:
            names = [self.rename(n) if self.rename else n for n in batch.schema.names]
            fields = []
            for field, name in zip(batch.schema, check_names(names), strict=True):
                typ = field.type
                if self.widen_ints and pa.types.is_integer(typ):
                    typ = pa.int64()
                fields.append(pa.field(name, typ, nullable=True))
            self.schema = pa.schema(fields)
            restore_for(self.schema)  # before any of the stream's values reach Python
        if batch.schema.names != self.schema.names:
            batch = batch.rename_columns(self.schema.names)
        if not batch.schema.equals(self.schema, check_metadata=False):
            arrays = []
            for col, field in zip(batch.columns, self.schema, strict=True):
                if col.type.equals(field.type):
                    arrays.append(col)
                    continue
                try:
                    arrays.append(col.cast(field.type, safe=True))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                    raise WarehouseError(
                        f"column {field.name!r} changed type mid-result ({field.type} then "
                        f"{col.type}) and the later values do not fit: CAST it in the model "
                        f"SQL ({one_line(str(exc))})"
                    ) from exc
            batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        elif batch.schema.metadata or batch.schema != self.schema:
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
        return batch

    def feed(self, batch: pa.RecordBatch | pa.Table) -> Iterator[pa.RecordBatch]:
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        for b in batches:
            if b.num_rows == 0 and self.schema is not None:
                continue
            b = self._conform(b)
            if b.num_rows == 0:
                continue
            self._pending.append(b)
            self._pending_rows += b.num_rows
            while self._pending_rows >= self.rows:
                yield self._take(self.rows)

    def finish(self) -> Iterator[pa.RecordBatch]:
        if self._pending_rows:
            yield self._take(self._pending_rows)

    def _take(self, n: int) -> pa.RecordBatch:
        assert self.schema is not None
        if len(self._pending) == 1 and self._pending[0].num_rows == n:
            out = self._pending.pop()
            self._pending_rows = 0
            return out
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        head = table.slice(0, n).combine_chunks()
        rest = table.slice(n)
        # The remainder stays as zero-copy slices: copying it on every take would make
        # splitting one large chunk (a Snowflake chunk, a DuckDB vector run) quadratic.
        self._pending = [b for b in rest.to_batches() if b.num_rows]
        self._pending_rows = rest.num_rows
        out = head.to_batches()
        return out[0] if out else pa.RecordBatch.from_pylist([], schema=self.schema)


# --------------------------------------------------------------------------- base


class Warehouse(ABC):
    """A readable warehouse. Use as a context manager or call `close()`."""

    def __init__(self, url: WarehouseURL) -> None:
        self._url = url
        self._secrets = _Secrets(url)

    @property
    def display_url(self) -> str:
        """The URL with its password and secret parameters masked."""
        return self._secrets.display

    @staticmethod
    def from_url(url: str) -> Warehouse:
        """A reader for `url` (a SQLAlchemy URL; see docs/warehouses.md)."""
        try:
            parsed = parse_url(url)
        except _url_errors() as exc:
            # The raw text may hold a password: show only its scheme.
            scheme = url.split(":", 1)[0] if ":" in url else "?"
            raise WarehouseError(
                f"cannot parse the warehouse URL (scheme {scheme!r}): expected "
                "dialect[+driver]://user:password@host/database"
            ) from exc
        # The backends import this module: imported here, when one is chosen.
        from sf_activation.warehouse.bigquery_backend import BigQueryWarehouse
        from sf_activation.warehouse.duckdb_backend import DuckDBWarehouse
        from sf_activation.warehouse.snowflake_backend import SnowflakeWarehouse
        from sf_activation.warehouse.sqlalchemy_backend import SQLAlchemyWarehouse

        backend = parsed.get_backend_name()
        if backend == "duckdb":
            return DuckDBWarehouse(parsed)
        if backend == "snowflake":
            return SnowflakeWarehouse(parsed)
        if backend == "bigquery":
            return BigQueryWarehouse(parsed)
        return SQLAlchemyWarehouse(parsed)

    @abstractmethod
    def columns(self, sql: str) -> list[str]:
        """The result's column names, without running the whole query."""

    @abstractmethod
    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """The query's rows, `batch_rows` at a time, all batches with one schema."""

    # ----------------------------------------------------------- writes
    # The warehouse diff engine (`sf_activation.warehouse_diff`) keeps its state in
    # tables of a schema the integration may write; everything else only reads.

    @property
    def dialect(self) -> Dialect | None:
        """The SQL this warehouse speaks for the diff engine (None: it cannot host it)."""
        return None

    def execute(self, sql: str) -> None:
        """Run one statement that returns no rows (DDL, DML)."""
        raise WarehouseError(
            f"{type(self).__name__} cannot run the warehouse diff engine ({self.display_url}); "
            "set diff: local in the model file"
        )

    def ensure_table(
        self, schema: str, name: str, columns: list[tuple[str, str]], suffix: str = ""
    ) -> None:
        """CREATE TABLE IF NOT EXISTS, creating the schema only when the table cannot be
        made: PostgreSQL checks the right to create schemas before it sees that one
        exists, and a role granted only its own schema has no such right."""
        dialect = self.dialect
        if dialect is None:
            self.execute("")  # raises the one-line refusal
            return
        ddl = dialect.create_table(schema, name, columns) + suffix
        try:
            self.execute(ddl)
        except WarehouseError as first:
            try:
                self.execute(dialect.create_schema(schema))
            except WarehouseError:
                raise first from None
            self.execute(ddl)

    def load_rows(self, table: str, rows: pa.Table) -> None:
        """Append `rows` (text columns, in the table's column order) to `table` (quoted,
        qualified). Here: multi-row INSERTs of literals, a few hundred rows a statement;
        backends with a bulk path (DuckDB's Arrow scan, PostgreSQL's COPY) override it."""
        dialect = self.dialect
        if dialect is None:
            self.execute("")  # raises the one-line refusal
            return
        names = ", ".join(dialect.quote(n) for n in rows.column_names)
        columns = [rows.column(i).to_pylist() for i in range(rows.num_columns)]
        for start in range(0, rows.num_rows, LOAD_ROWS_PER_INSERT):
            stop = min(start + LOAD_ROWS_PER_INSERT, rows.num_rows)
            values = ", ".join(
                "(" + ", ".join(_sql_value(dialect, col[i]) for col in columns) + ")"
                for i in range(start, stop)
            )
            self.execute(f"INSERT INTO {table} ({names}) VALUES {values}")

    def close(self) -> None:  # noqa: B027 - readers without resources need nothing
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_url!r})"

    def _error(self, what: str, exc: BaseException | str) -> WarehouseError:
        detail = exc if isinstance(exc, str) else _exception_text(exc)
        return WarehouseError(
            f"{what} ({self.display_url}): {one_line(self._secrets.scrub(detail))}"
        )

    @staticmethod
    def _check_batch_rows(batch_rows: int) -> None:
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise WarehouseError(f"batch_rows must be a positive integer, got {batch_rows!r}")


def _sql_value(dialect: Dialect, value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return dialect.literal(str(value))


def _url_errors() -> tuple[type[Exception], ...]:
    """What `parse_url` raises for a bad URL: ValueError, and SQLAlchemy's ArgumentError
    when it parsed the URL (then it is imported; looked up, not imported, so that
    catching costs nothing for a DuckDB URL)."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return (ValueError,) if sa_exc is None else (ValueError, sa_exc.ArgumentError)


def _exception_text(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's exception and appends the SQL and a docs link; the
    # driver's own message is the useful part.
    orig = getattr(exc, "orig", None)
    if orig is not None:
        exc = orig
    # google.api_core errors: the first structured error is BigQuery's own message; the
    # exception text repeats it with the endpoint, reason and job id around it.
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0].get("message")
        if isinstance(first, str) and first:
            return first
    message = getattr(exc, "message", None)  # google.api_core errors
    text = message if isinstance(message, str) and message else str(exc)
    return text or type(exc).__name__
