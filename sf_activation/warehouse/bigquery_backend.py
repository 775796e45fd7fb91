"""BigQuery: google-cloud-bigquery's `to_arrow_iterable()`, page by page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sf_activation.warehouse.base import (
    BIGQUERY_ENDPOINT_ENV,
    DEFAULT_BATCH_ROWS,
    Rebatcher,
    Warehouse,
    WarehouseError,
    check_names,
    strip_sql,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

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
                strip_sql(sql), job_config=self._job_config(dry_run=True, use_query_cache=False)
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
        return check_names([field.name for field in schema or []])

    def iter_batches(
        self, sql: str, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        self._check_batch_rows(batch_rows)
        client = self._client_()
        rebatch = Rebatcher(batch_rows)
        try:
            job = client.query(strip_sql(sql), job_config=self._job_config())
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

    @property
    def dialect(self) -> Any:
        from sf_activation.warehouse.dialect import BIGQUERY

        return BIGQUERY

    def execute(self, sql: str) -> None:
        try:
            self._client_().query(sql, job_config=self._job_config()).result()
        except Exception as exc:
            raise self._error("statement failed", exc) from exc

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()
