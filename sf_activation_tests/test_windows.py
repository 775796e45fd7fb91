"""Partition windows are UTC instants, whatever the warehouse session's time zone.

A partitioned insert model synced window by window must send every row exactly once,
each in the window its UTC instant falls in, also when the session's time zone is not
UTC: DuckDB's follows the machine's (`TZ`, or `SET TimeZone`), Postgres' the server's
or the connection's (`SET TIME ZONE`, `-c timezone=`). The windows are read through the
real command (`sf-activation sync MODEL --window START..END`) and through the Dagster
assets, against the emulator over HTTPS, a real DuckDB file and a real PostgreSQL server.
What is asserted is what Salesforce holds after each window.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pytest
import sqlalchemy as sa

from sf_activation.models import ModelSpec, PartitionBy
from sf_activation.warehouse import Warehouse
from sf_activation.windows import (
    Window,
    bound_literal,
    partition_bounds,
    quote_column,
    restrict_to_window,
    to_utc,
    window_predicate,
)
from sf_activation_tests.support.postgres import postgres_url as postgres_url  # fixture
from sf_activation_tests.support.snowflake import fake_snowflake_server
from sf_activation_tests.support.workspace import Workspace

UTC = dt.UTC
ZONES = ["America/Los_Angeles", "Asia/Kolkata"]  # behind and ahead of UTC (by 8h, 5h30)

MODEL = """
object: Case
operation: insert
primary_key: event_id
query: >-
  SELECT event_id, subject, occurred_at, current_setting('TimeZone') AS session_zone
  FROM activity
fields:
  subject: Subject
  session_zone: Description
