"""Read a model's SQL result as a stream of Arrow record batches, from any warehouse.

`Warehouse.from_url(url)` picks a reader by the URL's scheme:

- `duckdb:///path.duckdb` — DuckDB's own Arrow reader, on a read-only connection opened
  per call (so a running dbt or Dagster UI can keep using the file between calls);
- `snowflake://…` — snowflake-connector-python's `fetch_arrow_batches()` (result chunks
  arrive as Arrow, no per-row Python);
- `bigquery://project/dataset` — google-cloud-bigquery's `to_arrow_iterable()` page by page;
- anything else SQLAlchemy speaks (Postgres first) — a server-side cursor read
  `batch_rows` rows at a time and converted to Arrow per batch with a schema that stays
  the same for every batch.

Every reader yields batches of exactly `batch_rows` rows (the last one shorter, none
empty), so memory is bounded by about one batch whatever the result size. Column names
are the query's, except that Snowflake's upper-cased unquoted identifiers come back
lower-cased (see `normalise_name`). Every failure raises `WarehouseError` with a one-line
message in which the URL's password and other secrets are masked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_BATCH_ROWS = 50_000

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


def _one_line(text: str) -> str:
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

    def __init__(self, url: URL) -> None:
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


def _strip_sql(sql: str) -> str:
    sql = sql.strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    if not sql:
        raise WarehouseError("the model's SQL is empty")
    return sql


def _limit0(sql: str) -> str:
    # Newlines keep a trailing `-- comment` in the model from swallowing the closing paren.
    return f"SELECT * FROM (\n{sql}\n) AS sf_activation_columns LIMIT 0"


def _check_names(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise WarehouseError(
                f"the query returns the column {name!r} more than once: give each column "
                "a distinct alias"
            )
        seen.add(name)
    return list(names)


class _Rebatcher:
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
            for field, name in zip(batch.schema, _check_names(names), strict=True):
                typ = field.type
                if self.widen_ints and pa.types.is_integer(typ):
                    typ = pa.int64()
                fields.append(pa.field(name, typ, nullable=True))
            self.schema = pa.schema(fields)
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
                        f"SQL ({_one_line(str(exc))})"
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

    def __init__(self, url: URL) -> None:
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
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:
            # The raw text may hold a password: show only its scheme.
            scheme = url.split(":", 1)[0] if ":" in url else "?"
            raise WarehouseError(
                f"cannot parse the warehouse URL (scheme {scheme!r}): expected "
                "dialect[+driver]://user:password@host/database"
            ) from exc
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
            f"{what} ({self.display_url}): {_one_line(self._secrets.scrub(detail))}"
        )

    @staticmethod
    def _check_batch_rows(batch_rows: int) -> None:
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise WarehouseError(f"batch_rows must be a positive integer, got {batch_rows!r}")


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


# --------------------------------------------------------------------------- DuckDB


class DuckDBWarehouse(Warehouse):
    """`duckdb:///relative/path.duckdb`, `duckdb:////absolute/path.duckdb`, `duckdb:///:memory:`.

    A connection is opened per call and closed after it, read-only by default
    (`?read_only=false` to open read-write), because DuckDB lets one process write a file
    or several read it: holding it open would lock out dbt between runs.
    """

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        self.path = url.database or ":memory:"
        flag = str(url.query.get("read_only", "true")).lower()
        self.read_only = flag not in ("false", "0", "no") and self.path != ":memory:"
        unknown = set(url.query) - {"read_only"}
        if unknown:
            raise WarehouseError(
                f"unknown DuckDB URL parameter(s) {sorted(unknown)} ({self.display_url}); "
                "only read_only is understood"
            )

    def _connect(self) -> Any:
        import duckdb

        if self.path != ":memory:" and self.read_only and not Path(self.path).exists():
            raise self._error("cannot open DuckDB database", f"file {self.path} does not exist")
        try:
            return duckdb.connect(self.path, read_only=self.read_only)
        except duckdb.Error as exc:
            raise self._error("cannot open DuckDB database", exc) from exc

    def _relation(self, con: Any, sql: str) -> Any:
        import duckdb

        try:
            rel = con.sql(_strip_sql(sql))
        except duckdb.Error as exc:
            raise self._error("query failed", exc) from exc
        if rel is None:
            raise self._error("query failed", "the SQL is a statement that returns no rows")
        return rel

    def columns(self, sql: str) -> list[str]:
        con = self._connect()
        try:
            # A relation is planned, not run: its columns cost nothing.
            return _check_names(list(self._relation(con, sql).columns))
        finally:
            con.close()

    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        import duckdb

        self._check_batch_rows(batch_rows)
        con = self._connect()
        try:
            rel = self._relation(con, sql)
            rebatch = _Rebatcher(batch_rows)
            try:
                reader = rel.to_arrow_reader(batch_rows)
                for batch in reader:
                    yield from rebatch.feed(batch)
            except duckdb.Error as exc:
                raise self._error("query failed", exc) from exc
            yield from rebatch.finish()
        finally:
            con.close()


# --------------------------------------------------------------------------- Snowflake

_SNOWFLAKE_INT_PARAMS = {
    "port",
    "login_timeout",
    "network_timeout",
    "socket_timeout",
    "client_prefetch_threads",
    "client_session_keep_alive_heartbeat_frequency",
}


def snowflake_connect_kwargs(url: URL) -> dict[str, Any]:
    """Connector keyword arguments from a snowflake-sqlalchemy style URL.

    `snowflake://user:password@account/database/schema?warehouse=W&role=R` — every query
    parameter is passed to `snowflake.connector.connect` (so `private_key_file`,
    `private_key_file_pwd`, `authenticator`, `host`, `port`, `protocol` work too);
    numbers and true/false become ints and booleans.
    """
    kwargs: dict[str, Any] = {}
    if url.username:
        kwargs["user"] = url.username
    if url.password:
        kwargs["password"] = url.password
    account = url.host or ""
    # snowflake-sqlalchemy accepts the full host name as the account part.
    suffix = ".snowflakecomputing.com"
    if account.endswith(suffix):
        kwargs["host"] = account
        account = account[: -len(suffix)]
    if account:
        kwargs["account"] = account
    if url.port:
        kwargs["port"] = url.port
    if url.database:
        parts = [p for p in url.database.split("/") if p]
        if len(parts) > 2:
            raise WarehouseError(
                f"Snowflake URL path must be /database or /database/schema, got /{url.database}"
            )
        if parts:
            kwargs["database"] = parts[0]
        if len(parts) == 2:
            kwargs["schema"] = parts[1]
    for key, value in url.query.items():
        if isinstance(value, tuple):
            value = value[-1]
        if key in _SNOWFLAKE_INT_PARAMS and value.isdigit():
            kwargs[key] = int(value)
        elif value.lower() in ("true", "false"):
            kwargs[key] = value.lower() == "true"
        else:
            kwargs[key] = value
    kwargs.setdefault("application", "sf_activation")
    return kwargs


class SnowflakeWarehouse(Warehouse):
    """Snowflake through the connector's Arrow result chunks (`fetch_arrow_batches`)."""

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        self._kwargs = snowflake_connect_kwargs(url)
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                import snowflake.connector
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise WarehouseError(
                    "snowflake:// needs snowflake-connector-python: pip install "
                    "'sf_activation[snowflake]'"
                ) from exc
            try:
                self._conn = snowflake.connector.connect(**self._kwargs)
            except Exception as exc:
                raise self._error("cannot connect to Snowflake", exc) from exc
        return self._conn

    def _execute(self, sql: str) -> Any:
        cursor = self._connection().cursor()
        try:
            cursor.execute(sql)
        except Exception as exc:
            cursor.close()
            raise self._error("query failed", exc) from exc
        return cursor

    def columns(self, sql: str) -> list[str]:
        cursor = self._execute(_limit0(_strip_sql(sql)))
        try:
            return _check_names([normalise_name(d.name) for d in cursor.description])
        finally:
            cursor.close()

    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        self._check_batch_rows(batch_rows)
        cursor = self._execute(_strip_sql(sql))
        # Result chunks can carry the narrowest integer type that fits their values:
        # widen to int64 so every batch has one schema.
        rebatch = _Rebatcher(batch_rows, rename=normalise_name, widen_ints=True)
        try:
            try:
                for table in cursor.fetch_arrow_batches():
                    yield from rebatch.feed(table)
            except WarehouseError:
                raise
            except Exception as exc:
                raise self._error("reading Snowflake results failed", exc) from exc
            yield from rebatch.finish()
        finally:
            cursor.close()

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Closing a dead session must not mask the error that killed it.
            with contextlib.suppress(Exception):
                conn.close()


