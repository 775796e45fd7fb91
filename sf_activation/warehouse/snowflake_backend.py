"""Snowflake: snowflake-connector-python's `fetch_arrow_batches()`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sf_activation.warehouse.base import (
    DEFAULT_BATCH_ROWS,
    Rebatcher,
    Warehouse,
    WarehouseError,
    check_names,
    limit0,
    normalise_name,
    strip_sql,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

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
        self._write_conn: Any = None

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
        cursor = self._execute(limit0(strip_sql(sql)))
        try:
            return check_names([normalise_name(d.name) for d in cursor.description])
        finally:
            cursor.close()

    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        self._check_batch_rows(batch_rows)
        cursor = self._execute(strip_sql(sql))
        # Result chunks can carry the narrowest integer type that fits their values:
        # widen to int64 so every batch has one schema.
        rebatch = Rebatcher(batch_rows, rename=normalise_name, widen_ints=True)
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

    @property
    def dialect(self) -> Any:
        from sf_activation.warehouse.dialect import SNOWFLAKE

        return SNOWFLAKE

    def execute(self, sql: str) -> None:
        # A session of its own: Snowflake's CREATE SCHEMA makes the new schema the
        # session's current one, which would change what the model's bare names mean.
        if self._write_conn is None:
            import snowflake.connector

            try:
                self._write_conn = snowflake.connector.connect(**self._kwargs)
            except Exception as exc:
                raise self._error("cannot connect to Snowflake", exc) from exc
        cursor = self._write_conn.cursor()
        try:
            cursor.execute(sql)
        except Exception as exc:
            raise self._error("statement failed", exc) from exc
        finally:
            cursor.close()

    def close(self) -> None:
        for name in ("_conn", "_write_conn"):
            conn = getattr(self, name)
            if conn is not None:
                setattr(self, name, None)
                # Closing a dead session must not mask the error that killed it.
                with contextlib.suppress(Exception):
                    conn.close()
