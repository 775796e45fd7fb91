"""The warehouse diff engine classifies every row as the local engine does, on every
warehouse, while reading only the rows that changed.

One scenario per operation (upsert, insert, update, delete, mirror) runs twice against
the emulator over HTTPS — once with `diff: local`, once with `diff: warehouse` — on a real
DuckDB file, a real PostgreSQL server, fakesnow's Snowflake server and the BigQuery
emulator. Each step's summary (every class count, what was sent, what Salesforce
refused), the reject codes, and what Salesforce holds at the end must be the same for
both engines. The warehouse engine must read no unchanged row once it is in step: a run
with nothing changed fetches only the rows that are never "unchanged" (invalid, refused).

The rows hold what makes the diff hard: a null key, a repeated key, a value that cannot
be coerced, two External IDs that differ only by case, a row Salesforce refuses until it
is fixed (pending), a key whose case changes (mirror: the record is kept, not deleted),
edits, deletions and additions.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from sf_activation.config import Settings
from sf_activation.models import load_model
from sf_activation.summary import SyncSummary
from sf_activation.sync import SyncRun
from sf_activation.warehouse import BIGQUERY_ENDPOINT_ENV
from sf_activation_tests.support.bqemulator import BigQueryEmulator
from sf_activation_tests.support.bqemulator import bq_emulator as bq_emulator  # noqa: F401
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.postgres import postgres_url as postgres_url
from sf_activation_tests.support.snowflake import fake_snowflake_server
from sf_activation_tests.support.workspace import Workspace


@dataclass
class Wh:
    """A warehouse for the scenario: its URL, a way to run SQL, its type names."""

    name: str
    url: str
    run: Callable[[str], None]
    query: Callable[[str], list[tuple[Any, ...]]]
    text: str = "VARCHAR"
    number: str = "INTEGER"


# --------------------------------------------------------------------------- warehouses


@contextlib.contextmanager
def _duckdb(tmp: Path) -> Iterator[Wh]:
    path = tmp / "warehouse.duckdb"

    def query(sql: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(path))
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    query("SELECT 1")
    # Read-only, as users configure it for the local engine: the engine opens its own
    # read-write connection for its tables.
    yield Wh("duckdb", f"duckdb:///{path}", query, query)


@pytest.fixture(scope="module")
def snowflake_kw() -> Iterator[dict[str, Any]]:
    with fake_snowflake_server() as kw:
        yield kw


def _snowflake(kw: dict[str, Any]) -> Wh:
    import snowflake.connector

    def run(sql: str) -> list[tuple[Any, ...]]:
        conn = snowflake.connector.connect(**kw)
        try:
            cur = conn.cursor()
            cur.execute("USE SCHEMA analytics.marts")
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    conn = snowflake.connector.connect(**kw)
    conn.cursor().execute("CREATE DATABASE IF NOT EXISTS analytics")
    conn.cursor().execute("CREATE SCHEMA IF NOT EXISTS analytics.marts")
    conn.close()
    url = (
        f"snowflake://{kw['user']}:{kw['password']}@{kw['account']}/analytics/marts"
        f"?host={kw['host']}&port={kw['port']}&protocol={kw['protocol']}&network_timeout=5"
    )
    return Wh("snowflake", url, run, run)


def _postgres(url: str) -> Wh:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)

    def run(sql: str) -> list[tuple[Any, ...]]:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(sql)
            return [tuple(r) for r in result] if result.returns_rows else []

    return Wh("postgres", url, run, run, text="TEXT")


def _bigquery(bq: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch) -> Wh:
    dataset = f"marts_{uuid.uuid4().hex[:8]}"
    bq.create_dataset(dataset)
    monkeypatch.setenv(BIGQUERY_ENDPOINT_ENV, bq.endpoint)

    def run(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in bq.sql(sql, dataset=dataset)]

    return Wh("bigquery", bq.url(dataset), run, run, text="STRING")


WAREHOUSES = ["duckdb", "postgres", "snowflake", "bigquery"]


@pytest.fixture(params=WAREHOUSES)
def wh(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Wh]:
    if request.param == "duckdb":
        with _duckdb(tmp_path) as w:
            yield w
    elif request.param == "postgres":
        yield _postgres(request.getfixturevalue("postgres_url"))
    elif request.param == "snowflake":
        yield _snowflake(request.getfixturevalue("snowflake_kw"))
    else:
        yield _bigquery(request.getfixturevalue("bq_emulator"), monkeypatch)


# --------------------------------------------------------------------------- scenario

BASE_ROWS = 24


def _row(i: int, name: str | None = None, emp: str | None = "10", ext: str | None = None) -> str:
    def lit(v: str | None) -> str:
        return "NULL" if v is None else "'" + v.replace("'", "''") + "'"

    return (
        f"({lit(f'K-{i:02d}')}, {lit(ext or f'E-{i:02d}')}, "
        f"{lit(name if name is not None else f'Name {i}')}, {lit(emp)})"
    )


class Scenario:
    """One warehouse table and one model file, synced step by step with one engine."""

    def __init__(
        self, tmp: Path, emulator: EmulatorHandle, wh: Wh, operation: str, engine: str
    ) -> None:
        self.wh = wh
        self.emulator = emulator
        self.operation = operation
        uid = uuid.uuid4().hex[:8]
        self.table = f"accounts_{uid}"
        self.ws = Workspace(tmp / f"{engine}-{uid}", emulator)
        t = wh.text
        wh.run(f"CREATE TABLE {self.table} (id {t}, ext {t}, name {t}, employees {t})")
        env = dict(ws_env := self.ws.env, SF_ACTIVATION_WAREHOUSE_URL=wh.url)
        del ws_env
        settings = Settings.from_env(env)
        self.settings = settings.model_copy(
            update={"warehouse_state_schema": f"sfa_{uid}" if engine == "warehouse" else None}
        )
        self.engine = engine
        key = "ext" if operation in ("update", "delete") else "id"
        fields = {
            "upsert": "  id: Description\n  ext: External_Id__c\n  name: Name\n  employees: NumberOfEmployees\n",
            "mirror": "  id: Description\n  ext: External_Id__c\n  name: Name\n  employees: NumberOfEmployees\n",
            "insert": "  id: Description\n  name: Name\n  employees: NumberOfEmployees\n",
            "update": "  ext: External_Id__c\n  name: Name\n  employees: NumberOfEmployees\n",
            "delete": "  ext: External_Id__c\n",
        }[operation]
        external = "" if operation == "insert" else "external_id: External_Id__c\n"
        self.ws.model(
            "accounts",
            f"object: Account\noperation: {operation}\nprimary_key: {key}\n{external}"
            f"query: SELECT id, ext, name, employees FROM {self.table}\n"
            f"transport: composite\nmax_reject_rate: 1\nmax_delete_rate: 1\n"
            f"diff: {engine}\nfields:\n{fields}",
        )

    def insert(self, *rows: str) -> None:
        self.wh.run(f"INSERT INTO {self.table} VALUES {', '.join(rows)}")

    def sql(self, statement: str) -> None:
        self.wh.run(statement.format(t=self.table))

    def sync(self) -> SyncSummary:
        spec = load_model(self.ws.models / "accounts.yml")
        return SyncRun(spec, self.settings).execute()


def _seed_records(emulator: EmulatorHandle, tmp: Path, wh: Wh) -> None:
    """update/delete models need records to exist: created here by an upsert model."""
    seed = Scenario(tmp, emulator, wh, "upsert", "local")
    seed.insert(*[_row(i) for i in range(BASE_ROWS)])
    assert seed.sync().succeeded == BASE_ROWS


def _steps(s: Scenario) -> Iterator[str]:
    """The scenario's edits, one step before each sync (yields the step's name)."""
    rows = [_row(i) for i in range(BASE_ROWS)]
    rows += [
        "(NULL, 'E-90', 'No key', '1')",  # NULL_PRIMARY_KEY
        _row(5, name="Repeated key"),  # K-05 twice: DUPLICATE_PRIMARY_KEY
        _row(30, emp="many"),  # not a number: invalid before sending
        _row(31, name=""),  # Name required: Salesforce refuses it (pending next run)
        _row(33, emp=None),  # synced with no employees, later a value that cannot be coerced
    ]
    if s.operation in ("upsert", "mirror"):
        rows.append(_row(32, ext="e-10"))  # E-10 and e-10: one record, both invalid
    s.insert(*rows)
    yield "first load"
    yield "nothing changed"
    s.sql("UPDATE {t} SET name = 'Renamed 3' WHERE id = 'K-03'")
    s.sql("UPDATE {t} SET employees = '77' WHERE id = 'K-04'")
    s.sql("DELETE FROM {t} WHERE id IN ('K-06', 'K-07')")
    s.sql("UPDATE {t} SET name = 'Fixed 31' WHERE id = 'K-31'")  # the refused row, fixed
    s.sql("UPDATE {t} SET id = 'k-08' WHERE id = 'K-08'")  # its key's case changes
    # Invalid now, though what it would send (no employees) is what Salesforce holds: it is
    # reported invalid on every run, by both engines.
    s.sql("UPDATE {t} SET employees = 'lots' WHERE id = 'K-33'")
    s.insert(_row(40), _row(41))
    yield "edits"
    yield "nothing changed again"


def _schema_of(tmp: Path) -> str:
    (ws,) = [p for p in tmp.iterdir() if p.name.startswith("warehouse-")]
    return ws.name.removeprefix("warehouse-")


def _log_files(tmp: Path) -> list[tuple[str, Any, Any, int]]:
    """The warehouse engine's log files beside its state, grouped as the SQL above."""
    import pyarrow.parquet as pq

    (ws,) = [p for p in tmp.iterdir() if p.name.startswith("warehouse-")]
    counts: dict[tuple[str, Any, Any], int] = {}
    for f in (ws / "state" / "accounts" / "sync_log").rglob("*.parquet"):
        for r in pq.read_table(f).to_pylist():
            k = (r["run_id"], r["outcome"], r["error_code"])
            counts[k] = counts.get(k, 0) + 1
    assert counts
    return sorted((*k, n) for k, n in counts.items())


