"""Bad input, each with a clear message and nothing lost: broken model files, SQL errors,
unreachable warehouse or Salesforce, wrong or expired credentials, unknown objects and
fields, hostile values (too long, wrong type, NaN, infinity, 200 KB, emoji, right-to-left,
NUL, CSV metacharacters, formula prefixes, `#N/A`), duplicate external ids, a rejects store
or state store that cannot be written. The real command runs in a subprocess against the
emulator over HTTPS; docs/reliability.md lists every case and its outcome."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.reliability import (
    assert_promise_kept,
    create_accounts,
    model_body,
)
from sf_activation_tests.support.s3 import s3_server, s3_url  # noqa: F401
from sf_activation_tests.support.workspace import Workspace

GOOD_MODEL = model_body("upsert", "composite")


@pytest.fixture
def ws(tmp_path: Path, emulator: EmulatorHandle) -> Workspace:
    return Workspace(tmp_path / "ws", emulator)


def _one_line_error(result: Any, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines and lines[0].startswith("sf-activation: error: "), result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("object: Account\noperation: [upsert\n", ["m.yml", "YAML"], id="yaml"),
        pytest.param(
            "object: Account\noperation: upsert\n", ["m.yml", "primary_key"], id="incomplete"
        ),
        pytest.param(
            GOOD_MODEL.replace("primary_key", "primery_key"),
            ["m.yml", "primery_key"],
            id="unknown-key",
        ),
        pytest.param(
            GOOD_MODEL.replace("transport: composite", "transport: fast"),
            ["m.yml", "transport"],
            id="bad-value",
        ),
        pytest.param(
            GOOD_MODEL.replace("query: SELECT", "sql: missing.sql\nquery: SELECT"),
            ["m.yml"],
            id="sql-and-query",
        ),
        pytest.param("- just\n- a list\n", ["m.yml"], id="not-a-map"),
        pytest.param("", ["m.yml"], id="empty"),
    ],
)
def test_model_file_mistakes_name_the_file_and_key_and_send_nothing(
    ws: Workspace, body: str, expected: list[str]
) -> None:
    create_accounts(ws, 5)
    ws.model("m", body)
    stderr = _one_line_error(ws.run("sync", "m", check=False), 2)
    for text in expected:
        assert text.lower() in stderr.lower(), stderr
    assert ws.write_calls() == 0


def test_sql_error_names_the_problem_and_sends_nothing(ws: Workspace) -> None:
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL.replace("SELECT account_id, name", "SELECT account_id, nmae"))
    stderr = _one_line_error(ws.run("sync", "m", check=False), 1)
    assert "warehouse" in stderr and "nmae" in stderr
    assert ws.write_calls() == 0


def test_unreachable_warehouse_fails_with_the_password_masked(ws: Workspace) -> None:
    ws.model("m", GOOD_MODEL)
    env = {"SF_ACTIVATION_WAREHOUSE_URL": "postgresql://etl:hunter2-Secret@127.0.0.1:1/dw"}
    stderr = _one_line_error(ws.run("sync", "m", check=False, env=env), 1)
    assert "warehouse" in stderr and "127.0.0.1" in stderr
    assert "hunter2-Secret" not in stderr
    assert ws.write_calls() == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_salesforce_fails_with_one_line_and_the_rows_stay_pending(
    ws: Workspace,
) -> None:
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL)
    env = {"SALESFORCE_INSTANCE_URL": f"https://127.0.0.1:{_closed_port()}"}
    stderr = _one_line_error(ws.run("sync", "m", check=False, env=env), 1)
    assert "Salesforce" in stderr and "127.0.0.1" in stderr
    assert ws.emulator.access_token not in stderr
    # Nothing was recorded: the next run with Salesforce back sends everything.
    assert_promise_kept(ws, ws.sync("m"))


def test_wrong_credentials_and_an_expired_refresh_token_stop_before_sending(
    tmp_path: Path,
) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"client_id": "the-app", "refresh_token": "valid-refresh-123"}))
    with start_emulator(tmp_path / "emu", "--credentials", str(creds)) as handle:
        ws = Workspace(tmp_path / "ws", handle, auth="refresh_token")
        create_accounts(ws, 5)
        ws.model("m", GOOD_MODEL)
        cases = {
            "expired refresh token": {
                "SALESFORCE_CLIENT_ID": "the-app",
                "SALESFORCE_REFRESH_TOKEN": "revoked-refresh-456",
            },
            "wrong client id": {
                "SALESFORCE_CLIENT_ID": "another-app",
                "SALESFORCE_REFRESH_TOKEN": "valid-refresh-123",
            },
        }
        for name, env in cases.items():
            stderr = _one_line_error(ws.run("sync", "m", check=False, env=env), 1)
            assert "refused the refresh_token login" in stderr, (name, stderr)
            assert "revoked-refresh-456" not in stderr and "valid-refresh-123" not in stderr
            assert "client-secret-value-for-tests" not in stderr
        # A ready session whose token the org never issued.
        ws.use_emulator(handle)
        bogus = "00D000000000001!" + "A" * 60
        stderr = _one_line_error(
            ws.run("sync", "m", check=False, env={"SALESFORCE_ACCESS_TOKEN": bogus}), 1
        )
        assert "access token was refused" in stderr and bogus not in stderr
        assert handle.records("Account") == []
        # With the right credentials the same model lands.
        ws.use_emulator(handle, auth="refresh_token")
        ok = {"SALESFORCE_CLIENT_ID": "the-app", "SALESFORCE_REFRESH_TOKEN": "valid-refresh-123"}
        assert ws.sync("m", env=ok)["succeeded"] == 5


@pytest.mark.parametrize(
    ("change", "code", "expected"),
    [
        pytest.param(("object: Account", "object: Acount"), 1, ["Acount"], id="unknown-object"),
        pytest.param(("name: Name", "name: Nmae"), 2, ["Nmae", "name"], id="unknown-field"),
        pytest.param(
            ("parent_id: Parent.External_Id__c", "parent_id: Parent.Nope__c"),
            2,
            ["Nope__c"],
            id="unknown-parent-field",
        ),
        pytest.param(
            ("external_id: External_Id__c", "external_id: Name"),
            2,
            ["Name"],
            id="not-an-external-id",
        ),
    ],
)
def test_unknown_object_or_field_stops_before_sending(
    ws: Workspace, change: tuple[str, str], code: int, expected: list[str]
) -> None:
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL.replace(*change))
    stderr = _one_line_error(ws.run("sync", "m", check=False), code)
    for text in expected:
        assert text in stderr
    assert ws.write_calls() == 0


HOSTILE = [
    # (pk, name, revenue, description, expected: "lands" or the reject code)
    ("nan", "n", float("nan"), None, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ("inf", "i", float("inf"), None, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ("-inf", "ni", float("-inf"), None, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ("200kb", "big", 1.0, "x" * 200_000, "STRING_TOO_LONG"),
    ("long-name", "n" * 256, 1.0, None, "STRING_TOO_LONG"),
    ("30kb", "mid", 1.0, "y" * 30_000, "lands"),
    ("emoji-rtl", "😀 שלום عربى ‮mixed‬", 1.0, "مرحبا 👋", "lands"),
    ("nul", "a\x00b", 1.0, "c\x00d", "lands"),
    ("csv", 'a,"b"\nc', 1.0, 'x\r\ny,"z"', "lands"),
    ("formula-eq", '=HYPERLINK("http://x")', 1.0, "+1+1", "lands"),
    ("formula-at", "@SUM(A1)", 1.0, "-2-2", "lands"),
    ("na-literal", "#N/A", 1.0, "#N/A", "lands"),
    ("spaces", "  padded  ", 1.0, "\ttab", "lands"),
]


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_hostile_values_land_exactly_or_are_rejected_with_a_reason(
    ws: Workspace, transport: str
) -> None:
    ws.sql("CREATE TABLE t (id VARCHAR, name VARCHAR, rev DOUBLE, descr VARCHAR)")
    for pk, name, revenue, description, _ in HOSTILE:
        ws.sql("INSERT INTO t VALUES (?, ?, ?, ?)", [pk, name, revenue, description])
    # Also a number arriving as text that is not a number.
    ws.sql("CREATE TABLE t2 AS SELECT id, name, CAST(rev AS VARCHAR) AS rev, descr FROM t")
    ws.sql("INSERT INTO t2 VALUES ('not-a-number', 'x', 'twelve', NULL)")
    ws.model(
        "v",
        f"""
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        query: SELECT id, name, rev, descr FROM t2
        transport: {transport}
        fields:
          id: External_Id__c
          name: Name
          rev: AnnualRevenue
          descr: Description
        """,
    )
    summary = ws.sync("v")

    expected = {pk: outcome for pk, _, _, _, outcome in HOSTILE}
    expected["not-a-number"] = "INVALID_TYPE_ON_FIELD_IN_RECORD"
    rejects = {r["primary_key"]: r for r in ws.rejects(summary)}
    assert {pk: r["error_code"] for pk, r in rejects.items()} == {
        pk: code for pk, code in expected.items() if code != "lands"
    }
    assert all(r["message"] for r in rejects.values())
    held = ws.records_by("Account")
    assert set(held) == {pk for pk, outcome in expected.items() if outcome == "lands"}
    for pk, name, _, description, outcome in HOSTILE:
        if outcome == "lands":
            # NUL characters are dropped, as a real org drops them on save.
            assert held[pk]["Name"] == name.replace("\x00", ""), pk
            assert held[pk]["Description"] == description.replace("\x00", ""), pk
    assert summary["rows"] == summary["succeeded"] + summary["rejected"]
    # Nothing changed, nothing re-sent: the canonical payload survives the round trip.
    assert ws.sync("v")["succeeded"] == 0


def test_duplicate_external_ids_in_one_batch_are_each_accounted_for(ws: Workspace) -> None:
    """Two rows (distinct primary keys) naming the same external id in one call."""
    ws.sql(
        "CREATE TABLE t AS SELECT 'row-' || i AS row_id, 'E-' || (i % 150) AS ext, "
        "'Name ' || i AS name FROM range(200) t(i)"
    )
    ws.model(
        "d",
        """
        object: Account
        operation: upsert
        primary_key: row_id
        external_id: External_Id__c
        query: SELECT row_id, ext, name FROM t
        transport: composite
        fields:
          ext: External_Id__c
          name: Name
        """,
    )
    summary = ws.sync("d")
    rejects = ws.rejects(summary)
    assert summary["rows"] == 200 == summary["succeeded"] + summary["rejected"]
    held = ws.records_by("Account")
    # Salesforce refuses every record of a call that repeats an external id; the others land.
    assert set(held) == {f"E-{i}" for i in range(50, 150)}
    assert {r["primary_key"] for r in rejects} == {
        f"row-{i}" for i in [*range(50), *range(150, 200)]
    }
    assert {r["error_code"] for r in rejects} == {"DUPLICATE_EXTERNAL_ID"}
    assert all(r["message"] for r in rejects)


def test_rejects_bucket_missing_fails_the_run_and_the_rejects_are_not_lost(
    tmp_path: Path,
    emulator: EmulatorHandle,
    s3_url: str,  # noqa: F811
) -> None:
    ws = Workspace(tmp_path / "ws", emulator, "s3://no-such-bucket-sf-activation/rejects")
    create_accounts(ws, 50)
    ws.model("m", GOOD_MODEL)
    stderr = _one_line_error(ws.run("sync", "m", check=False), 1)
    assert "rejects" in stderr and "NoSuchBucket" in stderr
    # The rows Salesforce refused stay pending and the invalid rows are re-planned: the
    # next run, with a store that works, writes every one of them.
    ws.env["SF_ACTIVATION_REJECTS_URL"] = ws.rejects_url = f"{s3_url}/rejects"
    assert_promise_kept(ws, ws.sync("m"))


def test_rejects_store_not_writable_fails_the_run_and_the_rejects_are_not_lost(
    ws: Workspace,
) -> None:
    blocker = ws.root / "not-a-dir"
    blocker.write_text("a file where the rejects directory should be")
    create_accounts(ws, 50)
    ws.model("m", GOOD_MODEL)
    env = {"SF_ACTIVATION_REJECTS_URL": str(blocker / "rejects")}
    stderr = _one_line_error(ws.run("sync", "m", check=False, env=env), 1)
    assert "rejects store" in stderr and "is not writable" in stderr
    # Found before anything was sent, not after the rows landed.
    assert ws.write_calls() == 0 and ws.emulator.records("Account") == []
    assert_promise_kept(ws, ws.sync("m"))


def test_state_store_not_writable_fails_the_run_and_a_fixed_rerun_converges(
    ws: Workspace,
) -> None:
    blocker = ws.root / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    create_accounts(ws, 450)
    ws.model("m", GOOD_MODEL)
    env = {"SF_ACTIVATION_STATE_URL": str(blocker / "state")}
    stderr = _one_line_error(ws.run("sync", "m", check=False, env=env), 1)
    assert "state store" in stderr and "is not writable" in stderr
    # Found before anything was sent: no record landed whose commit could not be saved.
    assert ws.write_calls() == 0 and ws.emulator.records("Account") == []
    assert_promise_kept(ws, ws.sync("m"))


# -- one exact line on stderr, nothing sent, nothing lost ---------------------------------


def _exactly(result: Any, code: int, line: str) -> None:
    """The command failed with `code` and said exactly `line`, on one line of stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == f"sf-activation: error: {line}\n", result.stderr