partition_by: {column: occurred_at, start: 2024-01-01, cadence: daily}
"""

# UTC instants. Windows: W1 = 2024-01-01, W2 = 2024-01-02, W3 = 2024-01-03 (UTC days).
ON_TIME = {
    "E-01": "2024-01-01 00:00:00",  # the first instant of W1
    "E-02": "2024-01-01 07:59:59",  # W1; still Dec 31 in Los Angeles
    "E-03": "2024-01-01 18:30:00",  # W1; already Jan 2 in Kolkata
    "E-04": "2024-01-01 23:59:59.999999",  # just before W1 ends; Jan 2 in Kolkata
    "E-05": "2024-01-02 00:00:00",  # the first instant of W2; Jan 1 in Los Angeles
    "E-07": "2024-01-02 23:59:59",  # W2; Jan 3 in Kolkata
    "E-08": "2024-01-03 00:00:00",  # W3
}
# Arrives after W1 was synced. W2 in UTC; still Jan 1 in Los Angeles, so a window read
# in the session's zone would have put it in W1, already synced: never sent.
LATE = {"E-06": "2024-01-02 05:00:00"}

W1, W2, W3 = "2024-01-01..2024-01-02", "2024-01-02..2024-01-03", "2024-01-03..2024-01-04"
AFTER_W1 = ["E-01", "E-02", "E-03", "E-04"]
AFTER_W2 = AFTER_W1 + ["E-05", "E-06", "E-07"]
AFTER_W3 = AFTER_W2 + ["E-08"]


def _held(emulator: Any) -> Counter[str]:
    """What Salesforce holds: how many Cases there are of each event."""
    return Counter(r["Subject"] for r in emulator.records("Case"))


def _once(events: list[str]) -> Counter[str]:
    return Counter({f"Event {e}": 1 for e in events})


def _zones(emulator: Any) -> set[str]:
    return {r["Description"] for r in emulator.records("Case")}


def _spec(column: str = "occurred_at", **partition: Any) -> ModelSpec:
    return ModelSpec(
        name="activity",
        path=Path("models/activity.yml"),
        object="Case",
        operation="insert",
        primary_key="event_id",
        external_id=None,
        sql_text="SELECT * FROM activity -- trailing comment\n;",
        sql_path=None,
        fields={"subject": "Subject"},
        transport="auto",
        bulk_threshold=10_000,
        schedule=None,
        dbt_models=[],
        max_reject_rate=0.05,
        nulls="clear",
        max_delete_rate=0.2,
        redact=[],
        partition_by=PartitionBy(column=column, **({"start": "2024-01-01"} | partition)),
        concurrency=8,
        description=None,
    )


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2024-01-01..2024-01-08", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 8)),
        (
            "2024-01-01T06:00:00..2024-01-01 12:30",
            dt.datetime(2024, 1, 1, 6),
            dt.datetime(2024, 1, 1, 12, 30),
        ),
        (
            "2024-01-01T00:00:00+02:00..2024-01-02T00:00:00+05:30",
            dt.datetime(2023, 12, 31, 22),
            dt.datetime(2024, 1, 1, 18, 30),
        ),
        (
            " 2024-01-01T00:00:00Z .. 2024-01-01T00:00:00.5-01:00 ",
            dt.datetime(2024, 1, 1),
            dt.datetime(2024, 1, 1, 1, 0, 0, 500_000),
        ),
    ],
)
def test_window_parses_dates_datetimes_and_offsets_into_utc(
    text: str, start: dt.datetime, end: dt.datetime
) -> None:
    window = Window.parse(text)
    assert (window.start, window.end) == (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
    assert window.start.tzinfo is UTC and window.end.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-01-01", "'2024-01-01' is not a window; expected START..END"),
        ("2024-01-01...2024-01-02", "END '.2024-01-02' is not an ISO date or datetime"),
        ("2024-13-01..2024-02-01", "START '2024-13-01' is not an ISO date or datetime"),
        ("yesterday..today", "START 'yesterday' is not an ISO date or datetime"),
        ("..2024-01-02", "START is missing in '..2024-01-02'"),
        ("2024-01-02..2024-01-01", "is inverted: END must be after START"),
        ("2024-01-01..2024-01-01", "is empty: END must be after START"),
        ("2024-01-01T02:00:00+02:00..2024-01-01", "is empty: END must be after START"),
    ],
)
def test_bad_window_is_one_line_naming_the_value_and_the_form(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Window.parse(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_partition_by_offsets_are_converted_to_utc_not_dropped() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    pb = PartitionBy(
        column="x",
        start=dt.datetime(2024, 1, 1, tzinfo=plus2),
        end=dt.datetime(2024, 2, 1, 5, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    )
    assert partition_bounds(pb) == (
        dt.datetime(2023, 12, 31, 22, tzinfo=UTC),
        dt.datetime(2024, 2, 1, tzinfo=UTC),
    )
    assert partition_bounds(PartitionBy(column="x", start=dt.date(2024, 1, 1))) == (
        dt.datetime(2024, 1, 1, tzinfo=UTC),
        None,
    )
    assert to_utc(dt.datetime(2024, 1, 1, 5)) == dt.datetime(2024, 1, 1, 5, tzinfo=UTC)


def test_literals_mean_the_same_instant_in_every_dialect() -> None:
    at = dt.datetime(2024, 1, 1, 6, 30, tzinfo=UTC)
    micro = dt.datetime(2024, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)
    expected = {
        ("duckdb", "timestamp"): "TIMESTAMP '2024-01-01 06:30:00'",
        ("duckdb", "timestamptz"): "TIMESTAMPTZ '2024-01-01 06:30:00+00'",
        ("postgresql", "timestamptz"): "TIMESTAMPTZ '2024-01-01 06:30:00+00'",
        ("snowflake", "timestamp"): "TO_TIMESTAMP_NTZ(1704090600, 0)",
        ("snowflake", "timestamptz"): "TO_TIMESTAMP_TZ(1704090600, 0)",
        ("bigquery", "timestamp"): "DATETIME '2024-01-01 06:30:00'",
        ("bigquery", "timestamptz"): "TIMESTAMP '2024-01-01 06:30:00+00:00'",
        ("generic", "timestamptz"): "TIMESTAMP WITH TIME ZONE '2024-01-01 06:30:00+00:00'",
        # A date is in a window when its UTC midnight is: 06:30 rounds up to the next day.
        ("postgresql", "date"): "DATE '2024-01-02'",
        ("snowflake", "date"): "DATE_FROM_PARTS(2024, 1, 2)",
        ("bigquery", "date"): "DATE '2024-01-02'",
    }
    for (dialect, kind), literal in expected.items():
        assert bound_literal(at, kind, dialect) == literal, (dialect, kind)
    assert bound_literal(micro, "timestamp", "snowflake") == "TO_TIMESTAMP_NTZ(1704067200250000, 6)"
    assert bound_literal(micro, "timestamptz", "duckdb") == (
        "TIMESTAMPTZ '2024-01-01 00:00:00.250000+00'"
    )
    assert bound_literal(dt.datetime(2024, 1, 1, tzinfo=UTC), "date", "duckdb") == (
        "DATE '2024-01-01'"
    )
    window = Window.parse("2024-01-01..2024-01-02")
    assert quote_column("occurred_at", "snowflake") == '"OCCURRED_AT"'
    assert quote_column("occurredAt", "snowflake") == '"occurredAt"'
    assert window_predicate("occurred_at", window, "timestamp", "bigquery") == (
        "`occurred_at` >= DATETIME '2024-01-01 00:00:00' "
        "AND `occurred_at` < DATETIME '2024-01-02 00:00:00'"
    )


def test_windows_module_does_not_import_dagster() -> None:
    code = "import sys, sf_activation.windows; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- DuckDB


@pytest.fixture
def workspace(tmp_path: Path, emulator: Any) -> Workspace:
    return Workspace(tmp_path / "project", emulator)


def _duckdb_activity(ws: Workspace, column_type: str, rows: dict[str, str]) -> None:
    ws.sql(
        "CREATE TABLE IF NOT EXISTS activity "
        f"(event_id VARCHAR, subject VARCHAR, occurred_at {column_type})"
    )
    suffix = "+00" if column_type == "TIMESTAMPTZ" else ""
    for event, instant in rows.items():
        ws.sql("INSERT INTO activity VALUES (?, ?, ?)", [event, f"Event {event}", instant + suffix])


def _sync_window(ws: Workspace, window: str, env: dict[str, str]) -> dict[str, Any]:
    summary = ws.sync("activity", "--window", window, env=env)
    assert summary["window"] == Window.parse(window).__str__()
    return summary


def _sync_three_windows(ws: Workspace, add_late: Any, env: dict[str, str]) -> None:
    """W1, then a late row arrives, W2, W3, and W1 again: each row sent once, each in
    the window of its UTC instant."""
    first = _sync_window(ws, W1, env)
    assert (first["rows"], first["succeeded"]) == (4, 4)
    assert _held(ws.emulator) == _once(AFTER_W1)

    add_late()
    second = _sync_window(ws, W2, env)
    assert (second["rows"], second["succeeded"]) == (3, 3)
    assert _held(ws.emulator) == _once(AFTER_W2)

    _sync_window(ws, W3, env)
    assert _held(ws.emulator) == _once(AFTER_W3)

    again = _sync_window(ws, W1, env)
    assert (again["rows"], again["unchanged"], again["sent"]) == (4, 4, 0)
    assert _held(ws.emulator) == _once(AFTER_W3)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("column_type", ["TIMESTAMPTZ", "TIMESTAMP"])
def test_duckdb_windows_in_a_non_utc_session_send_every_row_once(
    workspace: Workspace, zone: str, column_type: str
) -> None:
    # DuckDB's session time zone is the machine's: TZ for the command's process.
    env = {"TZ": zone}
    _duckdb_activity(workspace, column_type, ON_TIME)
    workspace.model("activity", MODEL)

    _sync_three_windows(workspace, lambda: _duckdb_activity(workspace, column_type, LATE), env)
    # The model's own SQL ran in the session's zone: it was not changed to read windows.
    assert _zones(workspace.emulator) == {zone}


@pytest.mark.parametrize("zone", ZONES)
def test_date_column_window_holds_the_dates_whose_utc_midnight_it_holds(
    workspace: Workspace, zone: str
) -> None:
    env = {"TZ": zone}
    workspace.sql(
        "CREATE TABLE activity AS SELECT 'D-' || i AS event_id, 'Event D-' || i AS subject, "
        "DATE '2024-01-01' + i::INTEGER AS occurred_at FROM range(6) t(i)"
    )  # D-0 on Jan 1 … D-5 on Jan 6
    workspace.model("activity", MODEL)

    assert workspace.sync("activity", "--window", W1, env=env)["succeeded"] == 1
    assert _held(workspace.emulator) == Counter({"Event D-0": 1})
    # Not aligned to the cadence (a manual backfill): the midnights of Jan 2 and Jan 3.
    summary = workspace.sync(
        "activity", "--window", "2024-01-01T12:00:00..2024-01-03T12:00:00", env=env
    )
    assert summary["succeeded"] == 2
    # Offsets: Jan 4 00:00 in Kolkata is Jan 3 18:30 UTC, so the Jan 4 midnight is inside.
    summary = workspace.sync(
        "activity", "--window", "2024-01-04T00:00:00+05:30..2024-01-05T00:00:00+05:30", env=env
    )
    assert summary["succeeded"] == 1
    assert _held(workspace.emulator) == Counter({f"Event D-{i}": 1 for i in range(4)})


def test_plan_with_a_window_reads_only_that_window(workspace: Workspace) -> None:
    _duckdb_activity(workspace, "TIMESTAMPTZ", ON_TIME)
    workspace.model("activity", MODEL)
    result = workspace.run("plan", "activity", "--window", W2, env={"TZ": ZONES[0]})
    assert "window: 2024-01-02T00:00:00Z..2024-01-03T00:00:00Z (of occurred_at)" in result.stdout
    assert "rows=2" in result.stdout and "added=2" in result.stdout
    assert workspace.emulator.records("Case") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["activity", "--window", "2024-01-01"], "--window: '2024-01-01' is not a window"),
        (["activity", "--window", "2024-01-01..soon"], "--window: END 'soon' is not an ISO"),
        (["activity", "--window", "2024-01-03..2024-01-02"], "is inverted"),
        (["activity", "--window", "2024-01-02..2024-01-02"], "is empty"),
        (["accounts", "--window", W1], "models/accounts.yml has no partition_by:"),
        (["text_column", "--window", W1], "partition_by.column: column 'occurred_at' is string"),
    ],
)
@pytest.mark.parametrize("command", ["sync", "plan"])
def test_bad_window_is_one_line_and_exit_2(
    workspace: Workspace, command: str, args: list[str], message: str
) -> None:
    _duckdb_activity(workspace, "TIMESTAMPTZ", ON_TIME)
    workspace.sql("CREATE TABLE texts AS SELECT 'T-1' AS event_id, '2024-01-01' AS occurred_at")
    workspace.model("activity", MODEL)
    workspace.model(
        "accounts",
        """
        object: Account
        operation: insert
        primary_key: event_id
        query: SELECT event_id, subject FROM activity
        fields: {subject: Name}
        """,
    )
    workspace.model(
        "text_column",
        """
        object: Case
        operation: insert
        primary_key: event_id
        query: SELECT event_id, event_id AS subject, occurred_at FROM texts
        fields: {subject: Subject}
        partition_by: {column: occurred_at, start: 2024-01-01}
        """,
    )
    result = workspace.run(command, *args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sf-activation: error: ")
    assert message in lines[0]
    assert workspace.emulator.records("Case") == []


# --------------------------------------------------------------------------- Postgres


@pytest.fixture(scope="module")
def pg_database(postgres_url: str) -> Iterator[str]:
    """A database of its own on the session's server (tables of any name, dropped after)."""
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS windows")
        conn.exec_driver_sql("CREATE DATABASE windows")
    url = sa.engine.make_url(postgres_url).set(database="windows")
    yield url.render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS windows WITH (FORCE)")
    engine.dispose()