def _record_view(emulator: EmulatorHandle) -> list[tuple[Any, ...]]:
    return sorted(
        (r.get("External_Id__c"), r.get("Description"), r.get("Name"), r.get("NumberOfEmployees"))
        for r in emulator.records("Account")
    )


COUNTS = (
    "rows", "invalid", "added", "changed", "unchanged", "pending", "removed", "to_send",
    "sent", "succeeded", "failed", "deleted", "superseded",
)  # fmt: skip


def _outcome(summary: SyncSummary) -> dict[str, Any]:
    out: dict[str, Any] = {c: getattr(summary, c) for c in COUNTS}
    out["reject_codes"] = dict(sorted(summary.reject_codes.items()))
    return out


def _run(
    tmp: Path, emulator: EmulatorHandle, wh: Wh, operation: str, engine: str
) -> tuple[list[dict[str, Any]], list[SyncSummary], list[tuple[Any, ...]]]:
    emulator.reset()
    if operation in ("update", "delete"):
        _seed_records(emulator, tmp, wh)
    s = Scenario(tmp, emulator, wh, operation, engine)
    outcomes, summaries = [], []
    for _step in _steps(s):
        summary = s.sync()
        summaries.append(summary)
        outcomes.append(_outcome(summary))
    return outcomes, summaries, _record_view(emulator)