# --------------------------------------------------------------------------- BigQuery


class BigQueryWarehouse(Warehouse):
    """`bigquery://project[/dataset][?location=EU&credentials_path=/key.json]`.

    Credentials: `credentials_path` (a service-account key file), else Application
    Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server).
    The dataset becomes the query's default dataset, so models can name bare tables.
    """

    _PARAMS = {"location", "credentials_path", "billing_project", "maximum_bytes_billed"}

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        if not url.host:
            raise WarehouseError(
                f"BigQuery URL needs a project: bigquery://project/dataset ({self.display_url})"
            )
        unknown = set(url.query) - self._PARAMS
        if unknown:
            raise WarehouseError(
                f"unknown BigQuery URL parameter(s) {sorted(unknown)} ({self.display_url}); "
                f"understood: {sorted(self._PARAMS)}"
            )
        self.project = url.host
        self.dataset = (url.database or "").strip("/") or None
        self._client: Any = None

    def _param(self, name: str) -> str | None:
        value = self._url.query.get(name)
        return value[-1] if isinstance(value, tuple) else value

    def _bq(self) -> Any:
        try:
            from google.cloud import bigquery
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise WarehouseError(
                "bigquery:// needs google-cloud-bigquery: pip install 'sf_activation[bigquery]'"
            ) from exc
        return bigquery

    def _client_(self) -> Any:
        if self._client is None:
            bigquery = self._bq()
            endpoint = os.environ.get(BIGQUERY_ENDPOINT_ENV) or None
            options = {"api_endpoint": endpoint} if endpoint else None
            try:
                credentials = None
                key_file = self._param("credentials_path")
                if key_file:
                    from google.oauth2 import service_account

                    credentials = service_account.Credentials.from_service_account_file(key_file)
                elif endpoint and endpoint.startswith("http://"):
                    from google.auth.credentials import AnonymousCredentials

                    credentials = AnonymousCredentials()
                self._client = bigquery.Client(
                    project=self._param("billing_project") or self.project,
                    credentials=credentials,
                    location=self._param("location"),
                    client_options=options,
                )
            except Exception as exc:
                raise self._error("cannot create the BigQuery client", exc) from exc
        return self._client

    def _job_config(self, **kwargs: Any) -> Any:
        bigquery = self._bq()
        config = bigquery.QueryJobConfig(**kwargs)
        if self.dataset:
            config.default_dataset = f"{self.project}.{self.dataset}"
        limit = self._param("maximum_bytes_billed")
        if limit:
            config.maximum_bytes_billed = int(limit)
        return config

    def columns(self, sql: str) -> list[str]:
        client = self._client_()
        try:
            # A dry run plans the query and returns its schema; it reads nothing and is free.
            job = client.query(
                _strip_sql(sql), job_config=self._job_config(dry_run=True, use_query_cache=False)
            )
            if job.error_result:
                raise self._error(
                    "query failed", job.error_result.get("message", str(job.error_result))
                )
            schema = job.schema
        except WarehouseError:
            raise
        except Exception as exc:
            raise self._error("query failed", exc) from exc
        return _check_names([field.name for field in schema or []])

    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        self._check_batch_rows(batch_rows)
        client = self._client_()
        rebatch = _Rebatcher(batch_rows)
        try:
            job = client.query(_strip_sql(sql), job_config=self._job_config())
            rows = job.result(page_size=batch_rows)
            # bqstorage_client=None keeps to the REST API's pages (no Storage Read API
            # client, which needs its own permissions and gRPC egress).
            for batch in rows.to_arrow_iterable(bqstorage_client=None):
                yield from rebatch.feed(batch)
        except WarehouseError:
            raise
        except Exception as exc:
            raise self._error("query failed", exc) from exc
        yield from rebatch.finish()

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


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
                f"in the model SQL ({_one_line(str(exc))})"
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
        return _check_names(names)

    def _connect(self) -> Any:
        try:
            return self._engine.connect()
        except Exception as exc:
            raise self._error("cannot connect to the warehouse", exc) from exc

    def columns(self, sql: str) -> list[str]:
        wrapped = _escape_percent(_limit0(_strip_sql(sql)), self._engine.dialect)
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
        sql = _strip_sql(sql)
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

    def close(self) -> None:
        self._engine.dispose()


def _escape_percent(sql: str, dialect: Any) -> str:
    # pyformat/format drivers (psycopg2, pymysql) treat `%` as a placeholder marker even
    # without parameters when SQLAlchemy passes an (empty) parameter list; doubling is
    # what those drivers expect for a literal `%` (e.g. LIKE 'a%').
    if getattr(dialect, "paramstyle", None) in ("pyformat", "format"):
        return sql.replace("%", "%%")
    return sql