def _nothing_written(ws: Workspace) -> None:
    """No write reached Salesforce and no state was made (a start-up refusal)."""
    assert ws.write_calls() == 0
    assert ws.emulator.records("Account") == []
    assert not Path(ws.state_url).exists()


BAD_SETTINGS = [
    pytest.param(
        "SALESFORCE_API_VERSION",
        "abc",
        "SALESFORCE_API_VERSION='abc' is not an API version: expected a number such as 62.0 "
        "(default 62.0)",
        id="api-version",
    ),
    pytest.param(
        "SF_ACTIVATION_MAX_API_USAGE",
        "lots",
        "SF_ACTIVATION_MAX_API_USAGE='lots' is not a number: expected a number > 0 and <= 1 "
        "(default 0.8)",
        id="api-usage-word",
    ),
    pytest.param(
        "SF_ACTIVATION_MAX_API_USAGE",
        "-1",
        "SF_ACTIVATION_MAX_API_USAGE='-1' is out of range: expected a number > 0 and <= 1 "
        "(default 0.8)",
        id="api-usage-negative",
    ),
    pytest.param(
        "SF_ACTIVATION_MAX_API_USAGE",
        "0",
        "SF_ACTIVATION_MAX_API_USAGE='0' is out of range: expected a number > 0 and <= 1 "
        "(default 0.8)",
        id="api-usage-zero",
    ),
    pytest.param(
        "SF_ACTIVATION_MAX_API_USAGE",
        "80",
        "SF_ACTIVATION_MAX_API_USAGE='80' is out of range: expected a number > 0 and <= 1 "
        "(default 0.8)",
        id="api-usage-percent",
    ),
    pytest.param(
        "SF_ACTIVATION_MAX_API_USAGE",
        "nan",
        "SF_ACTIVATION_MAX_API_USAGE='nan' is out of range: expected a number > 0 and <= 1 "
        "(default 0.8)",
        id="api-usage-nan",
    ),
    pytest.param(
        "SF_ACTIVATION_COMMIT_ROWS",
        "abc",
        "SF_ACTIVATION_COMMIT_ROWS='abc' is not a whole number: expected a whole number >= 1 "
        "(default 2000)",
        id="commit-rows-word",
    ),
    pytest.param(
        "SF_ACTIVATION_COMMIT_ROWS",
        "0",
        "SF_ACTIVATION_COMMIT_ROWS='0' is out of range: expected a whole number >= 1 "
        "(default 2000)",
        id="commit-rows-zero",
    ),
    pytest.param(
        "SF_ACTIVATION_COMMIT_ROWS",
        "1.5",
        "SF_ACTIVATION_COMMIT_ROWS='1.5' is not a whole number: expected a whole number >= 1 "
        "(default 2000)",
        id="commit-rows-fraction",
    ),
    pytest.param(
        "SALESFORCE_READ_TIMEOUT_S",
        "soon",
        "SALESFORCE_READ_TIMEOUT_S='soon' is not a number: expected a number > 0 (default 300)",
        id="read-timeout-word",
    ),
    pytest.param(
        "SALESFORCE_READ_TIMEOUT_S",
        "0",
        "SALESFORCE_READ_TIMEOUT_S='0' is out of range: expected a number > 0 (default 300)",
        id="read-timeout-zero",
    ),
    pytest.param(
        "SF_ACTIVATION_LEASE_TTL_S",
        "0",
        "SF_ACTIVATION_LEASE_TTL_S='0' is out of range: expected a number > 0 (default 120)",
        id="lease-ttl-zero",
    ),
    pytest.param(
        "SF_ACTIVATION_LEASE_WAIT_S",
        "-5",
        "SF_ACTIVATION_LEASE_WAIT_S='-5' is out of range: expected a number >= 0 (default 0)",
        id="lease-wait-negative",
    ),
    pytest.param(
        "SF_ACTIVATION_OBJECT_WAIT_S",
        "forever",
        "SF_ACTIVATION_OBJECT_WAIT_S='forever' is not a number: expected a number >= 0 "
        "(default 3600)",
        id="object-wait-word",
    ),
    pytest.param(
        "SF_ACTIVATION_UNKNOWN_OUTCOME_GRACE_S",
        "-1",
        "SF_ACTIVATION_UNKNOWN_OUTCOME_GRACE_S='-1' is out of range: expected a number >= 0 "
        "(default 900)",
        id="grace-negative",
    ),
    pytest.param(
        "SF_ACTIVATION_PLAN_MEMORY",
        "lots",
        "SF_ACTIVATION_PLAN_MEMORY='lots' is not a memory size: write it as DuckDB does, "
        "e.g. 512MB or 2GB (default 1GB)",
        id="plan-memory",
    ),
    pytest.param(
        "SALESFORCE_INSTANCE_URL",
        "{instance}/services/data/v62.0",
        "SALESFORCE_INSTANCE_URL='{instance}/services/data/v62.0' has a path: it should be "
        "the instance root ({instance}), without /services/data/…",
        id="instance-url-with-rest-path",
    ),
    pytest.param(
        "SALESFORCE_INSTANCE_URL",
        "acme.my.salesforce.com",
        "SALESFORCE_INSTANCE_URL='acme.my.salesforce.com' is not a URL: expected the "
        "instance root, e.g. https://acme.my.salesforce.com",
        id="instance-url-without-scheme",
    ),
]


