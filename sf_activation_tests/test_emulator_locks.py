"""Parent row locks (`--faults parent_locks=1`): writes of children of one parent that
overlap in time collide as in a real org; children of different parents do not.

Each test starts its own emulator with a latency, which is each request's processing
time: the locks a request takes are held that long, so two requests sent together
overlap inside the org.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

V = "62.0"
LATENCY_MS = 400


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    with start_emulator(
        tmp_path_factory.mktemp("locks"),
        "--faults",
        "parent_locks=1",
        "--latency-ms",
        str(LATENCY_MS),
    ) as handle:
        yield handle


@pytest.fixture
def emu(locked: EmulatorHandle) -> EmulatorHandle:
    locked.reset()
    locked.set_faults("parent_locks=1")
    return locked


def url(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def accounts(emu: EmulatorHandle, n: int) -> list[str]:
    records = [{"attributes": {"type": "Account"}, "Name": f"Parent {i}"} for i in range(n)]
    r = emu.http.post(url(emu, "composite/sobjects"), json={"records": records}, timeout=30)
    assert all(x["success"] for x in r.json()), r.text
    return [x["id"] for x in r.json()]


def contacts(parent: str, tag: str, n: int = 3) -> list[dict[str, Any]]:
    return [
        {"attributes": {"type": "Contact"}, "LastName": f"{tag}-{i}", "AccountId": parent}
        for i in range(n)
    ]


def together(
    emu: EmulatorHandle, bodies: list[dict[str, Any]], path: str = "composite/sobjects"
) -> list[Any]:
    """Send the bodies at the same moment, each on its own connection; their answers."""
    answers: list[Any] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def one(i: int) -> None:
        session = emu.session()
        start.wait()
        answers[i] = session.post(url(emu, path), json=bodies[i], timeout=30).json()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def codes(results: list[dict[str, Any]]) -> list[str]:
    return ["ok" if r["success"] else r["errors"][0]["statusCode"] for r in results]


def test_concurrent_children_of_one_parent_collide(emu: EmulatorHandle) -> None:
    (parent,) = accounts(emu, 1)
    first, second = together(
        emu,
        [
            {"allOrNone": False, "records": contacts(parent, "a")},
            {"allOrNone": False, "records": contacts(parent, "b")},
        ],
    )
    outcomes = sorted([codes(first), codes(second)])
    # One request got the parent's lock; the other's records on that parent failed.
    assert outcomes == [["UNABLE_TO_LOCK_ROW"] * 3, ["ok"] * 3]
    loser = first if codes(first)[0] != "ok" else second
    assert loser[0]["errors"][0]["message"] == (
        f"unable to obtain exclusive access to this record or 1 records: {parent}"
    )
    assert "id" not in loser[0]  # a failed item carries no id
    assert len(emu.records("Contact")) == 3


def test_concurrent_children_of_different_parents_do_not(emu: EmulatorHandle) -> None:
    one, two = accounts(emu, 2)
    answers = together(
        emu,
        [
            {"allOrNone": False, "records": contacts(one, "a")},
            {"allOrNone": False, "records": contacts(two, "b")},
        ],
    )
    assert [codes(a) for a in answers] == [["ok"] * 3, ["ok"] * 3]
    assert len(emu.records("Contact")) == 6


def test_only_the_contended_parent_fails_and_all_or_none_rolls_back(emu: EmulatorHandle) -> None:
    shared, own = accounts(emu, 2)
    mixed = contacts(own, "own", 2) + contacts(shared, "shared", 1)
    holder, waiter = together(
        emu,
        [
            {"allOrNone": False, "records": contacts(shared, "holder", 1)},
            {"allOrNone": False, "records": mixed},
        ],
    )
    if codes(holder) != ["ok"]:  # the other request got there first: the roles swap
        assert codes(waiter) == ["ok"] * 3 and codes(holder) == ["UNABLE_TO_LOCK_ROW"]
    else:
        assert codes(waiter) == ["ok", "ok", "UNABLE_TO_LOCK_ROW"]
    emu.reset()
    shared, own = accounts(emu, 2)
    _, rolled = together(
        emu,
        [
            {"allOrNone": False, "records": contacts(shared, "holder", 1)},
            {"allOrNone": True, "records": contacts(own, "own", 2) + contacts(shared, "x", 1)},
        ],
    )
    if "UNABLE_TO_LOCK_ROW" in codes(rolled):
        assert codes(rolled) == ["ALL_OR_NONE_OPERATION_ROLLED_BACK"] * 2 + ["UNABLE_TO_LOCK_ROW"]


def test_parent_update_collides_with_child_insert(emu: EmulatorHandle) -> None:
    (parent,) = accounts(emu, 1)
    children = {"allOrNone": False, "records": contacts(parent, "c", 2)}
    parent_update = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Account"}, "Id": parent, "Phone": "555"}],
    }
    answers: list[Any] = [None, None]
    start = threading.Barrier(2)

    def insert() -> None:
        s = emu.session()
        start.wait()
        answers[0] = s.post(url(emu, "composite/sobjects"), json=children, timeout=30).json()

    def update() -> None:
        s = emu.session()
        start.wait()
        answers[1] = s.patch(url(emu, "composite/sobjects"), json=parent_update, timeout=30).json()

    threads = [threading.Thread(target=insert), threading.Thread(target=update)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [c for a in answers for c in codes(a) if c != "ok"]
    assert failed and set(failed) == {"UNABLE_TO_LOCK_ROW"}


def test_sequential_requests_never_collide_and_answers_wait_for_the_locks(
    emu: EmulatorHandle,
) -> None:
    (parent,) = accounts(emu, 1)
    for tag in ("a", "b", "c"):
        began = time.monotonic()
        r = emu.http.post(
            url(emu, "composite/sobjects"), json={"records": contacts(parent, tag)}, timeout=30
        )
        # The answer comes after the processing time, once the locks are released.
        assert time.monotonic() - began >= LATENCY_MS / 1000 * 0.9
        assert codes(r.json()) == ["ok"] * 3


def test_single_record_rest_create_reports_the_lock_error(emu: EmulatorHandle) -> None:
    (parent,) = accounts(emu, 1)
    answers = together(
        emu,
        [{"LastName": "x", "AccountId": parent}, {"LastName": "y", "AccountId": parent}],
        path="sobjects/Contact",
    )
    errors = [a for a in answers if isinstance(a, list)]
    assert len(errors) == 1 and errors[0][0]["errorCode"] == "UNABLE_TO_LOCK_ROW"


def test_waiting_for_a_lock_instead_of_failing(emu: EmulatorHandle) -> None:
    emu.set_faults(f"parent_locks=1,lock_wait_ms={LATENCY_MS * 5}")
    (parent,) = accounts(emu, 1)
    began = time.monotonic()
    answers = together(
        emu,
        [
            {"allOrNone": False, "records": contacts(parent, "a")},
            {"allOrNone": False, "records": contacts(parent, "b")},
        ],
    )
    assert [codes(a) for a in answers] == [["ok"] * 3, ["ok"] * 3]
    # The second queued behind the first: its answer came a processing time later.
    assert time.monotonic() - began >= 2 * LATENCY_MS / 1000 * 0.9


def test_bulk_job_retries_locked_records_before_failing_them(emu: EmulatorHandle) -> None:
    (parent,) = accounts(emu, 1)
    base = url(emu, "jobs/ingest")
    job = emu.http.post(base, json={"object": "Contact", "operation": "insert"}, timeout=10).json()
    csv = "LastName,AccountId\n" + "".join(f"Bulk{i},{parent}\n" for i in range(5))
    emu.http.put(f"{base}/{job['id']}/batches", data=csv, headers={"Content-Type": "text/csv"})
    # A Collections write holds the parent while the job starts: the job's records hit the
    # lock, are retried inside the job, and succeed once the write has finished.
    holder = threading.Thread(
        target=lambda: emu.session().post(
            url(emu, "composite/sobjects"), json={"records": contacts(parent, "c", 1)}, timeout=30
        )
    )
    holder.start()
    time.sleep(0.05)
    emu.http.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, timeout=10)
    holder.join()
    deadline = time.monotonic() + 30
    while True:
        info = emu.http.get(f"{base}/{job['id']}", timeout=10).json()
        if info["state"] in ("JobComplete", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (
        "JobComplete",
        5,
        0,
    )
    assert len(emu.records("Contact")) == 6


def test_off_by_default(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--latency-ms", str(LATENCY_MS)) as plain:
        records = [{"attributes": {"type": "Account"}, "Name": "P"}]
        parent = plain.http.post(url(plain, "composite/sobjects"), json={"records": records}).json()
        answers = together(
            plain,
            [
                {"records": contacts(parent[0]["id"], "a")},
                {"records": contacts(parent[0]["id"], "b")},
            ],
        )
        assert [codes(a) for a in answers] == [["ok"] * 3, ["ok"] * 3]
