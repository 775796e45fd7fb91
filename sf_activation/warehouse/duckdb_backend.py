"""DuckDB: its own Arrow reader on a read-only connection opened per call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sf_activation.warehouse.base import (
    DEFAULT_BATCH_ROWS,
    Rebatcher,
    Warehouse,
    WarehouseError,
    check_names,
    strip_sql,
)

if TYPE_CHECKING:
    from sf_activation.warehouse.dialect import Dialect
    from sf_activation.warehouse.url import WarehouseURL

# --------------------------------------------------------------------------- DuckDB


class DuckDBWarehouse(Warehouse):
    """`duckdb:///relative/path.duckdb`, `duckdb:////absolute/path.duckdb`, `duckdb:///:memory:`.

    A connection is opened per call and closed after it, read-only by default
    (`?read_only=false` to open read-write), because DuckDB lets one process write a file
    or several read it: holding it open would lock out dbt between runs.
    """

    def __init__(self, url: WarehouseURL) -> None:
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

    @property
    def dialect(self) -> Dialect:
        from sf_activation.warehouse.dialect import DUCKDB

        return DUCKDB

    def _writer(self) -> Any:
        """A read-write connection for the diff engine's own tables, opened per call like
        the reader's, so the file is free again between calls."""
        import duckdb

        if self.path == ":memory:":
            raise WarehouseError(
                "the warehouse diff engine needs a DuckDB file, not :memory: "
                f"({self.display_url}); set diff: local in the model file"
            )
        try:
            return duckdb.connect(self.path, read_only=False)
        except duckdb.Error as exc:
            raise self._error("cannot open DuckDB database for writing", exc) from exc

    def execute(self, sql: str) -> None:
        import duckdb

        con = self._writer()
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise self._error("statement failed", exc) from exc
        finally:
            con.close()

    def load_rows(self, table: str, rows: pa.Table) -> None:
        import duckdb

        con = self._writer()
        try:
            con.register("sfa_rows", rows)
            names = ", ".join(self.dialect.quote(n) for n in rows.column_names)
            con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM sfa_rows")
        except duckdb.Error as exc:
            raise self._error("loading rows failed", exc) from exc
        finally:
            con.close()

    def _relation(self, con: Any, sql: str) -> Any:
        import duckdb

        try:
            rel = con.sql(strip_sql(sql))
        except duckdb.Error as exc:
            raise self._error("query failed", exc) from exc
        if rel is None:
            raise self._error("query failed", "the SQL is a statement that returns no rows")
        return rel

    def columns(self, sql: str) -> list[str]:
        con = self._connect()
        try:
            # A relation is planned, not run: its columns cost nothing.
            return check_names(list(self._relation(con, sql).columns))
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
            rebatch = Rebatcher(batch_rows)
            try:
                reader = rel.to_arrow_reader(batch_rows)
                for batch in reader:
                    yield from rebatch.feed(batch)
            # A query failing part-way (a cast on row 150,000) surfaces from the Arrow
            # reader as pyarrow's OSError/ArrowException, not duckdb.Error.
            except (duckdb.Error, OSError, pa.ArrowException) as exc:
                raise self._error("query failed", exc) from exc
            yield from rebatch.finish()
        finally:
            con.close()