@pytest.mark.parametrize(("name", "value", "line"), BAD_SETTINGS)
def test_a_bad_setting_is_refused_at_start_up_in_one_line_naming_it(
    ws: Workspace, name: str, value: str, line: str
) -> None:
    """Exit 2 before anything is read, sent or written: a value out of range (an API share
    of -1) would otherwise make every scheduled run send nothing and exit 0."""
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL)
    instance = ws.emulator.instance_url
    env = {name: value.format(instance=instance)}
    _exactly(ws.run("sync", "m", check=False, env=env), 2, line.format(instance=instance))
    _nothing_written(ws)


def test_rejects_of_an_unknown_model_is_one_line_and_exit_2_like_plan(ws: Workspace) -> None:
    models = ws.models
    for command in ("plan", "rejects"):
        _exactly(
            ws.run(command, "nosuchmodel", check=False),
            2,
            f"no model 'nosuchmodel': {models / 'nosuchmodel.yml'} does not exist",
        )
    assert ws.write_calls() == 0


def test_a_query_failing_part_way_is_one_warehouse_line_and_sends_nothing(ws: Workspace) -> None:
    """The cast fails on row 150,000, long after the first batch: DuckDB, reading the
    batches itself, wrapped the error with a Python traceback in its text."""
    ws.sql("CREATE TABLE t AS SELECT 'P-' || i AS id, i FROM range(200000) t(i)")
    ws.model(
        "m",
        """
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        query: >-
          SELECT id, CASE WHEN i < 150000 THEN 'ok' ELSE CAST(CAST('zz' || i AS INTEGER)
          AS VARCHAR) END AS name FROM t
        fields:
          id: External_Id__c
          name: Name
        """,
    )
    line = (
        f"warehouse: query failed (duckdb:///{ws.warehouse}): Conversion Error: "
        "Could not convert string 'zz150000' to INT32"
    )
    for command in ("plan", "sync"):
        _exactly(ws.run(command, "m", check=False), 1, line)
    assert ws.write_calls() == 0 and ws.emulator.records("Account") == []
    # No row was recorded as synced: the next run, with the query fixed, sends them all.
    model_state = Path(ws.state_url) / "m"
    assert not (model_state / "snapshot.parquet").exists()
    assert not [p for p in (model_state / "commits").glob("**/*") if p.is_file()]


