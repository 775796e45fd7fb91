"""Insert rows a Bulk 2.0 job reports in none of its result files are never inserted again
blindly.

A job's results should list every uploaded row once (successful, failed or unprocessed).
When they do not — the results do not add up, or the job failed or was aborted midway
without listing every row it processed — an insert row missing from them may have been
created all the same. Such rows are held (`OUTCOME_UNKNOWN`), and the ledger's
reconciliation, finding the job's results still lacking them, asks Salesforce for the
records (by the unique External ID the model maps, else by content): found, the row is
recorded with its Id; not found, it was not applied and is sent again after the grace.

Every test runs the real command against the emulator over HTTPS, with the emulator's
`missing_results=N` (a job leaves its first N uploaded rows out of every result file;
what it did with them stands) and `stop_after_rows=K` (a job applies its first K rows,
then ends Failed). The promise checked at the end: Salesforce holds exactly one record
per valid row, state holds each row's Id, a later change updates those records (none is
created again), and every summary accounts for every row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sf_activation.state import StateStore
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.reliability import (
    ORPHANS,
    assert_promise_kept,
    create_accounts,
    expected_valid,
    model_body,
)
from sf_activation_tests.support.workspace import Workspace

pytestmark = pytest.mark.slow

ROWS = 300  # valid rows; with the 3 orphans (refused by Salesforce), 303 in one Bulk job
UPLOADED = ROWS + len(ORPHANS)
MISSING = 20


@pytest.fixture(scope="module")
def emulator_missing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with start_emulator(tmp_path_factory.mktemp("missing"), "--latency-ms", "1") as handle:
        yield handle


@pytest.fixture
def ws(tmp_path: Path, emulator_missing: EmulatorHandle) -> Iterator[Workspace]:
    emulator_missing.set_faults("")
    emulator_missing.reset()
    # The Workspace releases rows Salesforce does not hold 1 s after they were sent.
    yield Workspace(tmp_path / "ws", emulator_missing)
    emulator_missing.set_faults("")


def _model(ws: Workspace, key_field: str) -> None:
    ws.model("m", model_body("insert", "bulk", key_field=key_field, extra="concurrency: 2\n"))


def _unsettled(summary: dict[str, Any]) -> bool:
    return bool(summary["retried"] or summary["stopped_reason"] or summary.get("unconfirmed"))


def _settle(ws: Workspace, runs: list[dict[str, Any]], reruns: int = 2) -> list[dict[str, Any]]:
    """Rerun while rows are pending or held (at most `reruns` more runs)."""
    for _ in range(reruns):
        if not _unsettled(runs[-1]):
            break
        time.sleep(1.2)  # past the Workspace's grace
        runs.append(ws.sync("m"))
    return runs


def _assert_accounted(summary: dict[str, Any]) -> None:
    s = summary
    assert s["sent"] == s["succeeded"] + s["failed"] + s["retried"], s
    assert s["rows"] == s["invalid"] + s["added"] + s["changed"] + s["unchanged"] + s["pending"]


def _assert_no_duplicates(ws: Workspace, key_field: str) -> None:
    counts = Counter(r.get(key_field) for r in ws.emulator.records("Account"))
    twice = sorted(k for k, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} rows inserted twice, e.g. {twice[:5]}"


def _assert_ids_in_state(ws: Workspace, key_field: str) -> None:
    """Every valid row is synced in state with the Id of the record Salesforce holds."""
    held = ws.records_by("Account", key_field)
    state = StateStore(ws.state_url, "m").load(["pk", "sf_id", "status"]).to_pylist()
    by_pk = {r["pk"]: r for r in state}
    want = expected_valid(ws)
    wrong = [
        pk
        for pk in want
        if by_pk.get(pk, {}).get("status") != "synced" or by_pk[pk]["sf_id"] != held[pk]["Id"]
    ]
    assert not wrong, f"{len(wrong)} rows without their Id in state, e.g. {wrong[:3]}"


def _assert_exactly_once(ws: Workspace, runs: list[dict[str, Any]], key_field: str) -> None:
    _assert_no_duplicates(ws, key_field)
    for summary in runs:
        _assert_accounted(summary)
    assert_promise_kept(ws, runs[-1], key_field=key_field, operation="insert")
    assert runs[-1].get("unconfirmed", 0) == 0
    _assert_ids_in_state(ws, key_field)
    # A later change updates the records Salesforce holds, by the Ids in state.
    before = {r["Id"] for r in ws.emulator.records("Account")}
    ws.sql("UPDATE accounts SET name = name || ' v2' WHERE account_id LIKE 'R-1%'")
    changed = ws.sync("m")
    _assert_accounted(changed)
    assert changed["changed"] > 0 and changed["retried"] == 0, changed
    assert {r["Id"] for r in ws.emulator.records("Account")} == before
    held = ws.records_by("Account", key_field)
    assert all(held[pk]["Name"] == name for pk, (name, _) in expected_valid(ws).items())


@pytest.mark.parametrize("key_field", ["Description", "External_Id__c"])
def test_rows_missing_from_a_completed_jobs_results_are_found_not_inserted_again(
    ws: Workspace, key_field: str
) -> None:
    # Description is not unique: the rows are found by content. External_Id__c is: by it.
    create_accounts(ws, ROWS)
    _model(ws, key_field)
    ws.emulator.set_faults(f"missing_results={MISSING}")
    first = ws.sync("m")
    ws.emulator.set_faults("")
    runs = _settle(ws, [first])
    _assert_exactly_once(ws, runs, key_field)
    # The job created every valid row; the ones its results lack were found in Salesforce
    # by the same run, not reported for sending again; the orphans it refused (listed in
    # its failed results) are rejects, counted once.
    assert first["bulk_job_ids"] and len(ws.emulator.records("Account")) == ROWS
    assert first["succeeded"] == ROWS and first["reconciled"] == MISSING, first
    assert first["failed"] == len(ORPHANS) and first["retried"] == 0, first
    assert not first.get("unconfirmed"), first
    assert len(runs) == 1, runs  # settled by the first run


@pytest.mark.parametrize(
    ("stop_after", "missing"),
    [
        # Failed midway, every row listed: the unprocessed ones are sent again, once.
        (UPLOADED // 2, 0),
        # Failed midway, its first rows (all applied) in no file.
        (UPLOADED // 2, MISSING),
        # Failed early, its first rows in no file: half of them applied, half not (those
        # are not found in Salesforce, and sent again once the grace is over).
        (MISSING // 2, MISSING),
    ],
    ids=["unprocessed-listed", "applied-rows-unlisted", "unapplied-rows-unlisted"],
)
def test_a_job_that_failed_midway_inserts_nothing_twice(
    ws: Workspace, stop_after: int, missing: int
) -> None:
    create_accounts(ws, ROWS)
    _model(ws, "Description")
    ws.emulator.set_faults(f"stop_after_rows={stop_after},missing_results={missing}")
    first = ws.sync("m")
    ws.emulator.set_faults("")
    applied = len(ws.emulator.records("Account"))
    assert applied < ROWS, f"the job did not stop: the test would prove nothing: {first}"
    runs = _settle(ws, [first])
    _assert_exactly_once(ws, runs, "Description")
    assert first["succeeded"] == applied, first  # applied rows were all recorded at once
    assert first["reconciled"] == min(missing, stop_after), first


def test_rows_held_for_unreadable_results_are_found_when_the_results_still_lack_them(
    ws: Workspace,
) -> None:
    create_accounts(ws, ROWS)
    _model(ws, "Description")
    # The job's results cannot be downloaded in the first run, and lack rows once they can.
    ws.emulator.set_faults(f"missing_results={MISSING},bulk_results=1")
    first = ws.sync("m")
    ws.emulator.set_faults("")
    assert first["unconfirmed"] == UPLOADED and first["retried"] == UPLOADED, first
    held = [r for r in ws.rejects(first) if r["error_code"] == "OUTCOME_UNKNOWN"]
    assert len(held) == UPLOADED, first
    assert len(ws.emulator.records("Account")) == ROWS
    second = ws.sync("m")
    runs = _settle(ws, [first, second])
    _assert_exactly_once(ws, runs, "Description")
    # Learned from the job, and the rows its results lack from Salesforce: only the
    # orphans the job refused are sent again (and refused again).
    assert second["sent"] == len(ORPHANS), second
    assert second["reconciled"] >= ROWS, second
