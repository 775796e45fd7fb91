"""Exactly once when answers are lost, downloads fail, runs overlap or are interrupted.

Every test runs the real command against the emulator over HTTPS, with faults that fire
*after* Salesforce applied the request (`lost`: the answer never comes back;
`bulk_results`: a finished job's results cannot be downloaded), kills at the ledger's
points, signals and overlapping runs. The promise checked at the end: Salesforce holds
exactly one record per valid row with the right values, a later change updates those
records (none is created again), and the summaries account for every row.

Insert models carry their primary key in `Description`, which is not unique, so a
duplicate create shows instead of being refused by a unique index; one insert model maps
the unique `External_Id__c`, which the reconciliation then matches on exactly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sf_activation.lease import ModelLease
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.reliability import (
    ORPHANS,
    TokenRenewer,
    assert_promise_kept,
    create_accounts,
    expected_valid,
    model_body,
)
from sf_activation_tests.support.s3 import s3_server, s3_url  # noqa: F401
from sf_activation_tests.support.workspace import Workspace

pytestmark = pytest.mark.slow

ROWS = 600  # three full sObject Collections calls and a short one; one Bulk job
BASE_FAULTS = "bulk_seconds=1"
# Rows whose create got no answer and that Salesforce does not hold are released this
# long after the call (the emulator has applied or refused a request by the time the
# client gives up on it).
FAST_GRACE = {"SF_ACTIVATION_UNKNOWN_OUTCOME_GRACE_S": "1"}  # as the Workspace sets it


@pytest.fixture(scope="module")
def emulator_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with start_emulator(
        tmp_path_factory.mktemp("once"), "--faults", BASE_FAULTS, "--latency-ms", "1"
    ) as handle:
        yield handle


@pytest.fixture
def ws(tmp_path: Path, emulator_once: EmulatorHandle) -> Iterator[Workspace]:
    emulator_once.set_faults(BASE_FAULTS)
    emulator_once.reset()
    workspace = Workspace(tmp_path / "ws", emulator_once)
    workspace.env.update(FAST_GRACE)
    yield workspace
    emulator_once.set_faults(BASE_FAULTS)


def _key_field(operation: str, unique: bool = False) -> str:
    return "External_Id__c" if operation != "insert" or unique else "Description"


def _model(
    ws: Workspace, operation: str, transport: str, *, key_field: str, extra: str = ""
) -> None:
    ws.model(
        "m",
        model_body(operation, transport, key_field=key_field, extra=f"concurrency: 2\n{extra}"),
    )


def _settle(ws: Workspace, *, reruns: int = 2, env: dict[str, str] | None = None) -> list[dict]:
    """Rerun while rows are pending or held (at most `reruns` times)."""
    runs = [ws.sync("m", env=env)]
    while _unsettled(runs[-1]) and len(runs) <= reruns:
        time.sleep(1.2)  # past FAST_GRACE
        runs.append(ws.sync("m", env=env))
    return runs


def _unsettled(summary: dict[str, Any]) -> bool:
    return bool(summary["retried"] or summary["stopped_reason"] or summary.get("unconfirmed"))


def _assert_accounted(summary: dict[str, Any]) -> None:
    s = summary
    assert s["sent"] == s["succeeded"] + s["failed"] + s["retried"], s
    assert s["rows"] == s["invalid"] + s["added"] + s["changed"] + s["unchanged"] + s["pending"]


def _assert_exactly_once(ws: Workspace, runs: list[dict], key_field: str, operation: str) -> None:
    for summary in runs:
        _assert_accounted(summary)
    assert_promise_kept(ws, runs[-1], key_field=key_field, operation=operation)
    assert runs[-1].get("unconfirmed", 0) == 0
    # A later change to the rows updates the records Salesforce holds; none is created.
    before = {r["Id"] for r in ws.emulator.records("Account")}
    ws.sql("UPDATE accounts SET name = name || ' v2' WHERE account_id LIKE 'R-1%'")
    changed = ws.sync("m")
    _assert_accounted(changed)
    assert changed["changed"] > 0 and changed["retried"] == 0
    held = ws.records_by("Account", key_field)
    assert {r["Id"] for r in ws.emulator.records("Account")} == before
    want = expected_valid(ws)
    assert all(held[pk]["Name"] == name for pk, (name, _) in want.items())


def _seed_for_update(ws: Workspace) -> None:
    create_accounts(ws, ROWS, name="Before")
    ws.model("seed", model_body("upsert", "composite"))
    assert ws.sync("seed")["retried"] == 0


@pytest.mark.parametrize("transport", ["composite", "bulk"])
@pytest.mark.parametrize(
    ("operation", "unique"),
    [("insert", False), ("insert", True), ("upsert", False), ("update", False)],
)
def test_answers_lost_after_salesforce_applied_them_create_nothing_twice(
    ws: Workspace, operation: str, unique: bool, transport: str
) -> None:
    key_field = _key_field(operation, unique)
    if operation == "update":
        _seed_for_update(ws)
    create_accounts(ws, ROWS)
    _model(ws, operation, transport, key_field=key_field)
    # Half of the write requests are applied and then their connection is closed.
    ws.emulator.set_faults(f"{BASE_FAULTS},lost=0.5", seed=1)
    first = ws.sync("m")
    lost = ws.emulator.stats()["faults"]["lost"]
    ws.emulator.set_faults(BASE_FAULTS)
    assert lost >= 1, f"the fault never fired: the test would prove nothing: {first}"
    runs = [first, *(_settle(ws) if _unsettled(first) else [])]
    _assert_exactly_once(ws, runs, key_field, operation)
    if operation == "insert" and transport == "composite":
        # Found by asking Salesforce in the same run, not by sending again. Only the
        # orphans, which Salesforce refused, cannot be found: held until the grace ends.
        assert first["succeeded"] == ROWS and first["unconfirmed"] <= len(ORPHANS), first


def test_answers_slower_than_the_read_timeout_create_nothing_twice(ws: Workspace) -> None:
    create_accounts(ws, ROWS)
    _model(ws, "insert", "composite", key_field="Description")
    # Salesforce applies the creates at once but answers after the client gave up.
    ws.emulator.set_faults(f"{BASE_FAULTS},slow=0.5,slow_seconds=3", seed=1)
    first = ws.sync("m", env={"SALESFORCE_READ_TIMEOUT_S": "1"})
    slow = ws.emulator.stats()["faults"]["slow"]
    ws.emulator.set_faults(BASE_FAULTS)
    assert slow >= 1, first
    assert first["succeeded"] == ROWS and first["unconfirmed"] <= len(ORPHANS), first
    runs = [first, *(_settle(ws) if _unsettled(first) else [])]
    _assert_exactly_once(ws, runs, "Description", "insert")


def test_bulk_results_that_cannot_be_downloaded_are_read_again_not_inserted_again(
    ws: Workspace,
) -> None:
    create_accounts(ws, ROWS)
    _model(ws, "insert", "bulk", key_field="Description")
    ws.emulator.set_faults(f"{BASE_FAULTS},bulk_results=1")
    first = ws.sync("m")
    ws.emulator.set_faults(BASE_FAULTS)
    # The job ran; its outcome is unknown to the client: held and explained, not re-sent.
    assert first["unconfirmed"] == ROWS + len(ORPHANS), first
    assert len(ws.emulator.records("Account")) == ROWS
    held = [r for r in ws.rejects(first) if r["error_code"] == "OUTCOME_UNKNOWN"]
    assert len(held) == ROWS + len(ORPHANS) and all(
        first["bulk_job_ids"][0] in r["message"] for r in held
    )
    second = ws.sync("m")
    # The created rows are learned from the job; the orphans it refused are sent again
    # and refused again, with their reason in this run's reject file.
    assert second["reconciled"] == ROWS and second["sent"] == len(ORPHANS), second
    _assert_exactly_once(ws, [first, second], "Description", "insert")


@pytest.mark.parametrize(
    ("point", "transport", "faults"),
    [
        ("ledger_recorded:2", "composite", ""),
        ("after_send_before_commit:2", "composite", ""),
        # An entry left by a run killed between a create call and its commit: deterministic,
        # where lost answers could all be reconciled within the run that lost them.
        ("ledger_resolved:1", "composite", "kill:after_send_before_commit:1"),
        ("bulk_job_recorded:1", "bulk", ""),
        ("bulk_job_polling:1", "bulk", ""),
        ("ledger_resolved:1", "bulk", ",bulk_results=1"),
    ],
)
def test_sigkill_at_every_ledger_point_then_reruns_converge_without_duplicates(
    ws: Workspace, point: str, transport: str, faults: str
) -> None:
    create_accounts(ws, ROWS)
    _model(ws, "insert", transport, key_field="Description")
    if faults.startswith("kill:"):
        # An entry to resolve: a run killed after a create call, before its commit.
        first = ws.run(
            "sync", "m", "--json", check=False,
            env={"SF_ACTIVATION_TEST_KILL_AT": faults.removeprefix("kill:")},
        )  # fmt: skip
        assert first.returncode == -signal.SIGKILL, first.stderr
        time.sleep(1.2)  # the killed run's lease lapses (local flock: at once)
    elif point.startswith("ledger_resolved"):
        # An entry to resolve: a run whose results were unreadable.
        ws.emulator.set_faults(BASE_FAULTS + faults, seed=1)
        ws.sync("m")
        ws.emulator.set_faults(BASE_FAULTS)
    killed = ws.run("sync", "m", "--json", check=False, env={"SF_ACTIVATION_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    time.sleep(1.2)
    runs = _settle(ws)
    _assert_exactly_once(ws, runs, "Description", "insert")


def test_an_error_in_the_middle_of_a_send_keeps_what_salesforce_confirmed(
    ws: Workspace, emulator_once: EmulatorHandle
) -> None:
    # A retry of records that hit a lock fails on an expired session: the records the
    # first attempt created must still be recorded, or the rerun creates them again.
    renewer = TokenRenewer(emulator_once)
    create_accounts(ws, 4000)
    _model(ws, "insert", "composite", key_field="Description")
    renewer.renew()
    ws.use_emulator(emulator_once)  # a bare access token: it cannot be renewed
    emulator_once.set_faults(f"{BASE_FAULTS},lock=0.3,session_ttl=3", seed=5)
    try:
        failed = ws.run("sync", "m", "--json", check=False)
    finally:
        renewer.renew()
        emulator_once.set_faults(BASE_FAULTS)
    assert failed.returncode == 1 and "Salesforce" in failed.stderr, failed.stderr
    landed = len(emulator_once.records("Account"))
    assert landed > 0
    ws.use_emulator(emulator_once)
    runs = _settle(ws)
    _assert_exactly_once(ws, runs, "Description", "insert")


def test_a_raised_error_mid_stream_hands_back_the_calls_in_flight(ws: Workspace) -> None:
    create_accounts(ws, 2000)
    _model(ws, "insert", "composite", key_field="Description")
    failed = ws.run(
        "sync", "m", "--json", check=False, env={"SF_ACTIVATION_TEST_RAISE_AT": "before_send:1"}
    )
    assert failed.returncode == 1 and "test hook" in failed.stderr
    runs = _settle(ws)
    _assert_exactly_once(ws, runs, "Description", "insert")


# -- signals, overlapping runs, a store that cannot be written, Salesforce going away -------


@pytest.fixture(scope="module")
def slow_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with start_emulator(tmp_path_factory.mktemp("slow"), "--latency-ms", "300") as handle:
        yield handle


@pytest.fixture
def slow_ws(tmp_path: Path, slow_emulator: EmulatorHandle) -> Workspace:
    slow_emulator.reset()
    workspace = Workspace(tmp_path / "slow", slow_emulator)
    workspace.env.update(FAST_GRACE)
    return workspace


def _start_sync(ws: Workspace, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sf_activation", "sync", "m", "--json"],
        env={**ws.env, **(env or {})},
        cwd=ws.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_records(ws: Workspace, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(ws.emulator.records("Account")) < at_least:
        assert time.monotonic() < deadline, "no records landed"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_an_insert_drains_commits_and_the_rerun_adds_no_duplicate(
    slow_ws: Workspace, sig: signal.Signals
) -> None:
    create_accounts(slow_ws, 4000)
    _model(slow_ws, "insert", "composite", key_field="Description")
    process = _start_sync(slow_ws)
    _wait_for_records(slow_ws, 200)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr
    assert f"interrupted by {sig.name}" in stderr and "rerun to resume" in stderr
    landed = len(slow_ws.emulator.records("Account"))
    assert 0 < landed < 4000  # it stopped early
    runs = _settle(slow_ws)
    for summary in runs:
        _assert_accounted(summary)
    assert_promise_kept(slow_ws, runs[-1], key_field="Description", operation="insert")


def test_two_runs_of_one_model_at_once_one_sends_the_other_refuses(slow_ws: Workspace) -> None:
    create_accounts(slow_ws, 3000)
    _model(slow_ws, "insert", "composite", key_field="Description")
    first, second = _start_sync(slow_ws), _start_sync(slow_ws)
    results = [
        (p.returncode, out, err)
        for p in (first, second)
        for out, err in [p.communicate(timeout=180)]
    ]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, _, err in results if code == 1)
    assert "is being synced by run" in refused and refused.count("\n") == 1
    held = slow_ws.records_by("Account", "Description")  # fails on any duplicate
    assert len(held) == len(expected_valid(slow_ws))


def test_a_second_run_that_waits_for_the_lease_sends_nothing_again(slow_ws: Workspace) -> None:
    create_accounts(slow_ws, 2000)
    _model(slow_ws, "insert", "composite", key_field="Description")
    env = {"SF_ACTIVATION_LEASE_WAIT_S": "120"}
    first = _start_sync(slow_ws, env)
    _wait_for_records(slow_ws, 1)
    second = _start_sync(slow_ws, env)
    out_first, err_first = first.communicate(timeout=180)
    out_second, err_second = second.communicate(timeout=180)
    assert first.returncode == 0 and second.returncode == 0, (err_first, err_second)
    import json

    waited = json.loads(out_second)
    assert waited["added"] == 0 and waited["sent"] == len(ORPHANS), waited  # only the rejects
    slow_ws.records_by("Account", "Description")  # no duplicates


def test_dagster_runs_take_the_same_lease(
    slow_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    create_accounts(slow_ws, 200)
    _model(slow_ws, "upsert", "composite", key_field="External_Id__c")
    for name, value in slow_ws.env.items():
        monkeypatch.setenv(name, value)
    from sf_activation.definitions import build_definitions

    defs = build_definitions(slow_ws.models)
    job = defs.resolve_job_def("sync_m")
    with ModelLease(slow_ws.state_url, "m", "cli-run-holding-it"):
        # `sync_all` launched while another run (here the command line) syncs the model.
        refused = defs.resolve_job_def("sync_all").execute_in_process(
            raise_on_error=False, instance=dg.DagsterInstance.ephemeral()
        )
        assert not refused.success
        text = " ".join(
            str(e.step_failure_data.user_failure_data.description)
            for e in refused.get_step_failure_events()
            if e.step_failure_data.user_failure_data is not None
        )
        assert "is being synced by run cli-run-holding-it" in text, text
        assert slow_ws.emulator.records("Account") == []
    done = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert done.success
    assert len(slow_ws.emulator.records("Account")) == len(expected_valid(slow_ws))


def test_a_read_only_state_directory_exits_1_before_anything_is_written(ws: Workspace) -> None:
    create_accounts(ws, 50)
    _model(ws, "insert", "composite", key_field="Description")
    state = Path(ws.state_url)
    state.mkdir(parents=True)
    made = subprocess.run(["chattr", "+i", str(state)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr!r}")
    try:
        result = ws.run("sync", "m", "--json", check=False)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "state store" in result.stderr, result.stderr
    assert "not writable" in result.stderr and str(state) in result.stderr
    assert ws.write_calls() == 0
    assert_promise_kept(ws, ws.sync("m"), key_field="Description", operation="insert")


def test_salesforce_going_away_mid_run_exits_1_and_the_rerun_finishes_exactly(
    tmp_path: Path,
) -> None:
    org = tmp_path / "org.json"
    flags = ("--latency-ms", "200", "--state", str(org), "--tls-dir", str(tmp_path / "tls"))
    with start_emulator(tmp_path / "e1", *flags) as first:
        ws = Workspace(tmp_path / "ws", first)
        create_accounts(ws, 4000)
        _model(ws, "upsert", "composite", key_field="External_Id__c")
        process = _start_sync(ws)
        _wait_for_records(ws, 400)
        first.stop()  # Salesforce goes away in the middle of the run
    out, err = process.communicate(timeout=180)
    assert process.returncode == 1, err
    import json

    summary = json.loads(out)
    assert summary["stopped"] == "unreachable" and summary["stopped_reason"], summary
    assert "Salesforce stopped answering" in err and err.count("\n") == 1
    _assert_accounted(summary)
    assert 0 < summary["succeeded"] < 4000
    with start_emulator(tmp_path / "e2", *flags) as again:
        ws.use_emulator(again)
        runs = _settle(ws)
        assert_promise_kept(ws, runs[-1])
        counts = Counter(r["External_Id__c"] for r in again.records("Account"))
        assert max(counts.values()) == 1


def test_on_s3_a_dead_runs_lease_expires_and_the_next_run_reconciles_its_ledger(
    tmp_path: Path,
    emulator_once: EmulatorHandle,
    s3_url: str,  # noqa: F811
) -> None:
    # Production layout: state (ledger and lease included) and rejects on S3.
    emulator_once.set_faults(BASE_FAULTS)
    emulator_once.reset()
    ws = Workspace(tmp_path / "ws", emulator_once, rejects_url=f"{s3_url}/rejects")
    ws.state_url = f"{s3_url}/state"
    # A lease long enough to outlast starting the next process on a loaded machine (at 2 s,
    # the refused run below sometimes started after it had expired), short for a test.
    ws.env.update({"SF_ACTIVATION_STATE_URL": ws.state_url, "SF_ACTIVATION_LEASE_TTL_S": "10"})
    create_accounts(ws, ROWS)
    _model(ws, "insert", "composite", key_field="Description")
    killed = ws.run(
        "sync",
        "m",
        "--json",
        check=False,
        env={"SF_ACTIVATION_TEST_KILL_AT": "after_send_before_commit:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    landed = len(emulator_once.records("Account"))
    assert landed >= 200  # created by the dead run, not recorded in state
    # The dead run's lease is still there: a run that does not wait is refused ...
    refused = ws.run("sync", "m", "--json", check=False)
    assert refused.returncode == 1 and "is being synced by run" in refused.stderr
    # ... and one that waits takes it over once it expires (by S3's clock), then finds
    # what the dead run created instead of creating it again.
    runs = _settle(ws, env={"SF_ACTIVATION_LEASE_WAIT_S": "30"})
    assert runs[0]["reconciled"] >= landed, runs[0]
    _assert_exactly_once(ws, runs, "Description", "insert")
