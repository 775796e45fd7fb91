"""The generic SQLAlchemy path with a driver that reports no column types (SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from sf_activation.warehouse import SQLAlchemyWarehouse, Warehouse, WarehouseError


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "wh.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER, amount REAL, note TEXT, late INTEGER)")
    con.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        [(i, i * 0.5, f"n{i}", i * 10 if i > 4 else None) for i in range(1, 11)],
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def test_types_from_first_batch_and_stable_schema(sqlite_url: str) -> None:
    with Warehouse.from_url(sqlite_url) as wh:
        assert isinstance(wh, SQLAlchemyWarehouse)
        assert wh.columns("SELECT id, note FROM t") == ["id", "note"]
        batches = list(wh.iter_batches("SELECT * FROM t ORDER BY id", batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert all(b.schema == batches[0].schema for b in batches)
    assert batches[0].schema.field("id").type == pa.int64()
    assert batches[0].schema.field("amount").type == pa.float64()
    # All NULL in the first batch and no type from the driver: text, later values as text.
    assert batches[0].schema.field("late").type == pa.string()
    assert batches[1].column("late").to_pylist() == ["50", "60", "70", "80"]


def test_value_that_does_not_fit_the_first_batch_type_is_named(sqlite_url: str) -> None:
    sql = "SELECT CASE WHEN id < 5 THEN id ELSE 'text' END AS mixed FROM t ORDER BY id"
    with Warehouse.from_url(sqlite_url) as wh, pytest.raises(WarehouseError) as err:
        list(wh.iter_batches(sql, batch_rows=4))
    assert "column 'mixed'" in str(err.value) and "CAST" in str(err.value)


def test_unknown_dialect_is_a_clear_error() -> None:
    with pytest.raises(WarehouseError) as err:
        Warehouse.from_url("nosuchdb://user:hunter22@host/db")
    message = str(err.value)
    assert message.startswith("cannot use this warehouse URL (nosuchdb://user:***@host/db)")
    assert "hunter22" not in message
    with pytest.raises(WarehouseError, match="cannot parse the warehouse URL"):
        Warehouse.from_url("not a url")