@pytest.mark.parametrize("operation", ["upsert", "insert", "update", "delete", "mirror"])
def test_both_engines_classify_and_land_the_same_rows(
    tmp_path: Path, emulator: EmulatorHandle, wh: Wh, operation: str
) -> None:
    local, _, local_records = _run(tmp_path, emulator, wh, operation, "local")
    remote, summaries, remote_records = _run(tmp_path, emulator, wh, operation, "warehouse")
    for step, (a, b) in enumerate(zip(local, remote, strict=True)):
        assert b == a, f"step {step}: warehouse engine {b} != local engine {a}"
    assert remote_records == local_records
    assert {s.diff_engine for s in summaries} == {"warehouse"}

    first, quiet, edits, quiet_again = summaries
    assert first.full_read_reason is not None  # nothing in the warehouse yet
    assert first.rows_fetched == first.rows
    # In step: only rows that can never be unchanged leave the warehouse.
    for run in (quiet, quiet_again):
        assert run.full_read_reason is None
        assert run.rows_fetched == run.rows - run.unchanged
        assert run.rows_fetched <= 8
        # Only rows Salesforce refused are sent again (pending; an update's rows whose
        # record does not exist are never recorded, so they count as added), by both.
        assert run.changed == 0 and run.to_send == run.added + run.pending
    assert edits.full_read_reason is None
    assert edits.rows_fetched < edits.rows / 2
    if operation in ("upsert", "mirror"):
        assert edits.reject_codes.get("DUPLICATE_EXTERNAL_ID") == 2

    # The warehouse engine's models also log every row to <schema>.sync_log: the same
    # rows as the log files beside the state, so failures join to the model's data.
    schema = f"sfa_{_schema_of(tmp_path)}"
    assert {s.sync_log_table for s in summaries} == {f"{schema}.sync_log"}
    logged = wh.query(
        f"SELECT run_id, outcome, error_code, COUNT(*) FROM {schema}.sync_log "
        "GROUP BY run_id, outcome, error_code"
    )
    assert sorted((str(r[0]), r[1], r[2], int(r[3])) for r in logged) == _log_files(tmp_path)


