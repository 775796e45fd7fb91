"""SIGKILL at 20 seeded points of a run; each rerun converges to the same outcome.

The kill is driven by the test hook `SF_ACTIVATION_TEST_KILL_AT=<point>:<n>`
(sf_activation/testhooks.py): the process kills itself, with no cleanup, the n-th time it
reaches the point. After the kill the model is synced again (at most twice) and the
promise is checked: Salesforce holds exactly the valid rows, right values, no duplicates;
the last reject file holds exactly the rest. Insert has no idempotency key in Salesforce:
for insert the kill must leave no duplicate either (the send ledger's reconciliation).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from sf_activation.sync import SEND_BATCH_ROWS
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.reliability import (
    assert_promise_kept,
    create_accounts,
    expected_valid,
    model_body,
    sync_until_settled,
)
from sf_activation_tests.support.workspace import Workspace

pytestmark = pytest.mark.slow

ROWS = 1000  # five full sObject Collections calls, one Bulk job
CHUNK = 200


class Kill(NamedTuple):
    point: str
    n: int
    operation: str
    transport: str
    concurrency: int = 2


# 20 points: planning, each side of a send and of its state commit, inside a Bulk job,
# while writing and publishing rejects, during compaction, and during mirror deletes.
KILLS = [
    Kill("plan_batch", 1, "upsert", "composite"),
    Kill("before_send", 1, "upsert", "composite"),
    Kill("after_send_before_commit", 1, "upsert", "composite"),
    Kill("after_send_before_commit", 3, "upsert", "composite"),
    Kill("after_commit", 2, "upsert", "composite"),
    Kill("rejects_write", 1, "upsert", "composite"),  # the invalid rows, before any send
    Kill("rejects_write", 5, "upsert", "composite"),  # an orphan Salesforce refused
    Kill("rejects_publish", 1, "upsert", "composite"),
    Kill("state_compact", 1, "upsert", "composite"),
    Kill("bulk_job_open", 1, "upsert", "bulk"),
    Kill("bulk_job_polling", 1, "upsert", "bulk"),
    Kill("after_send_before_commit", 1, "upsert", "bulk"),
    Kill("state_compact", 1, "upsert", "bulk"),
    Kill("after_send_before_commit", 2, "update", "composite"),
    Kill("after_commit", 1, "update", "bulk"),
    Kill("delete_before_commit", 1, "mirror", "composite"),
    Kill("delete_before_commit", 1, "mirror", "bulk"),
    Kill("after_send_before_commit", 2, "insert", "composite", concurrency=1),
    Kill("after_commit", 3, "insert", "composite", concurrency=1),
    Kill("bulk_job_polling", 1, "insert", "bulk"),
]
assert len(KILLS) == 20


@pytest.fixture(scope="module")
def emulator_for_kills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with start_emulator(
        tmp_path_factory.mktemp("kills"), "--faults", "bulk_seconds=1", "--latency-ms", "1"
    ) as handle:
        yield handle


def _killed(ws: Workspace, model: str, kill: Kill) -> None:
    result = ws.run(
        "sync",
        model,
        "--json",
        check=False,
        # Commit per call, so the n-th commit of a small run exists to be killed around.
        env={
            "SF_ACTIVATION_TEST_KILL_AT": f"{kill.point}:{kill.n}",
            "SF_ACTIVATION_COMMIT_ROWS": "1",
        },
    )
    assert result.returncode == -signal.SIGKILL, (
        f"the run was not killed at {kill.point}:{kill.n} (exit {result.returncode}): "
        f"{result.stderr[-500:]}"
    )


def insert_duplicates(ws: Workspace) -> int:
    """Check insert's outcome (every valid row present with its values) and return how many
    extra copies of rows a kill left in Salesforce."""
    want = expected_valid(ws)
    records = ws.emulator.records("Account")
    counts = Counter(r.get("Description") for r in records)
    assert set(counts) == set(want)
    for r in records:
        name, revenue = want[r["Description"]]
        assert (r["Name"], float(r["AnnualRevenue"])) == (name, revenue)
    return sum(n - 1 for n in counts.values())


@pytest.mark.parametrize(
    "kill", KILLS, ids=lambda k: f"{k.point}:{k.n}-{k.operation}-{k.transport}"
)
def test_sigkill_then_rerun_converges(
    tmp_path: Path, emulator_for_kills: EmulatorHandle, kill: Kill
) -> None:
    emulator = emulator_for_kills
    emulator.reset()
    ws = Workspace(tmp_path / "ws", emulator)
    key_field = "Description" if kill.operation == "insert" else "External_Id__c"
    extra = f"concurrency: {kill.concurrency}\nbulk_threshold: 20\n"
    if kill.operation == "update":
        create_accounts(ws, ROWS, name="Before")
        ws.model("seed", model_body("upsert", "composite"))
        ws.sync("seed")
    create_accounts(ws, ROWS)
    ws.model("m", model_body(kill.operation, kill.transport, key_field=key_field, extra=extra))
    if kill.operation == "mirror":
        # Kill the run that deletes: rows that left the model since the first sync.
        ws.sync("m")
        ws.sql(
            "DELETE FROM accounts WHERE account_id IN (SELECT 'R-' || i FROM range(0, 300) t(i))"
        )

    _killed(ws, "m", kill)
    runs = sync_until_settled(ws, "m")

    if kill.operation == "insert":
        # The ledger recorded every create before it left: the rerun asks Salesforce what
        # the killed run created instead of creating it again.
        assert insert_duplicates(ws) == 0
    assert_promise_kept(ws, runs[-1], key_field=key_field, operation=kill.operation)


def test_insert_kill_between_send_and_commit_creates_nothing_twice(
    tmp_path: Path, emulator_for_kills: EmulatorHandle
) -> None:
    """A kill after Salesforce answered the first create call, before its Ids were
    committed: the rerun finds those records from the ledger (by content: the model maps
    no unique field) and records their Ids; no row is created twice."""
    emulator = emulator_for_kills
    emulator.reset()
    ws = Workspace(tmp_path / "ws", emulator)
    create_accounts(ws, ROWS)
    ws.model(
        "m", model_body("insert", "composite", key_field="Description", extra="concurrency: 1\n")
    )
    _killed(ws, "m", Kill("after_send_before_commit", 1, "insert", "composite"))
    landed_before_rerun = len(emulator.records("Account"))
    runs = sync_until_settled(ws, "m")
    assert CHUNK <= landed_before_rerun <= 3 * CHUNK
    assert runs[0]["reconciled"] >= CHUNK
    assert insert_duplicates(ws) == 0
    assert SEND_BATCH_ROWS >= ROWS  # one batch: the calls in flight are the whole window