def _pg_activity(url: str, column_type: str, rows: dict[str, str], *, create: bool) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if create:
            conn.exec_driver_sql("DROP TABLE IF EXISTS activity")
            conn.exec_driver_sql(
                f"CREATE TABLE activity (event_id text, subject text, occurred_at {column_type})"
            )
        # This connection's zone is the server's default (UTC); '+00' says UTC anyway.
        suffix = "+00" if column_type == "timestamptz" else ""
        for event, instant in rows.items():
            conn.execute(
                sa.text("INSERT INTO activity VALUES (:e, :s, CAST(:t AS " + column_type + "))"),
                {"e": event, "s": f"Event {event}", "t": instant + suffix},
            )
    engine.dispose()


def _in_zone(url: str, zone: str) -> str:
    """The URL with the connection's session time zone set (libpq's `options`)."""
    return f"{url}?options={quote(f'-c timezone={zone}', safe='')}"


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp"])
def test_postgres_windows_in_a_non_utc_session_send_every_row_once(
    workspace: Workspace, pg_database: str, zone: str, column_type: str
) -> None:
    url = _in_zone(pg_database, zone)
    with Warehouse.from_url(url) as wh:
        (batch,) = wh.iter_batches("SELECT current_setting('TimeZone') AS zone")
        assert batch.to_pylist() == [{"zone": zone}]
    _pg_activity(pg_database, column_type, ON_TIME, create=True)
    workspace.model("activity", MODEL)
    env = {"SF_ACTIVATION_WAREHOUSE_URL": url}

    _sync_three_windows(
        workspace, lambda: _pg_activity(pg_database, column_type, LATE, create=False), env
    )
    assert _zones(workspace.emulator) == {zone}


