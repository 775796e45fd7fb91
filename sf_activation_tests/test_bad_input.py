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
        ("object: Account\noperation: [upsert\n", ["m.yml", "YAML"]),  # malformed YAML
        ("object: Account\noperation: upsert\n", ["m.yml", "primary_key"]),  # incomplete
        (GOOD_MODEL.replace("primary_key", "primery_key"), ["m.yml", "primery_key"]),
        (GOOD_MODEL.replace("transport: composite", "transport: fast"), ["m.yml", "transport"]),
        (GOOD_MODEL.replace("query: SELECT", "sql: missing.sql\nquery: SELECT"), ["m.yml"]),
        ("- just\n- a list\n", ["m.yml"]),
        ("", ["m.yml"]),
    ],
    ids=["yaml", "incomplete", "unknown-key", "bad-value", "sql-and-query", "not-a-map", "empty"],
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
        (("object: Account", "object: Acount"), 1, ["Acount"]),
        (("name: Name", "name: Nmae"), 2, ["Nmae", "name"]),
        (("parent_id: Parent.External_Id__c", "parent_id: Parent.Nope__c"), 2, ["Nope__c"]),
        (("external_id: External_Id__c", "external_id: Name"), 2, ["Name"]),
    ],
    ids=["unknown-object", "unknown-field", "unknown-parent-field", "not-an-external-id"],
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