@pytest.mark.parametrize("command", [pytest.param("plan"), pytest.param("sync")])
def test_a_corrupt_snapshot_names_the_state_and_the_way_out(ws: Workspace, command: str) -> None:
    create_accounts(ws, 20)
    ws.model("m", GOOD_MODEL)
    ws.sync("m")
    snapshot = Path(ws.state_url) / "m" / "snapshot.parquet"
    if not snapshot.exists():  # fold the commits into a snapshot
        ws.sync("m")
    assert snapshot.exists()
    snapshot.write_bytes(b"not parquet")
    state_before = {p: p.read_bytes() for p in Path(ws.state_url).rglob("*") if p.is_file()}
    writes, held = ws.write_calls(), ws.records_by("Account")
    where = f"{ws.state_url}/m"
    _exactly(
        ws.run(command, "m", check=False),
        1,
        f"state: the state of m in {where} cannot be read (Parquet magic bytes not found in "
        "footer. Either the file is corrupted or this is not a parquet file.); restore it from "
        f"a backup, or move {where} aside and rerun (every row is then planned as new: upsert "
        "and mirror match Salesforce's records by their External ID, insert refuses without "
        "--allow-reinsert)",
    )
    # Nothing sent, and the state left as it was for the user to restore or move aside.
    assert ws.write_calls() == writes and ws.records_by("Account") == held
    for path, body in state_before.items():
        if path.name != "lease.lock":
            assert path.read_bytes() == body, path


