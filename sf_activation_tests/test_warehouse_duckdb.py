"""DuckDB, the embedded default warehouse: a real database file, DuckDB's own Arrow reader."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sf_activation.warehouse import Warehouse, WarehouseError


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        """
        CREATE TABLE accounts AS
        SELECT i AS account_id,
               'Account ' || i AS name,
               (i * 1.25)::DECIMAL(12, 2) AS arr_usd,
               DATE '2024-01-01' + i::INTEGER AS signed_on,
               TIMESTAMPTZ '2024-01-01 12:00:00+00' + to_hours(i::BIGINT) AS updated_at,
               i % 2 = 0 AS is_active,
               i / 4.0 AS score,
               CASE WHEN i % 3 = 0 THEN NULL ELSE 'x' END AS maybe,
               ('{"tier": ' || i || '}')::JSON AS props,
               [i, i + 1] AS tags
        FROM range(1, 1001) t(i)
        """
    )
    con.close()
    return path


def test_reads_rows_and_types_in_full_batches(db_path: Path) -> None:
    with Warehouse.from_url(f"duckdb:///{db_path}") as wh:
        batches = list(wh.iter_batches("SELECT * FROM accounts ORDER BY account_id", 300))

    assert [b.num_rows for b in batches] == [300, 300, 300, 100]
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
    assert pa.types.is_list(types["tags"])

    first = batches[0].to_pylist()[2]
    assert first["account_id"] == 3
    assert first["name"] == "Account 3"
    assert first["arr_usd"] == Decimal("3.75")
    assert first["signed_on"] == dt.date(2024, 1, 4)
    assert first["updated_at"] == dt.datetime(2024, 1, 1, 15, tzinfo=dt.UTC)
    assert first["is_active"] is False
    assert first["score"] == 0.75
    assert first["maybe"] is None
    assert first["props"] == '{"tier": 3}'
    assert first["tags"] == [3, 4]
    assert sum(b.num_rows for b in batches) == 1000


def test_columns_without_running(db_path: Path) -> None:
    with Warehouse.from_url(f"duckdb:///{db_path}") as wh:
        assert wh.columns("select account_id, name as Account_Name from accounts;") == [
            "account_id",
            "Account_Name",
        ]
        # A billion-row cross join would take minutes to run; planning it is instant.
        started = time.monotonic()
        cols = wh.columns("SELECT a.range AS x FROM range(1000000) a, range(1000000) b")
        assert cols == ["x"]
        assert time.monotonic() - started < 2


def test_streams_first_batch_of_huge_result_quickly(db_path: Path) -> None:
    with Warehouse.from_url(f"duckdb:///{db_path}") as wh:
        started = time.monotonic()
        stream = wh.iter_batches("SELECT range AS n FROM range(1000000000)", batch_rows=1000)
        first = next(stream)
        stream.close()
        assert first.column("n").to_pylist()[:3] == [0, 1, 2]
        assert first.num_rows == 1000
        assert time.monotonic() - started < 5


def test_read_only_connection_lets_other_readers_in_and_is_released(db_path: Path) -> None:
    with Warehouse.from_url(f"duckdb:///{db_path}") as wh:
        stream = wh.iter_batches("SELECT * FROM accounts", batch_rows=10)
        next(stream)
        # Another reader (dbt docs, the Dagster UI's process) can open the file meanwhile.
        other = duckdb.connect(str(db_path), read_only=True)
        assert other.execute("SELECT count(*) FROM accounts").fetchone() == (1000,)
        other.close()
        stream.close()
        # Between calls the file is not held: a writer (dbt build) can open it.
        writer = duckdb.connect(str(db_path))
        writer.execute("INSERT INTO accounts (account_id, name) VALUES (5000, 'late')")
        writer.close()
        assert wh.columns("SELECT 1 AS one") == ["one"]
        rows = [
            r
            for b in wh.iter_batches("SELECT name FROM accounts WHERE account_id = 5000")
            for r in b.to_pylist()
        ]
        assert rows == [{"name": "late"}]


def test_empty_result_yields_no_batches_but_has_columns(db_path: Path) -> None:
    with Warehouse.from_url(f"duckdb:///{db_path}") as wh:
        assert list(wh.iter_batches("SELECT * FROM accounts WHERE false")) == []
        assert "account_id" in wh.columns("SELECT * FROM accounts WHERE false")


def test_sql_error_is_one_clear_line(db_path: Path) -> None:
    with Warehouse.from_url(f"duckdb:///{db_path}") as wh, pytest.raises(WarehouseError) as err:
        list(wh.iter_batches("SELECT nope FROM accounts"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"query failed (duckdb:///{db_path}): ")
    assert 'Referenced column "nope" not found' in message


def test_missing_file_and_duplicate_columns(tmp_path: Path, db_path: Path) -> None:
    with pytest.raises(WarehouseError, match=r"cannot open DuckDB database .* does not exist"):
        Warehouse.from_url(f"duckdb:///{tmp_path / 'nope.duckdb'}").columns("SELECT 1")
    with (
        Warehouse.from_url(f"duckdb:///{db_path}") as wh,
        pytest.raises(WarehouseError, match="more than once"),
    ):
        wh.columns("SELECT 1 AS a, 2 AS a")


def test_model_sql_cannot_write_to_the_warehouse(db_path: Path) -> None:
    with (
        Warehouse.from_url(f"duckdb:///{db_path}") as wh,
        pytest.raises(WarehouseError, match="read-only"),
    ):
        list(wh.iter_batches("CREATE TABLE x AS SELECT 1 AS a"))
