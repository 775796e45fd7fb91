"""Snowflake: the real snowflake-connector-python over HTTP against fakesnow's server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest
import snowflake.connector as snowflake_connector

from sf_activation.warehouse import Warehouse, WarehouseError, snowflake_connect_kwargs
from sf_activation_tests.support.postgres import free_port
from sf_activation_tests.support.snowflake import fake_snowflake_server


@pytest.fixture(scope="module")
def snowflake_url() -> Iterator[str]:
    with fake_snowflake_server() as kw:
        conn = snowflake_connector.connect(**kw)
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS analytics")
        cur.execute("CREATE SCHEMA IF NOT EXISTS analytics.marts")
        cur.execute("USE SCHEMA analytics.marts")
        cur.execute(
            """
            CREATE TABLE accounts (account_id INTEGER, name VARCHAR, arr_usd NUMBER(12, 2),
                                   signed_on DATE, updated_at TIMESTAMP_TZ, is_active BOOLEAN,
                                   score FLOAT, props VARIANT)
            """
        )
        cur.execute(
            """
            INSERT INTO accounts
            SELECT seq4() + 1, 'Account ' || (seq4() + 1), (seq4() + 1) * 1.25,
                   '2024-01-02', '2024-01-02 03:04:05+01:00', true, 0.5,
                   PARSE_JSON('{"tier": 1}')
            FROM TABLE(GENERATOR(ROWCOUNT => 2500))
            """
        )
        conn.close()
        # The fakesnow server speaks plain HTTP on a loopback port: host, port and
        # protocol go through as connector parameters in the URL's query string.
        yield (
            f"snowflake://{kw['user']}:{kw['password']}@{kw['account']}/analytics/marts"
            f"?host={kw['host']}&port={kw['port']}&protocol={kw['protocol']}&network_timeout=5"
            "&warehouse=transforming&role=reporter"
        )


def test_url_becomes_connector_arguments() -> None:
    from sqlalchemy.engine import make_url

    kwargs = snowflake_connect_kwargs(
        make_url(
            "snowflake://svc:p%40ss@acme-xy12345/analytics/marts?warehouse=WH&role=R"
            "&private_key_file=/keys/rsa.p8&login_timeout=30&ocsp_fail_open=false"
        )
    )
    assert kwargs == {
        "user": "svc",
        "password": "p@ss",
        "account": "acme-xy12345",
        "database": "analytics",
        "schema": "marts",
        "warehouse": "WH",
        "role": "R",
        "private_key_file": "/keys/rsa.p8",
        "login_timeout": 30,
        "ocsp_fail_open": False,
        "application": "sf_activation",
    }
    full_host = snowflake_connect_kwargs(
        make_url("snowflake://u@acme.eu-west-1.snowflakecomputing.com/db")
    )
    assert full_host["account"] == "acme.eu-west-1"
    assert full_host["host"] == "acme.eu-west-1.snowflakecomputing.com"


def test_rows_types_and_lower_cased_names(snowflake_url: str) -> None:
    sql = 'SELECT account_id, name AS "DisplayName", arr_usd, signed_on, updated_at, is_active, score, props FROM accounts ORDER BY account_id'
    with Warehouse.from_url(snowflake_url) as wh:
        assert wh.columns(sql) == [
            "account_id",
            "DisplayName",
            "arr_usd",
            "signed_on",
            "updated_at",
            "is_active",
            "score",
            "props",
        ]
        batches = list(wh.iter_batches(sql, batch_rows=1000))

    assert [b.num_rows for b in batches] == [1000, 1000, 500]
    schema = batches[0].schema
    assert all(b.schema == schema for b in batches)
    types = {f.name: f.type for f in schema}
    assert types["account_id"] == pa.int64()
    assert types["arr_usd"] == pa.decimal128(12, 2)
    assert types["signed_on"] == pa.date32()
    assert pa.types.is_timestamp(types["updated_at"]) and types["updated_at"].tz is not None
    assert types["is_active"] == pa.bool_()
    assert types["score"] == pa.float64()
    assert types["props"] == pa.string()

    rows = [r for b in batches for r in b.to_pylist()]
    assert [r["account_id"] for r in rows] == list(range(1, 2501))
    assert rows[2]["DisplayName"] == "Account 3"
    assert rows[2]["arr_usd"] == Decimal("3.75")
    assert rows[2]["signed_on"] == dt.date(2024, 1, 2)
    assert rows[2]["updated_at"] == dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=dt.UTC)
    assert rows[2]["is_active"] is True and rows[2]["score"] == 0.5
    assert rows[2]["props"].replace(" ", "").replace("\n", "") == '{"tier":1}'


def test_empty_result_and_sql_error(snowflake_url: str) -> None:
    with Warehouse.from_url(snowflake_url) as wh:
        assert list(wh.iter_batches("SELECT * FROM accounts WHERE 1 = 0")) == []
        with pytest.raises(WarehouseError) as err:
            list(wh.iter_batches("SELECT nope FROM accounts"))
    message = str(err.value)
    assert message.startswith("query failed (snowflake://fake:***@fakesnow/analytics/marts?")
    assert '"NOPE" not found' in message
    assert "\n" not in message and ":snow@" not in message


def test_unreachable_account_masks_the_password() -> None:
    url = (
        f"snowflake://svc:Sup3r-Secret@acme/analytics?host=127.0.0.1&port={free_port()}"
        "&protocol=http&login_timeout=2&network_timeout=2"
    )
    with pytest.raises(WarehouseError) as err:
        Warehouse.from_url(url).columns("SELECT 1")
    message = str(err.value)
    assert message.startswith("cannot connect to Snowflake (snowflake://svc:***@acme/analytics?")
    assert "Sup3r-Secret" not in message and "\n" not in message