def test_a_refused_token_endpoint_names_the_host_and_the_reason(ws: Workspace) -> None:
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL)
    port = _closed_port()
    ws.use_emulator(ws.emulator, auth="refresh_token")
    env = {"SALESFORCE_LOGIN_URL": f"https://127.0.0.1:{port}"}
    _exactly(
        ws.run("sync", "m", check=False, env=env),
        1,
        f"Salesforce: cannot reach the Salesforce token endpoint https://127.0.0.1:{port}"
        "/services/oauth2/token: connection refused (nothing listens at that host and port)",
    )
    assert ws.write_calls() == 0


def test_an_unknown_host_is_named_with_the_reason(ws: Workspace) -> None:
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL)
    env = {"SALESFORCE_INSTANCE_URL": "https://sf-activation-no-such-host.invalid"}
    _exactly(
        ws.run("sync", "m", check=False, env=env),
        1,
        "Salesforce: GET https://sf-activation-no-such-host.invalid/services/data/v62.0/"
        "sobjects/Account/describe failed: host name not found (DNS): check the URL's host",
    )
    assert ws.write_calls() == 0


def test_validate_says_missing_credentials_once_for_every_model(ws: Workspace) -> None:
    create_accounts(ws, 5)
    for name in ("a", "b", "c"):
        ws.model(name, GOOD_MODEL)
    env = {"SALESFORCE_INSTANCE_URL": "", "SALESFORCE_ACCESS_TOKEN": ""}
    result = ws.run("validate", check=False, env=env)
    assert result.returncode == 2, result
    assert result.stdout == (
        "ERR a, b, c: no Salesforce credentials: set SALESFORCE_INSTANCE_URL + "
        "SALESFORCE_ACCESS_TOKEN, or a refresh token, JWT key, password or client credentials\n"
    )
    assert ws.write_calls() == 0


def test_no_temporary_file_outlives_the_command(ws: Workspace) -> None:
    """The CA bundle merged with the public roots (SALESFORCE_CA_BUNDLE) was left behind
    in $TMPDIR by every command: 230 KB each."""
    create_accounts(ws, 5)
    ws.model("m", GOOD_MODEL)
    tmp = ws.root / "tmp"
    tmp.mkdir()
    for command in ("validate", "plan", "sync"):
        args = (command,) if command == "validate" else (command, "m")
        ws.run(*args, env={"TMPDIR": str(tmp)})
        assert sorted(p.name for p in tmp.iterdir()) == [], command


@pytest.mark.parametrize("command", ["validate", "sync"])
def test_a_ca_bundle_that_is_not_a_certificate_is_named_in_one_line(
    ws: Workspace, command: str
) -> None:
    create_accounts(ws, 3)
    ws.model("m", GOOD_MODEL)
    bundle = ws.root / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    args = (command,) if command == "validate" else (command, "m")
    result = ws.run(*args, check=False, env={"SALESFORCE_CA_BUNDLE": str(bundle)})
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    text = result.stdout + result.stderr
    assert "SALESFORCE_CA_BUNDLE" in text and str(bundle) in text, text
    assert ws.write_calls() == 0
