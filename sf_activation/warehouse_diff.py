"""The warehouse diff engine: only the rows that changed leave the warehouse.

With `diff: warehouse` (or `SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA` set), a table in the
warehouse, `<schema>.sfa_state__<model>`, keeps one row per key the state store knows:
the key as the warehouse writes it (`wh_key`), the key as state keeps it (`pk`), and
`row_hash`, an md5 the warehouse computes over the row's mapped columns in its own SQL —
recorded only for rows Salesforce accepted with exactly those values (else NULL). A plan
then runs one query in the warehouse that keeps the rows whose hash differs, whose key is
new, null, repeated, or whose match key another row shares, or whose last outcome was not
a success; only those rows are fetched, coerced and classified by the local diff against
the state store as always. Everything else is counted as unchanged there. Mirror models
also ask the warehouse for the keys that left the model (and whether a current row still
carries their record's match key): only those can be deleted.

The state store (files beside the state, with the ledger and the lease) stays what
Salesforce accepted: the warehouse table is derived from it, and is used only when it is
exactly in step. `<schema>.sfa_models` records, per model, the state store's identity
and version (the sequence of its last commit) and a digest of everything that shapes the
canonical row (the model file, the describe of its fields) as of the table's last write.
If any of them differs when a run plans (a write-back lost to a kill, a commit made by
a ledger pass, a model file edited, a state store reset), the run reads the whole model
once, as the local engine does, and rebuilds the table afterwards. A stale table can
therefore cost a full read, never a missed change or a wrong delete.

The write-back runs after the sends (their commits are durable by then): the model's
row in `sfa_models` is removed first and written last, so a write-back cut short reads as
"not in step" next time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sf_activation.testhooks import kill_point
from sf_activation.warehouse import Warehouse, WarehouseError
from sf_activation.warehouse.base import strip_sql

if TYPE_CHECKING:
    import duckdb

    from sf_activation.models import ModelSpec
    from sf_activation.salesforce.describe import ObjectDescribe
    from sf_activation.state import StateStore
    from sf_activation.warehouse.dialect import Dialect

log = logging.getLogger(__name__)

WH_KEY, WH_HASH, WH_MATCH = "__wh_key", "__wh_hash", "__wh_match"
WAREHOUSE_COLUMNS = (WH_KEY, WH_HASH, WH_MATCH)
# Changes of the hash expression or of the table layout: a table written under another
# engine version is rebuilt, never trusted.
ENGINE_VERSION = 1
META_TABLE = "sfa_models"
STATE_ID_FILE = "warehouse_state_id"
_SLUG = re.compile(r"[^a-z0-9_]")


class WarehouseDiffError(WarehouseError):
    """The warehouse engine cannot be used for this model (one line, says the way out)."""


def table_slug(model: str) -> str:
    return _SLUG.sub("_", model.lower())


class WarehouseDiff:
    """The engine for one model on one warehouse (see the module docstring)."""

    def __init__(
        self,
        warehouse: Warehouse,
        schema: str,
        spec: ModelSpec,
        describe: ObjectDescribe,
        *,
        columns: list[str],
        match_field: str | None,
        match_case_sensitive: bool,
    ) -> None:
        dialect = warehouse.dialect
        if dialect is None:
            raise WarehouseDiffError(
                f"{spec.display_path}: diff: warehouse is not available on this warehouse "
                f"({warehouse.display_url}); set diff: local"
            )
        self.warehouse = warehouse
        self.d: Dialect = dialect
        self.schema = schema
        self.spec = spec
        self.columns = columns
        slug = table_slug(spec.name)
        self.state_table = dialect.table(schema, f"sfa_state__{slug}")
        self.stage_table = dialect.table(schema, f"sfa_stage__{slug}")
        self.meta_table = dialect.table(schema, META_TABLE)
        self._state_name = f"sfa_state__{slug}"
        self._stage_name = f"sfa_stage__{slug}"
        # The column mapped to the field records are matched on (External ID).
        self.match_column = next(
            (c for c, f in spec.fields.items() if match_field and f.lower() == match_field.lower()),
            None,
        )
        self.match_case_sensitive = match_case_sensitive
        self.digest = self._digest(describe)

    # ------------------------------------------------------------------ SQL pieces
    def _digest(self, describe: ObjectDescribe) -> str:
        """Everything that shapes a row's canonical form besides its values."""
        fields = []
        for name in sorted(set(self.spec.fields.values())):
            f = describe.field(name) if "." not in name else None
            fields.append([name, f.model_dump(mode="json") if f is not None else None])
        body = json.dumps(
            {
                "engine": ENGINE_VERSION,
                "spec": json.loads(
                    self.spec.model_dump_json(
                        exclude={"schedule", "schedule_status", "description", "path", "sql_path"}
                    )
                ),
                "describe": fields,
                "dialect": self.d.name,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def _col(self, name: str, alias: str = "sfa_q") -> str:
        return f"{alias}.{self.d.quote(name)}"

    def _redacted(self, column: str) -> bool:
        return self.spec.fields.get(column) in set(self.spec.redact)

    def _key_sql(self) -> str:
        # A redacted key is kept as its md5 in the engine's table, like the state keeps
        # a digest: the table may have other readers than the model's source.
        text = self.d.text(self._col(self.spec.primary_key))
        return self.d.md5(text) if self._redacted(self.spec.primary_key) else text

    def _match_sql(self) -> str:
        if self.match_column is None:
            return f"CAST(NULL AS {self.d.text_type})"
        text = self.d.text(self._col(self.match_column))
        key = text if self.match_case_sensitive else f"LOWER({text})"
        return self.d.md5(key) if self._redacted(self.match_column) else key

    def _hash_sql(self) -> str:
        """md5 over the mapped columns and the key, each written unambiguously: a null as
        `~`, a value as its length, `:`, then its text (BigQuery: its JSON text)."""
        names = sorted({self.spec.primary_key, *self.spec.fields})
        parts = []
        for name in names:
            col = self._col(name)
            if self.d.name == "bigquery":
                # JSON null for NULL, as BigQuery writes it (its emulator gives NULL).
                parts.append(f"COALESCE(TO_JSON_STRING({col}), 'null')")
                continue
            text = self.d.text(col)
            parts.append(
                f"CASE WHEN {col} IS NULL THEN '~' ELSE "
                f"{self.d.text(f'LENGTH({text})')} || ':' || {text} END"
            )
        return self.d.md5(" || ',' || ".join(parts))

    def _model(self) -> str:
        # A derived table, not a CTE, wherever the query is needed: each use is planned
        # (and pruned) on its own instead of one materialised copy of the whole result.
        # Newlines keep a trailing `-- comment` in the model from swallowing the paren.
        return f"(\n{strip_sql(self.spec.sql_text)}\n) sfa_q"

    def _keyed(self, alias: str, *, hashed: bool = True) -> str:
        """The model's rows with the engine's columns (without the hash: keys only)."""
        if hashed:
            cols = ", ".join(self._col(c) for c in self.columns)
            select = (
                f"{cols}, {self._key_sql()} AS {WH_KEY}, {self._hash_sql()} AS {WH_HASH}, "
                f"{self._match_sql()} AS {WH_MATCH}"
            )
        else:
            select = f"{self._key_sql()} AS {WH_KEY}, {self._match_sql()} AS {WH_MATCH}"
        return f"(SELECT {select} FROM {self._model()}) {alias}"

    def _repeated(self, expr: str, alias: str) -> str:
        """Values of `expr` more than one row shares."""
        return (
            f"(SELECT {expr} AS k FROM {self._model()} WHERE {expr} IS NOT NULL "
            f"GROUP BY 1 HAVING COUNT(*) > 1) {alias}"
        )

    def _fetch_sql(self, full: bool) -> str:
        names = [f"k.{self.d.quote(n)}" for n in (*self.columns, *WAREHOUSE_COLUMNS)]
        select = f"SELECT {', '.join(names)} FROM {self._keyed('k')}"
        if full:
            return select
        joins = f" LEFT JOIN {self._repeated(self._key_sql(), 'dk')} ON dk.k = k.{WH_KEY}"
        send = f"k.{WH_KEY} IS NULL OR dk.k IS NOT NULL"
        if self.match_column is not None:
            joins += f" LEFT JOIN {self._repeated(self._match_sql(), 'dm')} ON dm.k = k.{WH_MATCH}"
            send += " OR dm.k IS NOT NULL"
        return (
            f"{select}{joins} LEFT JOIN {self.state_table} s ON s.wh_key = k.{WH_KEY} "
            f"WHERE {send} OR s.wh_key IS NULL OR s.row_hash IS NULL "
            f"OR s.row_hash <> k.{WH_HASH}"
        )

    # ------------------------------------------------------------------ plan side
    def prepare(self) -> None:
        """The engine's tables, made when missing (with the schema, when allowed)."""
        t = self.d.text_type
        try:
            self.warehouse.ensure_table(
                self.schema,
                self._state_name,
                [("wh_key", t), ("pk", t), ("row_hash", t), ("match_key", t)],
            )
            self.warehouse.ensure_table(
                self.schema,
                META_TABLE,
                [("model", t), ("state_id", t), ("state_version", self.d.int_type),
                 ("digest", t), ("written_at", t)],
            )  # fmt: skip
        except WarehouseError as exc:
            raise WarehouseDiffError(
                f"{self.spec.display_path}: the warehouse diff engine cannot create its tables "
                f"in schema {self.schema}: {exc}; grant the role the right to create tables "
                'there (docs/warehouses.md, "The warehouse diff engine"), or set diff: local'
            ) from exc

    def _meta(self) -> tuple[str, int, str] | None:
        rows = self._query(
            f"SELECT state_id, state_version, digest FROM {self.meta_table} "
            f"WHERE model = {self.d.literal(self.spec.name)}"
        )
        if len(rows) != 1:
            return None
        state_id, version, digest = rows[0]
        return str(state_id), int(version), str(digest)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for batch in self.warehouse.iter_batches(sql):
            out.extend(zip(*(c.to_pylist() for c in batch.columns), strict=True))
        return out

    def in_step(self, state: StateStore, full_resync: bool) -> str | None:
        """None when the warehouse table is in step with the state store; else why not
        (the run then reads every row, like the local engine)."""
        if full_resync:
            return "a full resync reads every row"
        meta = self._meta()
        if meta is None:
            return "the warehouse holds no state for this model yet"
        state_id, version, digest = meta
        if state_id != state_identity(state):
            return "the state store is not the one the warehouse table was built from"
        if version != state.version():
            return (
                f"the state store moved on since the warehouse table was written "
                f"(version {state.version()}, table at {version})"
            )
        if digest != self.digest:
            return "the model file or the object's fields changed since the last run"
        return None

    def iter_rows(self, full: bool, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The model's rows to plan: every row (`full`), or only those the warehouse
        could not show unchanged; with `__wh_key`, `__wh_hash`, `__wh_match`."""
        yield from self.warehouse.iter_batches(self._fetch_sql(full), batch_rows)

    def count_rows(self) -> int:
        """The model's rows (those not fetched are unchanged)."""
        rows = self._query(f"SELECT COUNT(*) FROM {self._model()}")
        return int(rows[0][0] or 0)

    def removed(self) -> pa.Table:
        """State keys whose rows left the model: pk, superseded."""
        sql = (
            "SELECT s.pk AS pk, CASE WHEN s.match_key IS NOT NULL AND EXISTS (SELECT 1 FROM "
            f"{self._keyed('m', hashed=False)} WHERE m.{WH_MATCH} = s.match_key) THEN 1 ELSE 0 "
            f"END AS superseded FROM {self.state_table} s WHERE NOT EXISTS "
            f"(SELECT 1 FROM {self._keyed('k', hashed=False)} WHERE k.{WH_KEY} = s.wh_key)"
        )
        batches = list(self.warehouse.iter_batches(sql))
        schema = pa.schema([("pk", pa.string()), ("superseded", pa.int64())])
        if not batches:
            return schema.empty_table()
        table = pa.Table.from_batches(batches)
        return pa.table(
            {
                "pk": table.column(0).cast(pa.string()),
                "superseded": table.column(1).cast(pa.int64()),
            }
        )

    # ------------------------------------------------------------------ write-back
    def write_back(
        self, con: duckdb.DuckDBPyConnection, state: StateStore, *, full: bool, state_key: str
    ) -> int:
        """Bring the warehouse table in step with the state store after a run (`con`: the
        plan's database, holding `src`, `planned`, `removed`, `superseded`). Returns the
        rows written."""
        cols = ["pk", "hash", "status"]
        with state.folded(con, cols, include_deleted=True, work_dir=None) as state_sql:
            final = state_sql or (
                "SELECT NULL::VARCHAR AS pk, NULL::VARCHAR AS hash, NULL::VARCHAR AS status "
                "WHERE FALSE"
            )
            rows = con.sql(
                f"""
                WITH fin AS ({final}),
                n AS (SELECT {WH_KEY} AS k, count(*) AS c FROM src WHERE {WH_KEY} IS NOT NULL
                      GROUP BY 1),
                cur AS (
                    SELECT s.{WH_KEY} AS wh_key, f.pk, f.status,
                           CASE WHEN n.c = 1 AND f.status = 'synced' AND p.__class <> 'invalid'
                                 AND (p.__class = 'unchanged' OR f.hash = s.__hash)
                                THEN s.{WH_HASH} END AS row_hash,
                           s.{WH_MATCH} AS match_key
                    FROM src s JOIN planned p ON p.__seq = s.rowid
                    JOIN n ON n.k = s.{WH_KEY}
                    LEFT JOIN fin f ON f.pk = s.{state_key}
                    WHERE s.{WH_KEY} IS NOT NULL
                    QUALIFY row_number() OVER (PARTITION BY s.{WH_KEY} ORDER BY s.rowid) = 1
                )
                SELECT wh_key, CASE WHEN pk IS NULL OR status = 'deleted' THEN NULL ELSE pk END
                         AS pk, row_hash, match_key,
                       CASE WHEN pk IS NULL OR status = 'deleted' THEN 'del' ELSE 'put' END AS op
                FROM cur
                UNION ALL
                SELECT NULL, g.__pk, NULL, NULL, 'del' FROM (
                    SELECT __pk FROM removed UNION SELECT __pk FROM superseded
                ) g LEFT JOIN fin f ON f.pk = g.__pk
                WHERE f.pk IS NULL OR f.status = 'deleted'
                """
            ).to_arrow_table()
        rows = pa.table({c: rows.column(c).cast(pa.string()) for c in rows.column_names})
        self._apply(rows, full=full, version=state.version(), state_id=state_identity(state))
        return rows.num_rows

    def _apply(self, rows: pa.Table, *, full: bool, version: int, state_id: str) -> None:
        w, d = self.warehouse, self.d
        model = d.literal(self.spec.name)
        # Out of step from here until the last statement: a kill in between costs the next
        # run a full read, nothing else.
        w.execute(f"DELETE FROM {self.meta_table} WHERE model = {model}")
        if full:
            w.execute(f"DELETE FROM {self.state_table} WHERE 1 = 1")
        t = d.text_type
        w.execute(f"DROP TABLE IF EXISTS {self.stage_table}")
        w.execute(
            d.create_table(
                self.schema,
                self._stage_name,
                [("wh_key", t), ("pk", t), ("row_hash", t), ("match_key", t), ("op", t)],
            )
        )
        if rows.num_rows:
            w.load_rows(self.stage_table, rows)
            if not full:
                w.execute(
                    f"DELETE FROM {self.state_table} WHERE wh_key IN (SELECT wh_key FROM "
                    f"{self.stage_table} WHERE wh_key IS NOT NULL) OR pk IN (SELECT pk FROM "
                    f"{self.stage_table} WHERE op = 'del' AND pk IS NOT NULL)"
                )
            w.execute(
                f"INSERT INTO {self.state_table} (wh_key, pk, row_hash, match_key) "
                f"SELECT wh_key, pk, row_hash, match_key FROM {self.stage_table} WHERE op = 'put'"
            )
        w.execute(f"DROP TABLE IF EXISTS {self.stage_table}")
        kill_point("warehouse_write_back")  # test hook: rows written, model not marked
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        w.execute(
            f"INSERT INTO {self.meta_table} (model, state_id, state_version, digest, written_at) "
            f"VALUES ({model}, {d.literal(state_id)}, {int(version)}, {d.literal(self.digest)}, "
            f"{d.literal(now)})"
        )


def state_identity(state: StateStore) -> str:
    """A random id kept beside the model's state, made on first use: a state store that
    was reset or replaced has another, and a warehouse table built from the old one is
    not trusted."""
    try:
        return state.read_bytes(STATE_ID_FILE).decode().strip()
    except FileNotFoundError:
        ident = uuid.uuid4().hex
        state.write_bytes(STATE_ID_FILE, ident.encode())
        return ident


__all__ = [
    "WAREHOUSE_COLUMNS",
    "WH_HASH",
    "WH_KEY",
    "WH_MATCH",
    "WarehouseDiff",
    "WarehouseDiffError",
    "WarehouseError",
    "state_identity",
]
