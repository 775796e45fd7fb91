"""The plan: which rows of this run to send, and which records to delete.

The source (coerced Arrow batches) streams into an on-disk DuckDB database under
``work_dir`` with a memory limit, so a model of tens of millions of rows is planned in
bounded memory; classification is one SQL join against the state (read where it lies,
in Parquet), never Python per row.

Every source row gets ``__hash``: md5 of the canonical serialisation of its field
columns, a JSON object whose keys are the Salesforce field names in sorted order (so
reordering ``fields:`` in the model file changes nothing), nulls written as ``null``,
values as the coerced canonical types print in JSON (1 and 1.0 arrive as the same
float64). Only the hash is stored for every row; the JSON itself (``__payload``) is
rebuilt for the rows sent, and the sync records it in state, which lets the next plan
show field-level before/after and lets a future change of serialisation re-hash from
state instead of re-sending everything.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from sf_activation.salesforce.coerce import DECIMAL_PRECISION
from sf_activation.salesforce.payload import OMIT_COLUMN as OMIT_FIELDS_COLUMN
from sf_activation.state import (
    STATE_KEY_COLUMN,
    KeyDigest,
    StateStore,
    _safe_setting,
    _sql_str,
    empty_state,
)
from sf_activation.warehouse_diff import WAREHOUSE_COLUMNS

META_COLUMNS = ("__pk", "__error_code", "__error_message")
CLASSES = ("invalid", "added", "changed", "unchanged", "pending", "removed")
NULL_PRIMARY_KEY = "NULL_PRIMARY_KEY"
DUPLICATE_PRIMARY_KEY = "DUPLICATE_PRIMARY_KEY"
# Salesforce's own code for an External ID several records of one call share.
DUPLICATE_EXTERNAL_ID = "DUPLICATE_EXTERNAL_ID"
# Rows whose previous payload is kept for sample_changes (changed and pending first).
SAMPLE_LIMIT = 100


class DiffError(Exception):
    """The source cannot be planned (missing meta columns, unreadable state)."""


class DeleteRateExceeded(Exception):
    """A mirror plan would delete more of the synced records than the model allows."""

    def __init__(
        self, message: str, *, model: str, removed: int, synced: int, max_delete_rate: float
    ) -> None:
        super().__init__(message)
        self.model = model
        self.removed = removed
        self.synced = synced
        self.max_delete_rate = max_delete_rate


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + _sql_str(value) + "'"


REDACTED = "***REDACTED***"  # as rejects.REDACTED


# Significant decimal digits a float64 always keeps (DBL_DIG): a decimal with no more is
# the shortest text of its float, so that float's JSON writes it exactly.
FLOAT_DIGITS = 15


def payload_sql(
    fields: Iterable[str],
    alias: str | None = None,
    redact: Iterable[str] = (),
    decimals: Mapping[str, int] | None = None,
) -> str:
    """DuckDB expression: the canonical JSON payload of the given field columns; with
    `redact`, those fields' values masked (what state keeps: no PII at rest).

    `decimals` names the exact-number columns (field -> scale). Their values are written as
    the float64 they were kept as before numbers were exact whenever that float writes the
    same value (1.50 as `1.5`), so a model synced then hashes the same now, and as exact
    decimals only where a float loses digits. json_object re-reads JSON values through a
    double, so with decimals the object is joined from `to_json` texts instead (the same
    writer, byte for byte).
    """
    names = sorted(fields)
    if not names:
        return "'{}'::VARCHAR"
    prefix = f"{alias}." if alias else ""
    masked = set(redact)
    exact = dict(decimals or {})

    def value(n: str) -> str:
        column = f"{prefix}{_q(n)}"
        if n in masked:
            return f"CASE WHEN {column} IS NULL THEN NULL ELSE {_lit(REDACTED)} END"
        return column

    if not any(n in exact and n not in masked for n in names):
        pairs = ", ".join(f"{_lit(n)}, {value(n)}" for n in names)
        return f"json_object({pairs})::VARCHAR"

    def text(n: str) -> str:
        column = value(n)
        if n in exact and n not in masked:
            as_float = f"to_json({column}::DOUBLE)::VARCHAR"
            same = f"{as_float}::DECIMAL({DECIMAL_PRECISION}, {int(exact[n])}) = {column}"
            column_json = f"CASE WHEN {same} THEN {as_float} ELSE to_json({column})::VARCHAR END"
        else:
            column_json = f"to_json({column})::VARCHAR"
        return f"coalesce({column_json}, 'null')"

    members = [
        f"{_lit(('{' if i == 0 else ',') + json.dumps(n) + ':')} || {text(n)}"
        for i, n in enumerate(names)
    ]
    joined = "(" + " || ".join(members) + " || '}')"
    numbers = {n: int(exact[n]) for n in names if n in exact and n not in masked}
    if any(s > FLOAT_DIGITS for s in numbers.values()):
        return joined
    # A decimal of at most FLOAT_DIGITS significant digits always survives the float
    # (`same` above holds), so rows whose every decimal is that small, nearly all of them,
    # take json_object over the floats: the same writer, so the same bytes, at a fraction
    # of the cost of joining texts. Only the others pay for the joined texts.
    small = " AND ".join(
        f"({prefix}{_q(n)} IS NULL OR abs({prefix}{_q(n)}) < "
        f"{10 ** (FLOAT_DIGITS - s)}::DECIMAL({DECIMAL_PRECISION}, {s}))"
        for n, s in numbers.items()
    )
    pairs = ", ".join(
        f"{_lit(n)}, {prefix}{_q(n)}::DOUBLE" if n in numbers else f"{_lit(n)}, {value(n)}"
        for n in names
    )
    return f"(CASE WHEN {small} THEN json_object({pairs})::VARCHAR ELSE {joined} END)"


def decimal_fields(schema: pa.Schema) -> dict[str, int]:
    """The exact-number field columns of a canonical schema: field -> scale."""
    return {
        f.name: f.type.scale
        for f in schema
        if pa.types.is_decimal(f.type) and f.name not in META_COLUMNS
    }


SEND_RANGE_ROWS = 100_000  # source rows per query when reading rows to send in order
# Deepest parent chain of a self-referencing lookup sent in order within one run; deeper
# rows go in the last wave (Salesforce's own hierarchies rarely pass a few levels).
MAX_WAVES = 50


PLAN_DATABASE = "plan.duckdb"


class Plan:
    """The result of :func:`plan_changes`; holds an open DuckDB database until closed.

    Use as a context manager (or call :meth:`close`), which removes the database.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        db_dir: Path,
        fields: list[str],
        full_resync: bool,
        counts: dict[str, int],
        insert_only: bool = False,
        redact: Iterable[str] = (),
        decimals: Mapping[str, int] | None = None,
    ) -> None:
        self._con = con
        self._db_dir = db_dir
        self.fields = fields
        self.full_resync = full_resync
        self.insert_only = insert_only
        self.counts = counts
        self.redact = sorted(set(redact) & set(fields))
        self.decimals = dict(decimals or {})
        self._state_key_column: str | None = None  # read from the plan on first use
        self._previous: bool | None = None  # sent_before kept (read on first use)
        self._waves = 1

    # Classes sent this run, in the order they go out.
    @property
    def send_classes(self) -> tuple[str, ...]:
        if self.insert_only:
            # Re-sending a created row to insert would create a duplicate record.
            return ("added", "pending")
        base = ("added", "changed", "pending")
        return (*base, "unchanged") if self.full_resync else base

    @property
    def to_send(self) -> int:
        return sum(self.counts[c] for c in self.send_classes)

    def _reader(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        # A cursor per iterator: DuckDB allows one open result per connection.
        cur = self._con.cursor()
        try:
            reader = cur.sql(sql).to_arrow_reader(batch_rows)
            for batch in reader:
                if batch.num_rows:
                    yield batch
        finally:
            cur.close()

    def _fields_sql(self, alias: str) -> str:
        return "".join(f", {alias}.{_q(f)}" for f in self.fields)

    @property
    def _state_key(self) -> str:
        """The source column holding each row's key as state keeps it: `__state_pk` (the
        digest) when the model's state keeps digests, else `__pk`. Read from the plan's
        own table, so a plan opened from its file knows too."""
        if self._state_key_column is None:
            cur = self._con.cursor()
            try:
                names = {r[0] for r in cur.sql("DESCRIBE src").fetchall()}
            finally:
                cur.close()
            self._state_key_column = STATE_KEY_COLUMN if STATE_KEY_COLUMN in names else "__pk"
        return self._state_key_column

    def plan_waves(self, lookup: str, key: str) -> int:
        """Waves for a self-referencing lookup (Account.Parent by External ID): a row to
        send whose parent is another row to send goes in a later wave than its parent, so
        each wave's parents exist in Salesforce before their children are written.

        ``lookup`` is the lookup column (``Parent.External_Id__c``), ``key`` the column the
        parent is found by (``External_Id__c``), compared case-insensitively as External
        IDs usually are (a case-sensitive key can only gain a needless wave). Returns the
        number of waves (1: no row's parent is sent in this run). Rows in a parent cycle
        go in the last wave, where Salesforce refuses what it cannot resolve.
        """
        if lookup not in self.fields or key not in self.fields:
            return 1
        classes = ", ".join(_lit(c) for c in self.send_classes)
        self._con.execute(
            f"""
            CREATE OR REPLACE TABLE waves AS
            WITH RECURSIVE t AS (
                SELECT p.__seq AS seq, lower(s.{_q(key)}::VARCHAR) AS k,
                       lower(s.{_q(lookup)}::VARCHAR) AS parent
                FROM planned p JOIN src s ON s.rowid = p.__seq
                WHERE p.__class IN ({classes})
            ),
            d(seq, k, depth) AS (
                SELECT seq, k, 0 FROM t
                WHERE parent IS NULL
                   OR NOT EXISTS (SELECT 1 FROM t AS up WHERE up.k = t.parent AND up.seq <> t.seq)
                UNION ALL
                SELECT t.seq, t.k, d.depth + 1 FROM t JOIN d ON t.parent = d.k
                WHERE t.seq <> d.seq AND d.depth < {MAX_WAVES}
            )
            SELECT seq, max(depth) AS wave FROM d GROUP BY seq
            """
        )
        deepest = self._con.sql("SELECT coalesce(max(wave), 0) FROM waves").fetchall()[0][0]
        self._waves = int(deepest) + 1
        return self._waves

    def iter_to_send(
        self, batch_rows: int = 10_000, group_by: Iterable[str] = (), wave: int | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Rows to send: ``__pk`` (``__state_pk``: its digest, when state keeps digests),
        ``__hash, __sf_id, __class``, the field columns (mapping order), then ``__payload``
        (the canonical JSON the hash is of) and, when the model redacts fields,
        ``__stored_payload`` (the same with those values masked: what state keeps).
        In the source's order, or with ``group_by`` (lookup fields) rows that share a parent
        next to each other, rows without a parent first. With ``wave`` (after
        :meth:`plan_waves`), only that wave's rows; rows no wave reached go in the last."""
        classes = ", ".join(_lit(c) for c in self.send_classes)
        in_wave = ""
        if wave is not None:
            last = wave == self._waves - 1
            in_wave = (
                f" AND coalesce((SELECT w.wave FROM waves w WHERE w.seq = p.__seq), "
                f"{self._waves - 1}) = {int(wave)}"
                if last
                else f" AND p.__seq IN (SELECT seq FROM waves WHERE wave = {int(wave)})"
            )
        # The digest rides along where state keeps digests: what settling commits.
        state_key = "" if self._state_key == "__pk" else f"s.{STATE_KEY_COLUMN}, "
        unchanged, sent_before = "", ""
        if self._keeps_previous:
            unchanged = f", {self._unchanged_fields_sql()} AS {OMIT_FIELDS_COLUMN}"
            sent_before = "LEFT JOIN sent_before sb ON sb.__seq = p.__seq "
        select = (
            f"SELECT s.__pk, {state_key}s.__hash, p.__sf_id, p.__class{self._fields_sql('s')}, "
            f"{payload_sql(self.fields, 's', decimals=self.decimals)} AS __payload"
            + (
                f", {payload_sql(self.fields, 's', self.redact, self.decimals)} AS __stored_payload"
                if self.redact
                else ""
            )
            + f"{unchanged} FROM planned p JOIN src s ON s.rowid = p.__seq {sent_before}"
            f"WHERE p.__class IN ({classes}){in_wave}"
        )
        # Children of one parent in one batch rather than in parallel batches: Salesforce
        # locks the parent for each child written, and parallel writers collide on it.
        order = [f"s.{_q(f)} ASC NULLS FIRST" for f in group_by if f in self.fields]
        if order:
            yield from self._reader(
                f"{select} ORDER BY {', '.join([*order, 'p.__seq'])}", batch_rows
            )
            return
        # In source order: one range of source rows at a time, so DuckDB sorts (and holds
        # while the rows are sent) a range, not every row to send. A single sort of a
        # million rows kept ~250 MB for the whole send.
        for start in range(0, self.counts["rows"], SEND_RANGE_ROWS):
            yield from self._reader(
                f"{select} AND p.__seq >= {start} AND p.__seq < {start + SEND_RANGE_ROWS} "
                "ORDER BY p.__seq",
                batch_rows,
            )

    @property
    def _keeps_previous(self) -> bool:
        """The plan kept changed rows' previous payloads (`send_fields: changed`); read from
        the plan's own tables, so a staged plan opened from its file knows too."""
        if self._previous is None:
            cur = self._con.cursor()
            try:
                found = cur.sql(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'sent_before'"
                ).fetchall()[0][0]
            finally:
                cur.close()
            self._previous = bool(found)
        return self._previous

    def _unchanged_fields_sql(self) -> str:
        """The fields of a changed row whose canonical value is the one state recorded as
        sent: a list, empty when nothing was recorded (or the row is not `changed`).

        Values are compared as JSON texts of the same writer. Redacted fields are never
        listed: state keeps them masked (no hash of the value either), so whether they
        changed cannot be told and they are always sent. An exact number a double cannot
        hold is never listed either: DuckDB reads JSON numbers through a double, so two
        such values could compare equal when they are not."""
        candidates: list[str] = []
        current = payload_sql(self.fields, "s", decimals=self.decimals)
        for name in self.fields:
            if name in self.redact:
                continue
            path = _lit("$." + json.dumps(name))
            same = (
                f"json_extract({current}, {path})::VARCHAR "
                f"IS NOT DISTINCT FROM json_extract(sb.payload, {path})::VARCHAR"
            )
            if name in self.decimals:
                column = f"s.{_q(name)}"
                exact = (
                    f"({column} IS NULL OR to_json({column}::DOUBLE)::VARCHAR::"
                    f"DECIMAL({DECIMAL_PRECISION}, {int(self.decimals[name])}) = {column})"
                )
                same = f"({same} AND {exact})"
            candidates.append(f"CASE WHEN {same} THEN {_lit(name)} END")
        if not candidates:
            return "[]::VARCHAR[]"
        return (
            f"CASE WHEN sb.payload IS NULL THEN []::VARCHAR[] "
            f"ELSE list_filter([{', '.join(candidates)}]::VARCHAR[], lambda x: x IS NOT NULL) END"
        )

    @property
    def warehouse_full(self) -> bool | None:
        """Under the warehouse engine, whether every row was read (its write-back then
        rebuilds the warehouse's table); None for a plan of the local engine. Read from
        the plan's own tables, so a staged plan knows too."""
        cur = self._con.cursor()
        try:
            found = cur.sql(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'warehouse_engine'"
            ).fetchall()[0][0]
            if not found:
                return None
            return bool(cur.sql("SELECT read_all FROM warehouse_engine").fetchall()[0][0])
        finally:
            cur.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    @property
    def state_key_column(self) -> str:
        """`src`'s column holding each row's key as state keeps it."""
        return self._state_key

    @property
    def database(self) -> Path:
        """The plan's DuckDB file, complete on disk (checkpointed): what is staged."""
        self._con.execute("CHECKPOINT")
        return self._db_dir / PLAN_DATABASE

    def limit_memory(self, limit: str) -> None:
        """Lower DuckDB's memory limit once the plan is built: while rows are sent, its
        buffers only serve sequential reads of the on-disk plan, and the memory is the
        sender's to use."""
        self._con.execute(f"SET memory_limit = '{_safe_setting(limit)}'")

    def iter_removed(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Records whose rows left the model: ``__pk, __sf_id`` (mirror deletes these);
        ``__pk`` as state keeps it (a digest when it keeps digests: the key is not known)."""
        yield from self._reader("SELECT __pk, __sf_id FROM removed ORDER BY __pk", batch_rows)

    def iter_superseded(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Keys that left the model while a current row carries their record's match key:
        ``__pk, __sf_id`` (forgotten, never deleted: the record is the current row's)."""
        yield from self._reader("SELECT __pk, __sf_id FROM superseded ORDER BY __pk", batch_rows)

    def iter_invalid(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Rows never sent: ``__pk, __error_code, __error_message`` + the field columns."""
        yield from self._reader(
            f"SELECT s.__pk, p.__error_code, p.__error_message{self._fields_sql('s')} "
            "FROM planned p JOIN src s ON s.rowid = p.__seq "
            "WHERE p.__class = 'invalid' ORDER BY p.__seq",
            batch_rows,
        )

    def sample_changes(self, n: int = 5) -> list[dict[str, Any]]:
        """Up to ``n`` (at most 100) rows to send, changed first, with field-level
        before/after.

        Each item: ``pk, class, sf_id, changes: {field: {before, after}}`` where
        ``before`` comes from the payload recorded in state (absent for added rows, or
        when state holds no payload); only fields that differ are listed when it is known.
        """
        cur = self._con.cursor()
        try:
            rows = cur.sql(
                # Compared with state's payload as it is kept: redacted values masked.
                f"SELECT s.__pk, p.__class, p.__sf_id, "
                f"{payload_sql(self.fields, 's', self.redact, self.decimals)}, "
                "prev.payload FROM planned p JOIN src s ON s.rowid = p.__seq "
                f"LEFT JOIN prev ON prev.pk = s.{self._state_key} "
                "WHERE p.__class IN ('changed', 'pending', 'added') "
                "ORDER BY CASE p.__class WHEN 'changed' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, "
                f"p.__seq LIMIT {max(0, min(int(n), SAMPLE_LIMIT))}"
            ).fetchall()
        finally:
            cur.close()
        out: list[dict[str, Any]] = []
        for pk, cls, sf_id, payload, prev in rows:
            after = json.loads(payload) if payload else {}
            before = json.loads(prev) if prev else None
            changes: dict[str, dict[str, Any]] = {}
            for field in self.fields:
                new = after.get(field)
                if before is None:
                    changes[field] = {"after": new}
                elif field not in before or before[field] != new:
                    changes[field] = {"before": before.get(field), "after": new}
            out.append({"pk": pk, "class": cls, "sf_id": sf_id, "changes": changes})
        return out

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None  # type: ignore[assignment]
        shutil.rmtree(self._db_dir, ignore_errors=True)

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _source_reader(
    source: Iterable[pa.RecordBatch], schema: pa.Schema | None
) -> tuple[pa.RecordBatchReader, list[str]]:
    """A reader over the source batches (peeking the first for the schema) and the field
    column names. An empty source needs ``schema`` to know its fields, else has none."""
    it = iter(source)
    first = next(it, None)
    if first is None:
        schema = schema or pa.schema([(c, pa.string()) for c in META_COLUMNS])
        return pa.RecordBatchReader.from_batches(schema, iter(())), _field_names(schema)
    schema = first.schema
    missing = [c for c in META_COLUMNS if c not in schema.names]
    if missing:
        raise DiffError(
            f"source batches lack {', '.join(missing)}: pass coerce_batch output to plan_changes"
        )

    def chain() -> Iterator[pa.RecordBatch]:
        yield first
        for batch in it:
            if batch.schema != schema:
                # Coercion output has one schema per model; tolerate nullability noise.
                batch = batch.cast(schema)
            yield batch

    return pa.RecordBatchReader.from_batches(schema, chain()), _field_names(schema)


def _field_names(schema: pa.Schema) -> list[str]:
    # The warehouse engine's own columns ride along in `src` for its write-back.
    return [n for n in schema.names if n not in META_COLUMNS and n not in WAREHOUSE_COLUMNS]


def plan_changes(
    source: Iterable[pa.RecordBatch],
    state: pa.Table | StateStore,
    *,
    full_resync: bool = False,
    work_dir: Path,
    detect_removed: bool = True,
    insert_only: bool = False,
    schema: pa.Schema | None = None,
    memory_limit: str = "1GB",
    threads: int | None = None,
    match_field: str | None = None,
    match_case_sensitive: bool = False,
    redact: Iterable[str] = (),
    multi_select: Iterable[str] = (),
    previous_payloads: bool = False,
    unchanged_elsewhere: int | Callable[[], int] = 0,
    removed_candidates: pa.Table | Callable[[], pa.Table] | None = None,
    warehouse_full: bool | None = None,
) -> Plan:
    """Diff this run's rows against the state and return the :class:`Plan`.

    ``state`` is either a table (``StateStore.load()``) or the store itself, in which case
    its Parquet files are read by DuckDB directly (no copy of the state in Python memory,
    the path for large models). ``detect_removed`` (mirror) lists synced records whose
    rows left the model (pass False for everything but mirror). ``insert_only`` (insert
    models) sends only added and pending rows, never changed or unchanged ones, since
    re-sending them would create duplicates. ``schema`` gives the field columns when ``source`` may be empty.
    ``match_field`` (mirror: the External ID field) keeps a record whose old primary key left
    the model from being deleted when a current row carries the same match key, compared as
    Salesforce compares it (case-insensitively unless ``match_case_sensitive``): that row
    was just written to the same record (``Plan.iter_superseded``). ``multi_select`` names
    the multi-select picklist fields, whose state hashes are re-computed from the stored
    payload in today's canonical order (see :func:`_migrated_hash_sql`).
    ``previous_payloads`` (`send_fields: changed`) keeps the payload state recorded for each
    changed row (table ``sent_before``), so :meth:`Plan.iter_to_send` can tell which of its
    fields changed (``__omit_fields``: the ones that did not).

    The warehouse engine (`sf_activation.warehouse_diff`) passes only the rows it could not
    show unchanged: ``unchanged_elsewhere`` counts the others (unchanged, never sent), and
    ``removed_candidates`` (pk, superseded) names the only state keys whose rows may have
    left the model (mirror); None means ``source`` holds every row. Either may be a callable,
    called once ``source`` is read. ``warehouse_full``
    (not None under that engine) is recorded in the plan for its write-back.
    """
    work_dir = Path(work_dir)
    db_dir = work_dir / f"plan-{uuid.uuid4().hex[:12]}"
    db_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_dir / PLAN_DATABASE))
    try:
        con.execute(f"SET memory_limit = '{_safe_setting(memory_limit)}'")
        con.execute(f"SET temp_directory = '{_sql_str(str(db_dir / 'spill'))}'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        # Insertion order kept: src.rowid is then the row's position in the query result,
        # which orders the output (parents before children when the SQL says so).
        con.execute("SET preserve_insertion_order = true")

        reader, fields = _source_reader(source, schema)
        decimals = decimal_fields(reader.schema)
        field_cols = "".join(f", {_q(f)}" for f in fields)
        field_cols += "".join(
            f", {_q(c)}::VARCHAR AS {_q(c)}" for c in WAREHOUSE_COLUMNS if c in reader.schema.names
        )
        con.register("src_reader", reader)
        # A model whose state keeps digests of its keys (its key is redacted) joins by
        # digest: computed here in SQL, once per row, beside the key (which the run still
        # needs for rejects and sending; only state must not hold it).
        spk = "__pk"
        state_key = ""
        if isinstance(state, StateStore) and state.digests_keys:
            state.key_digest().install(con)
            spk = STATE_KEY_COLUMN
            state_key = f", {KeyDigest.sql('__pk')} AS {STATE_KEY_COLUMN}"
        # Only the hash is stored; the payload is rebuilt for the (few) rows sent, which
        # halves the database and the ingest time on a big unchanged model.
        con.execute(
            f"""
            CREATE TABLE src AS
            SELECT __pk::VARCHAR AS __pk, __error_code::VARCHAR AS __error_code,
                   __error_message::VARCHAR AS __error_message{field_cols},
                   md5({payload_sql(fields, decimals=decimals)}) AS __hash{state_key}
            FROM src_reader
            """
        )
        con.unregister("src_reader")

        # On S3 the payload column is most of the state's bytes: fetched only where a
        # result depends on it (multi-select hashes, send_fields: changed, a mirror's match
        # keys); a sample's `before` values are then not shown.
        payloads = (
            not (isinstance(state, StateStore) and state.is_s3)
            or any(f in fields for f in multi_select)
            or previous_payloads
            or (detect_removed and match_field is not None and match_field in fields)
        )
        with _state_relation(con, state, db_dir, payloads=payloads) as state_sql:
            # A view, not a table: the state is scanned where it lies (Parquet), never
            # copied; DuckDB pushes the projection down so payloads are not read here.
            hash_sql = _migrated_hash_sql([f for f in multi_select if f in fields])
            con.execute(
                f"CREATE TEMP VIEW st AS SELECT pk, {hash_sql} AS hash, sf_id, status "
                f"FROM ({state_sql})"
            )
            if match_field is not None and match_field not in fields:
                match_field = None
            if callable(removed_candidates):
                removed_candidates = removed_candidates()
            if removed_candidates is not None:
                con.register("wh_removed_in", removed_candidates)
                con.execute(
                    "CREATE TABLE wh_removed AS SELECT pk::VARCHAR AS pk, "
                    "max(superseded)::INTEGER AS superseded FROM wh_removed_in GROUP BY 1"
                )
                con.unregister("wh_removed_in")
            _classify(
                con,
                detect_removed,
                match_field,
                match_case_sensitive,
                state_key=spk,
                partial=removed_candidates is not None,
            )
            _supersede(
                con, state_sql, match_field if detect_removed else None, match_case_sensitive
            )
            if removed_candidates is not None and detect_removed:
                # Keys the warehouse saw leave while a current row carries their record's
                # match key: forgotten, never deleted.
                con.execute(
                    f"""
                    INSERT INTO superseded
                    SELECT st.pk, st.sf_id FROM st JOIN wh_removed w ON w.pk = st.pk
                    WHERE w.superseded = 1 AND st.sf_id IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM src WHERE src.{spk} = st.pk)
                      AND st.pk NOT IN (SELECT __pk FROM superseded)
                    """
                )
            # Previous payloads of the first rows a human will be shown (sample_changes).
            con.execute(
                f"""
                CREATE TABLE prev AS
                WITH want AS (
                    SELECT s.{spk} AS pk FROM planned p JOIN src s ON s.rowid = p.__seq
                    WHERE p.__class IN ('changed', 'pending')
                    ORDER BY CASE p.__class WHEN 'changed' THEN 0 ELSE 1 END, p.__seq
                    LIMIT {SAMPLE_LIMIT}
                )
                SELECT pk, payload FROM ({state_sql}) WHERE pk IN (SELECT pk FROM want)
                """
            )
            if previous_payloads:
                # Only changed rows: added rows send every field, pending rows were refused
                # last time (Salesforce may not hold what state recorded), unchanged rows
                # are sent whole by --full-resync, which is what it is for.
                con.execute(
                    f"""
                    CREATE TABLE sent_before AS
                    SELECT p.__seq, x.payload FROM planned p JOIN src s ON s.rowid = p.__seq
                    JOIN ({state_sql}) x ON x.pk = s.{spk}
                    WHERE p.__class = 'changed' AND x.payload IS NOT NULL
                    """
                )
            state_rows, synced = con.sql(
                "SELECT count(*), count(*) FILTER (sf_id IS NOT NULL) FROM st"
            ).fetchall()[0]
            con.execute("DROP VIEW st")
        counts = dict.fromkeys(("rows", *CLASSES), 0)
        for cls, n in con.sql("SELECT __class, count(*) FROM planned GROUP BY ALL").fetchall():
            counts[cls] = n
        # Rows the warehouse engine kept back: unchanged, never fetched (a callable counts
        # them now that the source is read).
        if callable(unchanged_elsewhere):
            unchanged_elsewhere = unchanged_elsewhere()
        counts["unchanged"] += int(unchanged_elsewhere)
        counts["rows"] = sum(counts[c] for c in CLASSES if c != "removed")
        counts["removed"] = con.sql("SELECT count(*) FROM removed").fetchall()[0][0]
        counts["superseded"] = con.sql("SELECT count(*) FROM superseded").fetchall()[0][0]
        counts["state_rows"] = state_rows
        counts["state_synced"] = synced
        if warehouse_full is not None:
            con.execute(
                "CREATE TABLE warehouse_engine AS SELECT ?::BOOLEAN AS read_all, ?::BIGINT AS unchanged",
                [bool(warehouse_full), int(unchanged_elsewhere)],
            )
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        shutil.rmtree(db_dir, ignore_errors=True)
        raise
    return Plan(con, db_dir, fields, full_resync, counts, insert_only, redact, decimals)


def _migrated_hash_sql(multi_select: list[str]) -> str:
    """The state's hash as today's canonical form makes it.

    Multi-select values were once hashed in the order the warehouse gave them; they are
    now sorted, each once, empties dropped. A row synced then would look changed though
    Salesforce holds the same set, so the hash is re-computed from the payload state kept:
    the multi-select values put in order by text replacement (a key `"F":` occurs once
    outside strings, since quotes inside strings are escaped), the rest kept byte for
    byte. Only where the payload is what was hashed (not masked by `redact:`); a masked
    row that was out of order is sent once. Re-computing a canonical row is a no-op.
    """
    if not multi_select:
        return "hash"
    payload = "payload"
    for field in multi_select:
        member = _lit(json.dumps(field) + ":")
        old = f"json_extract_string(payload, {_lit('$.' + json.dumps(field))})"
        parts = f"list_filter(string_split({old}, ';'), lambda x: x <> '')"
        new = f"CASE WHEN len({parts}) > 0 THEN array_to_string(list_sort(list_distinct({parts})), ';') END"
        payload = (
            f"CASE WHEN {old} IS NULL THEN {payload} ELSE replace({payload}, "
            f"{member} || to_json({old})::VARCHAR, {member} || coalesce(to_json({new})::VARCHAR, 'null')) END"
        )
    return (
        f"CASE WHEN payload IS NOT NULL AND md5(payload) = hash THEN md5({payload}) ELSE hash END"
    )


def _match_key(expr: str, case_sensitive: bool) -> str:
    """A match field's value as Salesforce compares it."""
    return expr if case_sensitive else f"lower({expr})"


def _classify(
    con: duckdb.DuckDBPyConnection,
    detect_removed: bool,
    match_field: str | None = None,
    case_sensitive: bool = False,
    *,
    state_key: str = "__pk",
    partial: bool = False,
) -> None:
    """Tables ``planned`` (one row per source row: class, error, sf_id) and ``removed``.

    ``partial``: ``src`` holds only the rows the warehouse engine fetched; a record is
    removed only when the warehouse named its key as gone (table ``wh_removed``).

    ``state_key`` is the source column state's keys are compared with (the digest when
    state keeps digests); duplicates are found by the key itself, the same rows.

    With ``match_field``, rows whose match key (as Salesforce compares it) another row
    shares are invalid too: Salesforce would write them all to one record, the last one
    winning, or refuse them when they meet in one call.
    """
    con.execute(
        """
        CREATE TABLE dups AS
        SELECT __pk FROM src WHERE __pk IS NOT NULL GROUP BY __pk HAVING count(*) > 1
        """
    )
    if match_field is not None:
        key = _match_key(_q(match_field), case_sensitive)
        con.execute(
            f"""
            CREATE TABLE dupkeys AS
            SELECT {key} AS k FROM src WHERE {_q(match_field)} IS NOT NULL
            GROUP BY 1 HAVING count(*) > 1
            """
        )
        row_key = _match_key("s." + _q(match_field), case_sensitive)
        dup_join = f"LEFT JOIN dupkeys dk ON {row_key} = dk.k"
        compared = "" if case_sensitive else " (compared case-insensitively, as Salesforce does)"
        dup_code = f"WHEN dk.k IS NOT NULL THEN '{DUPLICATE_EXTERNAL_ID}'"
        # The value itself is in the reject's record (masked there when redacted).
        dup_message = (
            f"WHEN dk.k IS NOT NULL THEN 'Another row has the same {match_field} value"
            f"{compared}: Salesforce would write both to one record'"
        )
        dup_invalid = "OR dk.k IS NOT NULL"
    else:
        dup_join = dup_code = dup_message = dup_invalid = ""
    con.execute(
        f"""
        CREATE TABLE planned AS
        SELECT s.rowid AS __seq,
               CASE
                 WHEN s.__pk IS NULL THEN '{NULL_PRIMARY_KEY}'
                 WHEN d.__pk IS NOT NULL THEN '{DUPLICATE_PRIMARY_KEY}'
                 {dup_code}
                 ELSE s.__error_code
               END AS __error_code,
               CASE
                 WHEN s.__pk IS NULL THEN 'The primary key is null'
                 WHEN d.__pk IS NOT NULL
                   THEN 'The primary key ' || s.__pk || ' appears on more than one row'
                 {dup_message}
                 ELSE s.__error_message
               END AS __error_message,
               CASE
                 WHEN s.__pk IS NULL OR d.__pk IS NOT NULL OR s.__error_code IS NOT NULL
                   {dup_invalid}
                   THEN 'invalid'
                 WHEN st.pk IS NULL THEN 'added'
                 WHEN st.status = 'rejected' THEN 'pending'
                 WHEN st.hash IS NOT DISTINCT FROM s.__hash THEN 'unchanged'
                 ELSE 'changed'
               END AS __class,
               st.sf_id AS __sf_id
        FROM src s
        LEFT JOIN dups d ON s.__pk = d.__pk
        {dup_join}
        LEFT JOIN st ON s.{state_key} = st.pk
        """
    )
    con.execute("DROP TABLE IF EXISTS dupkeys")
    # Removed: records known to exist in Salesforce (an sf_id recorded by an earlier
    # sync; a later rejected update keeps it) whose key no longer appears at all.
    removed_where = "st.sf_id IS NOT NULL" if detect_removed else "FALSE"
    if detect_removed and partial:
        removed_where += " AND st.pk IN (SELECT pk FROM wh_removed WHERE superseded = 0)"
    con.execute(
        f"""
        CREATE TABLE removed AS
        SELECT st.pk AS __pk, st.sf_id AS __sf_id FROM st
        WHERE {removed_where} AND NOT EXISTS (SELECT 1 FROM src WHERE src.{state_key} = st.pk)
        """
    )
    con.execute("DROP TABLE dups")


def _supersede(
    con: duckdb.DuckDBPyConnection, state_sql: str, match_field: str | None, case_sensitive: bool
) -> None:
    """Move out of ``removed`` the records a current row still maps to by its match key
    (a regenerated primary key, a key whose case changed): table ``superseded``."""
    if match_field is None or match_field not in _src_columns(con):
        con.execute("CREATE TABLE superseded AS SELECT __pk, __sf_id FROM removed WHERE FALSE")
        return

    def canon(expr: str) -> str:
        return expr if case_sensitive else f"lower({expr})"

    old_key = canon(f"json_extract_string(p.payload, {_lit('$.' + _q(match_field))})")
    con.execute(
        f"""
        CREATE TABLE superseded AS
        SELECT r.__pk, r.__sf_id FROM removed r JOIN ({state_sql}) p ON p.pk = r.__pk
        WHERE {old_key} IN (
            SELECT {canon("s." + _q(match_field))} FROM src s
            JOIN planned pl ON pl.__seq = s.rowid WHERE pl.__class <> 'invalid'
        )
        """
    )
    con.execute("DELETE FROM removed WHERE __pk IN (SELECT __pk FROM superseded)")


def _src_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.sql("DESCRIBE src").fetchall()}


@contextmanager
def _state_relation(
    con: duckdb.DuckDBPyConnection,
    state: pa.Table | StateStore,
    work_dir: Path,
    *,
    payloads: bool = True,
) -> Iterator[str]:
    """SQL for the state (pk, hash, sf_id, status, payload; one row per pk, no deleted
    rows), valid inside the block: the store's Parquet files, or the registered table.
    Without ``payloads`` the store's payload column is not read (it shows as null)."""
    needed = ["pk", "hash", "sf_id", "status"] + (["payload"] if payloads else [])
    if isinstance(state, StateStore):
        # Keys in the store's form: clear keys of files written before the model redacted
        # its key are digested as read (the migration; compaction then writes digests).
        with state.folded(con, needed, work_dir=work_dir) as sql:
            if sql is not None:
                yield sql if payloads else f"SELECT *, NULL::VARCHAR AS payload FROM ({sql})"
                return
        state = empty_state()
    missing = [c for c in ("pk", "hash", "sf_id", "status") if c not in state.column_names]
    if missing:
        raise DiffError(f"state table lacks {', '.join(missing)}")
    if "payload" not in state.column_names:
        state = state.append_column("payload", pa.nulls(state.num_rows, pa.string()))
    con.register("state_in", state)
    try:
        # StateStore.load() gives one row per pk; a hand-made table might not, and a
        # repeated key would multiply source rows in the join.
        yield (
            "SELECT pk::VARCHAR AS pk, hash::VARCHAR AS hash, sf_id::VARCHAR AS sf_id, "
            "status::VARCHAR AS status, payload::VARCHAR AS payload FROM state_in "
            "WHERE status <> 'deleted' QUALIFY row_number() OVER (PARTITION BY pk) = 1"
        )
    finally:
        con.unregister("state_in")


def check_delete_rate(
    plan: Plan,
    *,
    max_delete_rate: float,
    model: str,
    synced_count: int | None = None,
    allow_deletes: bool = False,
    model_path: str | None = None,
    mask_keys: bool = False,
) -> None:
    """Refuse a mirror plan that would delete more than ``max_delete_rate`` of the synced
    records, so an empty or broken query cannot wipe Salesforce. ``synced_count`` defaults
    to the records the state knows as synced."""
    removed = plan.counts["removed"]
    synced = plan.counts["state_synced"] if synced_count is None else synced_count
    if allow_deletes or removed == 0:
        return
    rate = removed / synced if synced else 1.0
    if rate <= max_delete_rate:
        return
    cur = plan._con.cursor()
    try:
        examples = [
            r[0] for r in cur.sql("SELECT __pk FROM removed ORDER BY __pk LIMIT 5").fetchall()
        ]
    finally:
        cur.close()
    if mask_keys:  # the key maps to a `redact:` field
        examples = [REDACTED] * len(examples)
    where = model_path or f"models/{model}.yml"
    why = (
        "the query returned no rows"
        if plan.counts["rows"] == 0
        else f"the query returned {plan.counts['rows']} rows"
    )
    raise DeleteRateExceeded(
        f"{model}: refusing to delete {removed} of {synced} synced records ({rate:.1%}), "
        f"above max_delete_rate {max_delete_rate:.0%}; {why}. Keys that would be deleted "
        f"include: {', '.join(examples)}. If the query is right, raise max_delete_rate in "
        f"{where}, or run once with --allow-deletes (SF_ACTIVATION_ALLOW_DELETES=1).",
        model=model,
        removed=removed,
        synced=synced,
        max_delete_rate=max_delete_rate,
    )


__all__ = [
    "CLASSES",
    "DUPLICATE_PRIMARY_KEY",
    "DeleteRateExceeded",
    "DiffError",
    "NULL_PRIMARY_KEY",
    "Plan",
    "check_delete_rate",
    "decimal_fields",
    "payload_sql",
    "plan_changes",
]
