"""Postgres through SQLAlchemy + psycopg2 against a real server started for the session."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from sf_activation.warehouse import Warehouse, WarehouseError
from sf_activation_tests.support.postgres import PG_PASSWORD, free_port
from sf_activation_tests.support.postgres import postgres_url as postgres_url  # fixture


@pytest.fixture(scope="module")
def pg(postgres_url: str) -> Iterator[str]:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS accounts")
        conn.exec_driver_sql(
            """
            CREATE TABLE accounts AS
            SELECT g AS account_id,
                   'Account ' || g AS name,
                   (g * 1.25)::numeric(12, 2) AS arr_usd,
                   g / 3.0 AS ratio,
                   DATE '2024-01-01' + g AS signed_on,
                   TIMESTAMP '2024-01-01 12:00:00' + g * INTERVAL '1 hour' AS created_local,
                   TIMESTAMPTZ '2024-01-01 12:00:00+02' + g * INTERVAL '1 hour' AS updated_at,
                   mod(g, 2) = 0 AS is_active,
                   g / 4.0::float8 AS score,
                   -- NULL for the first 150 rows: the first batches see only NULLs.
                   CASE WHEN g > 150 THEN g * 10 END AS late_int,
                   CASE WHEN g > 150 THEN 'late' END AS late_text,
                   jsonb_build_object('tier', mod(g, 3)) AS props,
                   ARRAY[g, g + 1] AS tags,
                   ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid AS uid,
                   g::int8 * 10000000000 AS big
            FROM generate_series(1, 1000) AS g
            """
        )
    engine.dispose()
    yield postgres_url


def test_types_come_through_faithfully_across_batches(pg: str) -> None:
    with Warehouse.from_url(pg) as wh:
        batches = list(wh.iter_batches("SELECT * FROM accounts ORDER BY account_id", 100))

    assert [b.num_rows for b in batches] == [100] * 10
    schema = batches[0].schema
    assert all(b.schema == schema for b in batches)
    types = {f.name: f.type for f in schema}
    assert types == {
        "account_id": pa.int32(),
        "name": pa.string(),
        "arr_usd": pa.decimal128(12, 2),
        "ratio": pa.decimal128(38, 20),
        "signed_on": pa.date32(),
        "created_local": pa.timestamp("us"),
        "updated_at": pa.timestamp("us", tz="UTC"),
        "is_active": pa.bool_(),
        "score": pa.float64(),
        "late_int": pa.int32(),  # typed from the server although the first batch is all NULL
        "late_text": pa.string(),
        "props": pa.string(),
        "tags": pa.list_(pa.int32()),
        "uid": pa.string(),
        "big": pa.int64(),
    }
    rows = [r for b in batches for r in b.to_pylist()]
    assert len(rows) == 1000
    r3 = rows[2]
    assert r3["account_id"] == 3
    assert r3["arr_usd"] == Decimal("3.75")
    assert r3["ratio"] == Decimal("1.00000000000000000000")
    assert r3["signed_on"] == dt.date(2024, 1, 4)
    assert r3["created_local"] == dt.datetime(2024, 1, 1, 15)
    assert r3["updated_at"] == dt.datetime(2024, 1, 1, 13, tzinfo=dt.UTC)
    assert r3["is_active"] is False
    assert r3["score"] == 0.75
    assert r3["late_int"] is None and r3["late_text"] is None
    assert r3["props"] == '{"tier": 0}'
    assert r3["tags"] == [3, 4]
    assert r3["uid"] == "00000000-0000-0000-0000-000000000003"
    assert r3["big"] == 30000000000
    assert rows[199]["late_int"] == 2000 and rows[199]["late_text"] == "late"


def test_columns_and_literal_percent_and_colons(pg: str) -> None:
    with Warehouse.from_url(pg) as wh:
        assert wh.columns('select account_id, name AS "AccountName" from accounts -- note') == [
            "account_id",
            "AccountName",
        ]
        rows = [
            r
            for b in wh.iter_batches("SELECT '100%' AS pct, 'a:b' AS c, ':x' AS d, 1::int AS n;")
            for r in b.to_pylist()
        ]
        assert rows == [{"pct": "100%", "c": "a:b", "d": ":x", "n": 1}]
        # columns() plans the query: a huge cross join answers at once.
        started = time.monotonic()
        huge = "SELECT a AS x FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b"
        assert wh.columns(huge) == ["x"]
        assert time.monotonic() - started < 5


def test_streams_with_a_server_side_cursor(pg: str) -> None:
    # 100 million rows: a client-side cursor would pull them all before the first batch
    # (minutes, gigabytes); a server-side cursor produces only what is fetched.
    sql = "SELECT a * 100000 + b AS n FROM generate_series(0, 999) a, generate_series(1, 100000) b"
    with Warehouse.from_url(pg) as wh:
        started = time.monotonic()
        stream = wh.iter_batches(sql, 1000)
        first = next(stream)
        second = next(stream)
        stream.close()
        values = first.column("n").to_pylist() + second.column("n").to_pylist()
        assert len(set(values)) == 2000 and all(1 <= v <= 100_000_000 for v in values)
        assert time.monotonic() - started < 5
        # The connection was released: the warehouse is usable again at once.
        assert wh.columns("SELECT 1 AS one") == ["one"]


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_is_bounded_by_one_batch(pg: str) -> None:
    # ~100 MB of result: a client-side cursor grows the process by about that much
    # (measured: +105 MB); streamed 5000 rows at a time it stays near one batch (+15 MB).
    # RSS, not tracemalloc: libpq buffers a client-side result in C memory.
    sql = "SELECT g AS id, repeat('x', 200) AS payload FROM generate_series(1, 400000) g"
    with Warehouse.from_url(pg) as wh:
        list(wh.iter_batches("SELECT 1 AS warm_up"))
        base = peak = _rss_bytes()
        total = max_rows = 0
        for batch in wh.iter_batches(sql, batch_rows=5000):
            total += batch.num_rows
            max_rows = max(max_rows, batch.num_rows)
            peak = max(peak, _rss_bytes())
    assert total == 400_000
    assert max_rows == 5000
    assert peak - base < 50_000_000, f"process grew by {(peak - base) / 1e6:.0f} MB"


def test_all_null_first_batch_keeps_the_server_type(pg: str) -> None:
    # The driver reports the column type up front, so NULL-only first batches are typed.
    with Warehouse.from_url(pg) as wh:
        sql = "SELECT account_id, CASE WHEN account_id > 5 THEN account_id * 2 END AS x FROM accounts WHERE account_id <= 10 ORDER BY 1"
        batches = list(wh.iter_batches(sql, batch_rows=5))
    assert batches[0].schema.field("x").type == pa.int32()
    assert batches[0].column("x").null_count == 5
    assert batches[1].column("x").to_pylist() == [12, 14, 16, 18, 20]


def test_unconstrained_numeric_with_more_decimals_later_fails_loudly(pg: str) -> None:
    sql = "SELECT x FROM (VALUES (1.5::numeric), (2.5), (3.14159)) v(x)"
    with Warehouse.from_url(pg) as wh, pytest.raises(WarehouseError) as err:
        list(wh.iter_batches(sql, batch_rows=2))
    message = str(err.value)
    assert "column 'x'" in message and "CAST" in message and "\n" not in message


def test_sql_error_message(pg: str) -> None:
    with Warehouse.from_url(pg) as wh:
        with pytest.raises(WarehouseError) as err:
            list(wh.iter_batches("SELECT nope FROM accounts"))
        message = str(err.value)
        assert message.startswith("query failed (postgresql+psycopg2://sfa:***@127.0.0.1:")
        assert 'column "nope" does not exist' in message
        assert "\n" not in message and PG_PASSWORD not in message
        with pytest.raises(WarehouseError, match='relation "missing" does not exist'):
            wh.columns("SELECT * FROM missing")


def test_wrong_password_and_unreachable_server_mask_the_password(pg: str) -> None:
    wrong = pg.replace(PG_PASSWORD, "Wr0ng-secret")
    with pytest.raises(WarehouseError) as err:
        Warehouse.from_url(wrong).columns("SELECT 1")
    message = str(err.value)
    assert message.startswith("cannot connect to the warehouse (postgresql+psycopg2://sfa:***@")
    assert "password authentication failed" in message
    assert "Wr0ng-secret" not in message

    port = free_port()
    url = f"postgresql+psycopg2://sfa:{PG_PASSWORD}@127.0.0.1:{port}/warehouse"
    with pytest.raises(WarehouseError) as err:
        list(Warehouse.from_url(url).iter_batches("SELECT 1"))
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message
    assert PG_PASSWORD not in message and "\n" not in message
    assert repr(Warehouse.from_url(url)).count("***") == 1