def test_postgres_date_column_windows(workspace: Workspace, pg_database: str) -> None:
    url = _in_zone(pg_database, "Asia/Kolkata")
    _pg_activity(
        pg_database,
        "date",
        {"D-1": "2024-01-01", "D-2": "2024-01-02", "D-3": "2024-01-03"},
        create=True,
    )
    workspace.model("activity", MODEL)
    env = {"SF_ACTIVATION_WAREHOUSE_URL": url}
    assert workspace.sync("activity", "--window", W1, env=env)["succeeded"] == 1
    assert (
        workspace.sync("activity", "--window", "2024-01-01T06:00..2024-01-04", env=env)["succeeded"]
        == 2
    )
    assert _held(workspace.emulator) == _once(["D-1", "D-2", "D-3"])


def test_restricting_reads_the_window_in_utc_whatever_the_session_zone(pg_database: str) -> None:
    """The Python API: the same rows from the same window in every session zone."""
    _pg_activity(pg_database, "timestamptz", ON_TIME | LATE, create=True)
    spec = _spec()
    window = Window.parse("2024-01-01T18:30:00..2024-01-02T05:00:00")
    for zone in ["UTC", *ZONES, "Pacific/Kiritimati"]:
        with Warehouse.from_url(_in_zone(pg_database, zone)) as wh:
            restricted = restrict_to_window(spec, window, wh)
            rows = [r for b in wh.iter_batches(restricted.sql_text) for r in b.to_pylist()]
        assert sorted(r["event_id"] for r in rows) == ["E-03", "E-04", "E-05"], zone


