"""Start fast: which modules a sync loads, not how long it takes (that is bench/startup.py).

A DuckDB sync needs pyarrow and duckdb; it must not pay for pandas, SQLAlchemy, boto3,
simple-salesforce or dagster (together about 1 s of imports). Each check runs in a fresh
interpreter, since this one has imported everything already. Also here: the DuckDB URL
parser that stands in for SQLAlchemy's gives SQLAlchemy's answers, and keeping pyarrow
from importing pandas changes nothing a sync can see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from sf_activation.warehouse import Warehouse, WarehouseError
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.reliability import model_body
from sf_activation_tests.support.workspace import Workspace

HEAVY = ("pandas", "sqlalchemy", "boto3", "botocore", "simple_salesforce", "dagster")
# The packages, not their hundreds of submodules: a failure should read at a glance.
REPORT_HEAVY = (
    f"import sys; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
)


def _heavy_after(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> list:
    """The heavy modules loaded once `code` has run in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT_HEAVY}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_importing_the_sync_path_loads_no_heavy_module() -> None:
    assert _heavy_after("import sf_activation.sync") == []


def test_a_duckdb_warehouse_is_opened_without_sqlalchemy(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sf_activation.sync
        from sf_activation.warehouse import Warehouse
        with Warehouse.from_url("duckdb:///{tmp_path}/w.duckdb?read_only=false") as wh:
            list(wh.iter_batches("SELECT 1 AS a"))
        """
    )
    assert _heavy_after(code) == []


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _heavy_after("import sf_activation.cli") == []


def test_the_parser_of_other_commands_leaves_the_emulator_out() -> None:
    code = (
        "from sf_activation.cli import build_parser\n"
        "build_parser(with_emulator=False).parse_args(['sync', 'm'])\n"
        "assert 'sf_activation.emulator.server' not in sys.modules\n"
        "assert 'uvicorn' not in sys.modules\n"
    )
    assert _heavy_after(f"import sys\n{code}") == []


def test_a_sync_with_nothing_to_send_loads_no_heavy_module(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """The whole command, as `sf-activation sync` runs it: the run itself (pyarrow's first
    conversions, the describe call, the state) loads none of them either."""
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'ST-' || i AS account_id, 'Row ' || i AS name, "
        "i * 10.0 AS revenue, CAST(NULL AS VARCHAR) AS parent_id FROM range(30) t(i)"
    )
    ws.model("m", model_body("upsert", "composite"))
    assert ws.sync("m")["sent"] == 30
    code = "from sf_activation.cli import main\nassert main(['sync', 'm', '--json']) == 0\n"
    result = subprocess.run(
        [sys.executable, "-c", f"{code}{REPORT_HEAVY}"],
        env=ws.env,
        cwd=ws.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary_line, heavy_line = result.stdout.strip().splitlines()[-2:]
    summary = json.loads(summary_line)
    assert (summary["rows"], summary["sent"], summary["failed"]) == (30, 0, 0)
    assert heavy_line == "[]"


# --------------------------------------------------------------------------- pandas


def test_pyarrow_still_converts_pandas_objects_after_the_probe_is_skipped() -> None:
    """Skipping the probe answers "no pandas" only while none is imported: pandas imports
    later and pyarrow's pandas entry points find it."""
    code = textwrap.dedent(
        """
        import sys
        import pyarrow as pa
        import pyarrow.compute as pc
        from sf_activation.warehouse.pandas_probe import skip_pandas_probe

        assert skip_pandas_probe()
        pc.equal(pa.array(["a", ""]), "")  # pyarrow's usual first imports of pandas
        pa.scalar(None, pa.string())
        assert "pandas" not in sys.modules
        import pandas as pd

        table = pa.Table.from_pandas(pd.DataFrame({"t": [pd.NaT, pd.Timestamp(1, unit="ns")]}))
        assert table.column("t").null_count == 1, table
        assert pa.table({"a": [1, 2]}).to_pandas()["a"].tolist() == [1, 2]
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_source_with_nanoseconds_brings_pandas_back_before_its_values_convert(
    tmp_path: Path,
) -> None:
    """With pandas, pyarrow turns a nanosecond timestamp into a pd.Timestamp (without, a
    datetime, or an error when the nanoseconds do not round to microseconds): a source
    with such a column gets pandas, so its values convert as they always did."""
    code = textwrap.dedent(
        f"""
        import sys
        from sf_activation.warehouse import Warehouse
        from sf_activation.warehouse.pandas_probe import skip_pandas_probe

        assert skip_pandas_probe()
        url = "duckdb:///{tmp_path}/ns.duckdb?read_only=false"
        with Warehouse.from_url(url) as wh:
            list(wh.iter_batches("SELECT 1 AS a, TIMESTAMP '2024-01-01' AS t"))
            assert "pandas" not in sys.modules
            (batch,) = wh.iter_batches("SELECT TIMESTAMP_NS '2024-01-01 00:00:00.000000001' AS t")
        assert "pandas" in sys.modules
        value = batch.column("t")[0].as_py()
        assert type(value).__name__ == "Timestamp" and value.nanosecond == 1, repr(value)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- DuckDB URLs

DUCKDB_URLS = [
    "duckdb:///relative/path.duckdb",
    "duckdb:////absolute/path.duckdb",
    "duckdb:///:memory:",
    "duckdb://",
    "duckdb:///w.duckdb?read_only=false",
    "duckdb:///w.duckdb?read_only=0&read_only=1",
    "duckdb:///w.duckdb?token=s%3Dcret&b=two+words&a=",
    "duckdb:///dir with space/w.duckdb?x=%C3%A9",
    "duckdb://user:p%40ss@host:5432/db?password=x",
    "duckdb://user@[::1]:1/db",
    "duckdb://host/db",
    "duckdb+driver:///w.duckdb",
    "duckdb://:pw@/w.duckdb",
]


@pytest.mark.parametrize("text", DUCKDB_URLS)
def test_duckdb_urls_parse_as_sqlalchemy_parses_them(text: str) -> None:
    from sqlalchemy.engine import make_url

    from sf_activation.warehouse.url import LiteURL, parse_url

    ours, theirs = parse_url(text), make_url(text)
    assert isinstance(ours, LiteURL)
    for attr in ("drivername", "username", "password", "host", "port", "database"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert dict(ours.query) == dict(theirs.query)
    assert ours.get_backend_name() == theirs.get_backend_name()
    for hide in (True, False):
        assert ours.render_as_string(hide) == theirs.render_as_string(hide)
    masked = {k: "***" for k in theirs.query}
    assert ours.set(query=masked).render_as_string() == theirs.set(query=masked).render_as_string()
    assert str(ours) == str(theirs)


@pytest.mark.parametrize(
    "text",
    [
        "duckdb:///w.duckdb?read_only=false",
        "duckdb://u:secret-pw@h/w.duckdb",
        "duckdb:///w?token=s3",
    ],
)
def test_a_duckdb_warehouse_shows_its_url_as_before(text: str) -> None:
    from sqlalchemy.engine import make_url

    from sf_activation.warehouse.duckdb_backend import DuckDBWarehouse

    def shown(make: Callable[[], Warehouse]) -> str:
        try:
            return make().display_url
        except WarehouseError as exc:  # an unknown parameter: the message shows the URL
            return str(exc)

    ours = shown(lambda: Warehouse.from_url(text))
    assert ours == shown(lambda: DuckDBWarehouse(make_url(text)))
    assert "secret" not in ours


@pytest.mark.parametrize(
    "text", ["duckdb://h:port/w.duckdb", "duckdb://h:/w.duckdb", "not a url", "duckdb:/w"]
)
def test_a_bad_url_fails_as_before(text: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from sf_activation.warehouse.url import parse_url

    with pytest.raises((ArgumentError, ValueError)) as theirs:
        make_url(text)
    with pytest.raises(type(theirs.value)):
        parse_url(text)
    with pytest.raises(WarehouseError, match="cannot parse the warehouse URL"):
        Warehouse.from_url(text)


def test_other_urls_are_sqlalchemys() -> None:
    from sqlalchemy.engine import URL

    from sf_activation.warehouse.url import parse_url

    assert isinstance(parse_url("postgresql://u:p@h/db"), URL)
    assert isinstance(parse_url("snowflake://u@acct/db"), URL)