def test_a_kill_during_the_write_back_reads_everything_once_and_sends_nothing_twice(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    with _duckdb(tmp_path) as w:
        s = Scenario(tmp_path, emulator, w, "upsert", "warehouse")
        s.insert(*[_row(i) for i in range(BASE_ROWS)])
        env = {**s.ws.env, "SF_ACTIVATION_WAREHOUSE_URL": w.url}
        env["SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA"] = s.settings.warehouse_state_schema or ""
        s.ws.env = env
        assert s.ws.sync("accounts")["succeeded"] == BASE_ROWS
        s.sql("UPDATE {t} SET name = 'Renamed 1' WHERE id = 'K-01'")
        # SIGKILL with the engine's rows written but its model not marked in step.
        s.ws.env = {**env, "SF_ACTIVATION_TEST_KILL_AT": "warehouse_write_back"}
        killed = s.ws.run("sync", "accounts", "--json", check=False)
        assert killed.returncode == -9, killed.stderr
        s.ws.env = env
        after = s.ws.sync("accounts")
        assert after["full_read_reason"] is not None
        assert (after["rows_fetched"], after["sent"]) == (BASE_ROWS, 0)
        again = s.ws.sync("accounts")
        assert (again["full_read_reason"], again["rows_fetched"], again["sent"]) == (None, 0, 0)
        names = [(r["External_Id__c"], r["Name"]) for r in emulator.records("Account")]
        assert len(names) == BASE_ROWS  # nothing created twice
        assert ("E-01", "Renamed 1") in names


def test_postgres_grants_the_docs_list_are_enough_and_too_few_say_so(
    tmp_path: Path, emulator: EmulatorHandle, postgres_url: str
) -> None:
    from sqlalchemy.engine import make_url

    from sf_activation.warehouse_diff import WarehouseDiffError

    admin = _postgres(postgres_url)
    uid = uuid.uuid4().hex[:8]
    role, schema = f"sfa_role_{uid}", f"sfa_{uid}"
    # docs/warehouses.md, "The warehouse diff engine": read the model's tables, and use
    # and create in one schema of its own; no right to create schemas.
    admin.run(f"CREATE ROLE {role} LOGIN PASSWORD 'role-pass-{uid}'")
    as_role = make_url(postgres_url).set(username=role, password=f"role-pass-{uid}")
    wh = Wh("postgres", as_role.render_as_string(hide_password=False), admin.run, admin.query)
    s = Scenario(tmp_path, emulator, wh, "upsert", "warehouse")
    s.insert(*[_row(i) for i in range(BASE_ROWS)])
    admin.run(f"GRANT SELECT ON {s.table} TO {role}")
    admin.run(f"CREATE SCHEMA {schema}")
    s.settings = s.settings.model_copy(update={"warehouse_state_schema": schema})

    # Without CREATE on its schema: one line naming the schema and the way out; nothing sent.
    admin.run(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    with pytest.raises(WarehouseDiffError, match=f"schema {schema}.*diff: local") as refused:
        s.sync()
    assert "\n" not in str(refused.value) and f"role-pass-{uid}" not in str(refused.value)
    assert emulator.records("Account") == []

    admin.run(f"GRANT CREATE ON SCHEMA {schema} TO {role}")
    first = s.sync()
    assert (first.succeeded, first.diff_engine) == (BASE_ROWS, "warehouse")
    quiet = s.sync()
    assert (quiet.rows_fetched, quiet.sent, quiet.unchanged) == (0, 0, BASE_ROWS)
    assert admin.query(f"SELECT count(*) FROM {schema}.sync_log")[0][0] == BASE_ROWS


def test_a_staged_plan_of_the_warehouse_engine_is_sent_and_written_back_by_the_send_step(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    with _duckdb(tmp_path) as w:
        s = Scenario(tmp_path, emulator, w, "upsert", "warehouse")
        s.insert(*[_row(i) for i in range(BASE_ROWS)])
        assert s.sync().succeeded == BASE_ROWS
        s.sql("UPDATE {t} SET name = 'Renamed 2' WHERE id IN ('K-02', 'K-12')")
        spec = load_model(s.ws.models / "accounts.yml")
        # What Dagster's two steps do: warehouse/<model> stages, salesforce/<model> adopts.
        staged = SyncRun(spec, s.settings, run_id="run-1").stage()
        assert (staged.rows_fetched, staged.changed, staged.diff_engine) == (2, 2, "warehouse")
        sent = SyncRun(spec, s.settings, run_id="run-1", use_staged_plan=True).execute()
        assert (sent.plan_source, sent.rows_fetched, sent.succeeded) == ("staged", 2, 2)
        assert sent.diff_engine == "warehouse" and sent.full_read_reason is None
        after = s.sync()  # the send step's write-back left the tables in step
        assert (after.full_read_reason, after.rows_fetched, after.sent) == (None, 0, 0)
        names = {r["External_Id__c"]: r["Name"] for r in emulator.records("Account")}
        assert names["E-02"] == names["E-12"] == "Renamed 2" and len(names) == BASE_ROWS


def test_switching_engines_either_way_sends_nothing_that_did_not_change(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    with _duckdb(tmp_path) as w:
        s = Scenario(tmp_path, emulator, w, "mirror", "local")
        s.insert(*[_row(i) for i in range(BASE_ROWS)])
        assert s.sync().succeeded == BASE_ROWS
        model = s.ws.models / "accounts.yml"
        schema = f"sfa_sw_{uuid.uuid4().hex[:6]}"
        s.settings = s.settings.model_copy(update={"warehouse_state_schema": schema})
        calls = emulator.stats()["api_calls"]

        # local -> warehouse: one full read, re-baselined without a write call.
        model.write_text(model.read_text().replace("diff: local", "diff: warehouse"))
        first = s.sync()
        assert first.full_read_reason is not None
        assert (first.rows_fetched, first.sent, first.deleted) == (BASE_ROWS, 0, 0)
        assert s.sync().rows_fetched == 0
        # warehouse -> local, after a change made while on the warehouse engine.
        s.sql("UPDATE {t} SET name = 'Renamed 5' WHERE id = 'K-05'")
        assert s.sync().succeeded == 1
        model.write_text(model.read_text().replace("diff: warehouse", "diff: local"))
        back = s.sync()
        assert (back.diff_engine, back.rows_fetched, back.sent, back.deleted) == (
            "local", BASE_ROWS, 0, 0,
        )  # fmt: skip
        # ... and to the warehouse again with nothing committed in between: still in step.
        model.write_text(model.read_text().replace("diff: local", "diff: warehouse"))
        s.sql("UPDATE {t} SET name = 'Renamed 6' WHERE id = 'K-06'")
        again = s.sync()
        assert (again.full_read_reason, again.rows_fetched, again.succeeded) == (None, 1, 1)
        # A commit made under the local engine moves the state on: one full read.
        model.write_text(model.read_text().replace("diff: warehouse", "diff: local"))
        s.sql("UPDATE {t} SET name = 'Renamed 7' WHERE id = 'K-07'")
        assert s.sync().succeeded == 1
        model.write_text(model.read_text().replace("diff: local", "diff: warehouse"))
        moved = s.sync()
        assert moved.full_read_reason is not None and "moved on" in moved.full_read_reason
        assert (moved.rows_fetched, moved.sent, moved.deleted) == (BASE_ROWS, 0, 0)
        assert s.sync().rows_fetched == 0
        writes = emulator.stats()["api_calls"] - calls
        assert writes <= 16  # describes and three single-record updates, nothing more
        names = {r["External_Id__c"]: r["Name"] for r in emulator.records("Account")}
        assert [names[f"E-0{i}"] for i in (5, 6, 7)] == ["Renamed 5", "Renamed 6", "Renamed 7"]
        assert len(names) == BASE_ROWS


def test_diff_warehouse_without_its_schema_is_one_line_and_sends_nothing(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    with _duckdb(tmp_path) as w:
        s = Scenario(tmp_path, emulator, w, "upsert", "warehouse")
        s.insert(*[_row(i) for i in range(3)])
        s.ws.env["SF_ACTIVATION_WAREHOUSE_URL"] = w.url
        result = s.ws.run("sync", "accounts", check=False)
        assert result.returncode == 1, result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "diff: warehouse needs SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA" in lines[0]
        assert "accounts.yml" in lines[0] and "diff: local" in lines[0]
        assert emulator.records("Account") == []
        bad = s.ws.run(
            "sync", "accounts", check=False, env={"SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA": "a-b"}
        )
        assert bad.returncode != 0 and "SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA='a-b'" in bad.stderr
        assert len([ln for ln in bad.stderr.splitlines() if ln.strip()]) == 1, bad.stderr