# --------------------------------------------------------------------------- Dagster


@pytest.fixture
def duckdb_session_zone(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every DuckDB connection of this process starts with `SET TimeZone = <zone>`."""
    real_connect = duckdb.connect

    def use(zone: str) -> None:
        def connect(*args: Any, **kwargs: Any) -> Any:
            con = real_connect(*args, **kwargs)
            con.execute(f"SET TimeZone = '{zone}'")
            return con

        monkeypatch.setattr(duckdb, "connect", connect)

    return use


class DagsterProject:
    """Model files and a DuckDB warehouse, materialized in process as the UI would."""

    def __init__(self, root: Path, emulator: Any) -> None:
        from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource

        self.ws = Workspace(root, emulator)
        self.resources = {
            "salesforce": SalesforceResource(
                instance_url=emulator.instance_url,
                access_token=emulator.access_token,
                ca_bundle=emulator.ca_bundle,
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=f"duckdb:///{self.ws.warehouse}",
                state_url=self.ws.state_url,
                rejects_url=self.ws.rejects_url,
            ),
        }

    def assets(self) -> list[Any]:
        from sf_activation.dagster.assets import build_model_assets
        from sf_activation.models import load_models

        return list(build_model_assets(load_models(self.ws.models)["activity"]))

    def partitions(self) -> Any:
        return self.assets()[0].partitions_def

    def materialize(self, partition_key: str) -> dict[str, Any]:
        import dagster as dg

        result = dg.materialize(
            self.assets(), resources=self.resources, partition_key=partition_key
        )
        (event,) = result.asset_materializations_for_node("salesforce__activity")
        return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def dagster_project(tmp_path: Path, emulator: Any) -> DagsterProject:
    return DagsterProject(tmp_path / "project", emulator)


@pytest.mark.parametrize("zone", ZONES)
def test_dagster_partitions_in_a_non_utc_session_send_every_row_once(
    dagster_project: DagsterProject, duckdb_session_zone: Any, zone: str
) -> None:
    project = dagster_project
    _duckdb_activity(project.ws, "TIMESTAMPTZ", ON_TIME)
    project.ws.model("activity", MODEL)
    duckdb_session_zone(zone)

    assert project.materialize("2024-01-01")["succeeded"] == 4
    assert _held(project.ws.emulator) == _once(AFTER_W1)
    _duckdb_activity(project.ws, "TIMESTAMPTZ", LATE)
    assert project.materialize("2024-01-02")["succeeded"] == 3
    assert _held(project.ws.emulator) == _once(AFTER_W2)
    assert project.materialize("2024-01-03")["succeeded"] == 1
    assert _held(project.ws.emulator) == _once(AFTER_W3)
    assert _zones(project.ws.emulator) == {zone}


@pytest.mark.parametrize(
    ("partition", "first_key", "sent"),
    [
        # 00:00 at +02:00 is 22:00 UTC the day before: the first hourly window.
        ("{column: occurred_at, start: 2024-01-01T00:00:00+02:00, cadence: hourly}",
         "2023-12-31-22:00", ["B-2200", "B-2259"]),
        # Daily windows are UTC days: the first one holds the start and reads from it.
        ("{column: occurred_at, start: 2024-01-01T00:00:00+02:00, cadence: daily}",
         "2023-12-31", ["B-2200", "B-2259", "B-2300"]),
    ],
)  # fmt: skip
def test_dagster_partitions_start_at_partition_by_start_converted_to_utc(
    dagster_project: DagsterProject, partition: str, first_key: str, sent: list[str]
) -> None:
    project = dagster_project
    _duckdb_activity(
        project.ws,
        "TIMESTAMPTZ",
        {
            "B-2159": "2023-12-31 21:59:59",  # before start: never sent
            "B-2200": "2023-12-31 22:00:00",
            "B-2259": "2023-12-31 22:59:59",
            "B-2300": "2023-12-31 23:00:00",
            "B-0000": "2024-01-01 00:00:00",
        },
    )
    project.ws.model(
        "activity", MODEL.replace(MODEL.splitlines()[-1], f"partition_by: {partition}")
    )
    keys = project.partitions().get_partition_keys(current_time=dt.datetime(2024, 1, 2, tzinfo=UTC))
    assert keys[0] == first_key

    project.materialize(first_key)
    assert _held(project.ws.emulator) == _once(sent)


# --------------------------------------------------------------------------- Snowflake


def test_snowflake_literals_run_against_the_snowflake_connector() -> None:
    """NTZ, LTZ, TZ and DATE partition columns through the real connector (fakesnow)."""
    import snowflake.connector as snowflake_connector

    with fake_snowflake_server() as kw:
        conn = snowflake_connector.connect(**kw)
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS analytics")
        cur.execute("CREATE SCHEMA IF NOT EXISTS analytics.marts")
        cur.execute("USE SCHEMA analytics.marts")
        cur.execute(
            "CREATE TABLE events (event_id VARCHAR, ntz TIMESTAMP_NTZ, ltz TIMESTAMP_LTZ, "
            "tz TIMESTAMP_TZ, d DATE)"
        )
        for event, instant in (ON_TIME | LATE).items():
            cur.execute(
                f"INSERT INTO events VALUES ('{event}', '{instant}', '{instant}+00', "
                f"'{instant}+00', '{instant[:10]}')"
            )
        conn.close()
        url = (
            f"snowflake://{kw['user']}:{kw['password']}@{kw['account']}/analytics/marts"
            f"?host={kw['host']}&port={kw['port']}&protocol={kw['protocol']}&network_timeout=5"
        )
        window = Window.parse("2024-01-01T18:30:00..2024-01-02T05:00:00")
        with Warehouse.from_url(url) as wh:
            for column in ("ntz", "ltz", "tz", "d"):
                sql = "SELECT events.*, event_id AS subject FROM events"
                spec = _spec(column).model_copy(update={"sql_text": sql})
                restricted = restrict_to_window(spec, window, wh)
                rows = [r for b in wh.iter_batches(restricted.sql_text) for r in b.to_pylist()]
                # The dates whose UTC midnight is in the window: Jan 2.
                expected = ["E-05", "E-06", "E-07"] if column == "d" else ["E-03", "E-04", "E-05"]
                assert sorted(r["event_id"] for r in rows) == expected, (column, restricted)


def test_window_summary_json_names_the_window(workspace: Workspace) -> None:
    _duckdb_activity(workspace, "TIMESTAMP", ON_TIME)
    workspace.model("activity", MODEL)
    out = workspace.run(
        "sync", "activity", "--json", "--window", "2024-01-01T00:00+02:00..2024-01-01T12:00"
    )
    assert json.loads(out.stdout)["window"] == "2023-12-31T22:00:00Z..2024-01-01T12:00:00Z"


@pytest.mark.parametrize("cadence", ["hourly", "daily", "weekly", "monthly"])
def test_dagster_partitions_cover_partition_by_from_start_to_end(cadence: str) -> None:
    """Unaligned start and end: the first and last partitions are the ones holding them
    (Dagster alone would start at the next boundary and skip the rows before it)."""
    from sf_activation.dagster.partitions import partitions_for

    plus2 = dt.timezone(dt.timedelta(hours=2))
    spec = _spec(
        start=dt.datetime(2024, 1, 10, 5, 30, tzinfo=plus2),
        end=dt.datetime(2024, 2, 20, 12, 15),
        cadence=cadence,
    )
    partitions = partitions_for(spec)
    assert partitions is not None
    keys = partitions.get_partition_keys(current_time=dt.datetime(2024, 6, 1, tzinfo=UTC))
    first = partitions.time_window_for_partition_key(keys[0])
    last = partitions.time_window_for_partition_key(keys[-1])
    start, end = partition_bounds(spec.partition_by)
    assert first.start <= start < first.end
    assert last.start < end <= last.end
