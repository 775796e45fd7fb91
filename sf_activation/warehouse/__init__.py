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

from sf_activation.warehouse.base import (
    BIGQUERY_ENDPOINT_ENV,
    DEFAULT_BATCH_ROWS,
    Warehouse,
    WarehouseError,
    normalise_name,
)
from sf_activation.warehouse.bigquery_backend import BigQueryWarehouse
from sf_activation.warehouse.duckdb_backend import DuckDBWarehouse
from sf_activation.warehouse.snowflake_backend import SnowflakeWarehouse, snowflake_connect_kwargs
from sf_activation.warehouse.sqlalchemy_backend import SQLAlchemyWarehouse

__all__ = [
    "BIGQUERY_ENDPOINT_ENV",
    "DEFAULT_BATCH_ROWS",
    "BigQueryWarehouse",
    "DuckDBWarehouse",
    "SQLAlchemyWarehouse",
    "SnowflakeWarehouse",
    "Warehouse",
    "WarehouseError",
    "normalise_name",
    "snowflake_connect_kwargs",
]
