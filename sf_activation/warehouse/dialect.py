"""The SQL a warehouse speaks for the warehouse diff engine: quoting, text, md5.

Only what `sf_activation.warehouse_diff` writes needs a dialect: the model's own SQL is
the user's and runs as given. Each dialect renders the same statements; where they
differ (BigQuery's backticks and `STRING`, its `TO_HEX(MD5(...))`) it is said here once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIMPLE = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Dialect:
    name: str  # duckdb, postgresql, snowflake, bigquery
    text_type: str = "VARCHAR"
    int_type: str = "BIGINT"

    def quote(self, name: str) -> str:
        """An identifier as written in SQL. Snowflake's result names come back lower-cased
        (`normalise_name`) from upper-case unquoted ones: a simple lower-case name is left
        unquoted there, so the warehouse folds it back to the column it came from."""
        if self.name == "bigquery":
            return "`" + name.replace("`", "\\`") + "`"
        if self.name == "snowflake" and _SIMPLE.match(name):
            return name
        return '"' + name.replace('"', '""') + '"'

    def literal(self, value: str) -> str:
        if self.name in ("bigquery", "snowflake"):
            # Both read backslash escapes inside string literals.
            value = value.replace("\\", "\\\\")
            return "'" + value.replace("'", "\\'") + "'"
        return "'" + value.replace("'", "''") + "'"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS {self.text_type})"

    def md5(self, expr: str) -> str:
        """Lower-case hex md5 of a text expression."""
        if self.name == "bigquery":
            return f"TO_HEX(MD5({expr}))"
        return f"MD5({expr})"

    def table(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

    def create_table(self, schema: str, name: str, columns: list[tuple[str, str]]) -> str:
        cols = ", ".join(f"{self.quote(c)} {t}" for c, t in columns)
        return f"CREATE TABLE IF NOT EXISTS {self.table(schema, name)} ({cols})"

    def create_schema(self, schema: str) -> str:
        # BigQuery: a dataset, created in the client's default project.
        return f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}"


DUCKDB = Dialect("duckdb")
POSTGRESQL = Dialect("postgresql", text_type="TEXT")
SNOWFLAKE = Dialect("snowflake")
BIGQUERY = Dialect("bigquery", text_type="STRING", int_type="INT64")


def dialect_named(name: str) -> Dialect | None:
    return {d.name: d for d in (DUCKDB, POSTGRESQL, SNOWFLAKE, BIGQUERY)}.get(name)
