"""BigQuery: the real google-cloud-bigquery client over HTTP against a local REST double."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest

from sf_activation.warehouse import BIGQUERY_ENDPOINT_ENV, Warehouse, WarehouseError
from sf_activation_tests.support.bigquery_double import BigQueryDouble, bigquery_double


@pytest.fixture(scope="module")
def double() -> Iterator[BigQueryDouble]:
    # Pages of at most 300 rows, whatever the client asks: a result spans many pages.
    with bigquery_double(max_page_rows=300) as d:
        d.execute(
            """
            CREATE SCHEMA sales;
            CREATE TABLE sales.accounts AS
            SELECT i AS account_id,
                   'Account ' || i AS name,
                   (i * 1.25)::DECIMAL(12, 2) AS arr_usd,
                   DATE '2024-01-01' + i::INTEGER AS signed_on,
                   TIMESTAMPTZ '2024-01-01 12:00:00+00' + to_hours(i::BIGINT) AS updated_at,
                   TIMESTAMP '2024-01-01 08:30:00' AS local_time,
                   i % 2 = 0 AS is_active,
                   i / 4.0 AS score,
                   CASE WHEN i % 3 = 0 THEN NULL ELSE 'x' END AS maybe,
                   ('{"tier": ' || (i % 3) || '}')::JSON AS props,
                   [i, i + 1] AS tags
            FROM range(1, 1001) t(i)
            """
        )
        yield d


@pytest.fixture
def warehouse(double: BigQueryDouble, monkeypatch: pytest.MonkeyPatch) -> Iterator[Warehouse]:
    monkeypatch.setenv(BIGQUERY_ENDPOINT_ENV, double.url)
    with Warehouse.from_url("bigquery://acme-analytics/sales") as wh:
        yield wh


def test_pages_are_streamed_into_full_batches_with_types(
    warehouse: Warehouse, double: BigQueryDouble
) -> None:
    before = len(double.requests)
    batches = list(warehouse.iter_batches("SELECT * FROM accounts ORDER BY account_id", 400))

    # 1000 rows in pages of 300 came back as batches of 400, 400, 200.
    assert [b.num_rows for b in batches] == [400, 400, 200]
    pages = [r for r in double.requests[before:] if "/queries/" in r]
    assert len(pages) >= 4
    assert double.unhandled == []

    schema = batches[0].schema
    assert all(b.schema == schema for b in batches)
    types = {f.name: f.type for f in schema}
    assert types == {
        "account_id": pa.int64(),
        "name": pa.string(),
        "arr_usd": pa.decimal128(38, 9),  # BigQuery NUMERIC
        "signed_on": pa.date32(),
        "updated_at": pa.timestamp("us", tz="UTC"),
        "local_time": pa.timestamp("us"),  # DATETIME
        "is_active": pa.bool_(),
        "score": pa.float64(),
        "maybe": pa.string(),
        "props": pa.string(),
        "tags": pa.list_(pa.int64()),
    }
    rows = [r for b in batches for r in b.to_pylist()]
    assert [r["account_id"] for r in rows] == list(range(1, 1001))
    r3 = rows[2]
    assert r3["name"] == "Account 3"
    assert r3["arr_usd"] == Decimal("3.75")
    assert r3["signed_on"] == dt.date(2024, 1, 4)
    assert r3["updated_at"] == dt.datetime(2024, 1, 1, 15, tzinfo=dt.UTC)
    assert r3["local_time"] == dt.datetime(2024, 1, 1, 8, 30)
    assert r3["is_active"] is False and r3["score"] == 0.75
    assert r3["maybe"] is None
    assert r3["props"] == '{"tier": 0}'
    assert r3["tags"] == [3, 4]


def test_columns_come_from_a_dry_run(warehouse: Warehouse, double: BigQueryDouble) -> None:
    jobs_before = len(double.jobs)
    assert warehouse.columns("SELECT account_id, name AS AccountName FROM accounts") == [
        "account_id",
        "AccountName",
    ]
    # A dry run creates no job and reads no rows.
    assert len(double.jobs) == jobs_before


def test_empty_result(warehouse: Warehouse) -> None:
    assert list(warehouse.iter_batches("SELECT * FROM accounts WHERE account_id < 0")) == []


def test_sql_errors_are_one_line(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError) as err:
        list(warehouse.iter_batches("SELECT nope FROM accounts"))
    assert str(err.value) == (
        "query failed (bigquery://acme-analytics/sales): "
        'Binder Error: Referenced column "nope" not found in FROM clause!'
    )
    with pytest.raises(WarehouseError, match='^query failed .*"nope" not found'):
        warehouse.columns("SELECT nope FROM accounts")


def test_url_parameters_are_checked_and_secrets_masked() -> None:
    with pytest.raises(WarehouseError, match="needs a project"):
        Warehouse.from_url("bigquery://")
    with pytest.raises(WarehouseError, match=r"unknown BigQuery URL parameter\(s\) \['colour'\]"):
        Warehouse.from_url("bigquery://p/d?colour=blue")
    wh = Warehouse.from_url("bigquery://p/d?location=EU&credentials_path=/keys/sa.json")
    assert wh.display_url == "bigquery://p/d?credentials_path=%2Fkeys%2Fsa.json&location=EU"
