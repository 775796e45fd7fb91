"""Injected faults (`--faults`, `--latency-ms`, `--seed`) as a client experiences them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sf_activation.emulator.faults import parse_faults
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

V = "62.0"


def limits_url(emu: EmulatorHandle) -> str:
    return emu.url(f"/services/data/v{V}/limits/")


def create_accounts(emu: EmulatorHandle, n: int, *, start: int = 0) -> list[dict[str, Any]]:
    rows = [{"attributes": {"type": "Account"}, "Name": f"A{i}"} for i in range(start, start + n)]
    r = emu.session().post(
        emu.url(f"/services/data/v{V}/composite/sobjects"), json={"records": rows}
    )
    assert r.status_code == 200, r.text
    return r.json()


def lock_pattern(tmp_path: Path, seed: int) -> list[bool]:
    with start_emulator(tmp_path, "--faults", "lock=0.3", "--seed", str(seed)) as emu:
        results = create_accounts(emu, 200)
        locked = []
        for item in results:
            if item["success"]:
                locked.append(False)
                continue
            (error,) = item["errors"]
            assert error["statusCode"] == "UNABLE_TO_LOCK_ROW"
            assert error["message"].startswith("unable to obtain exclusive access to this record")
            locked.append(True)
        # Locked records were not written; the others were.
        assert len(emu.records("Account")) == locked.count(False)
        return locked


def test_lock_failures_are_per_record_and_reproducible(tmp_path: Path) -> None:
    first = lock_pattern(tmp_path / "a", seed=7)
    assert 30 <= sum(first) <= 90  # about 30% of 200
    assert lock_pattern(tmp_path / "b", seed=7) == first
    assert lock_pattern(tmp_path / "c", seed=8) != first


def status_sequence(tmp_path: Path, seed: int) -> list[int]:
    with start_emulator(tmp_path, "--faults", "unavailable=0.5", "--seed", str(seed)) as emu:
        http = emu.session()
        statuses = []
        for _ in range(30):
            r = http.get(limits_url(emu))
            if r.status_code == 503:
                assert r.json() == [
                    {"message": "Server temporarily unavailable", "errorCode": "SERVER_UNAVAILABLE"}
                ]
            statuses.append(r.status_code)
        # Refused requests are not API calls; token and test routes never fail.
        assert emu.stats()["api_calls"] == statuses.count(200)
        token = requests.post(
            emu.url("/services/oauth2/token"),
            data={"grant_type": "password", "username": "u", "password": "p"},
            verify=emu.ca_bundle,
            timeout=10,
        )
        assert token.status_code == 200
        return statuses


def test_unavailable_is_503_and_reproducible(tmp_path: Path) -> None:
    first = status_sequence(tmp_path / "a", seed=3)
    assert set(first) == {200, 503}
    assert status_sequence(tmp_path / "b", seed=3) == first


def test_drop_closes_the_connection_without_an_answer(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--faults", "drop=1") as emu:
        http = emu.session()
        for _ in range(3):
            with pytest.raises(requests.ConnectionError):
                http.get(limits_url(emu), timeout=10)
        with pytest.raises(requests.ConnectionError):
            create_accounts(emu, 5)
        # Nothing was processed, the server is alive and still answers test routes.
        assert emu.records("Account") == []
        assert emu.stats()["api_calls"] == 0
        assert emu.process.poll() is None


def test_drop_share_lets_retries_through(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--faults", "drop=0.3", "--seed", "11") as emu:
        outcomes = []
        for _ in range(20):
            try:
                outcomes.append(emu.session().get(limits_url(emu), timeout=10).status_code)
            except requests.ConnectionError:
                outcomes.append("dropped")
        assert "dropped" in outcomes and 200 in outcomes
        assert emu.stats()["api_calls"] == outcomes.count(200)


def test_latency_delays_every_request(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--latency-ms", "150") as emu:
        http = emu.session()
        http.get(limits_url(emu))  # connection set up outside the timing
        started = time.monotonic()
        for _ in range(3):
            assert http.get(limits_url(emu)).status_code == 200
        assert time.monotonic() - started >= 0.45


def test_faults_in_bulk_jobs_are_record_level(tmp_path: Path) -> None:
    """Lock faults reach Bulk ingest through the same write path (failedResults rows)."""
    with start_emulator(tmp_path, "--faults", "lock=0.5", "--seed", "5") as emu:
        http = emu.session()
        base = emu.url(f"/services/data/v{V}/jobs/ingest")
        job = http.post(base, json={"object": "Account", "operation": "insert"}).json()
        csv = "Name\n" + "\n".join(f"B{i}" for i in range(40)) + "\n"
        r = http.put(f"{base}/{job['id']}/batches", data=csv, headers={"Content-Type": "text/csv"})
        assert r.status_code == 201
        http.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"})
        deadline = time.monotonic() + 20
        while (info := http.get(f"{base}/{job['id']}").json())["state"] not in (
            "JobComplete",
            "Failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert info["state"] == "JobComplete"
        assert 0 < info["numberRecordsFailed"] < 40
        failed = http.get(f"{base}/{job['id']}/failedResults/").text
        assert "UNABLE_TO_LOCK_ROW" in failed


def test_bad_fault_spec_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="unknown fault"),
        start_emulator(tmp_path, "--faults", "gremlins=1"),
    ):
        pass
    with (
        pytest.raises(RuntimeError, match="out of range"),
        start_emulator(tmp_path, "--faults", "lock=2"),
    ):
        pass


# ---- faults after the request is applied (lost, slow, bulk_results) and live changes ----

# What a client sees when the connection closes without an answer.
NO_ANSWER = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


@pytest.fixture(scope="module")
def live_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator for the tests below; each sets its faults through /__emulator/faults."""
    with start_emulator(tmp_path_factory.mktemp("emulator-faults")) as handle:
        yield handle


@pytest.fixture
def live(live_session: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The module's emulator without records, counters or faults, before and after the test."""
    set_faults(live_session, "", seed=None)
    live_session.reset()
    yield live_session
    set_faults(live_session, "", seed=None)
    assert "Traceback" not in live_session.log() and "ERROR" not in live_session.log()


_KEEP = object()


def set_faults(emu: EmulatorHandle, spec: str, seed: Any = _KEEP) -> dict[str, Any]:
    """POST /__emulator/faults; a seed reseeds the draws (None: unseeded again)."""
    body: dict[str, Any] = {"faults": spec}
    if seed is not _KEEP:
        body["seed"] = seed
    r = emu.http.post(emu.url("/__emulator/faults"), json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def data_url(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def soql(emu: EmulatorHandle, query: str) -> list[dict[str, Any]]:
    r = emu.http.get(data_url(emu, "query"), params={"q": query}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["records"]


def fault_counts(emu: EmulatorHandle) -> dict[str, int]:
    return emu.stats()["faults"]


def zero_counts(**counts: int) -> dict[str, int]:
    return {"lost": 0, "bulk_results": 0, "slow": 0, "drop": 0, "unavailable": 0, **counts}


def bulk_base(emu: EmulatorHandle) -> str:
    return data_url(emu, "jobs/ingest")


def finished_job(emu: EmulatorHandle, csv: str) -> str:
    """A Bulk insert of Account rows, run to JobComplete with the faults as they are."""
    http = emu.http
    job = http.post(bulk_base(emu), json={"object": "Account", "operation": "insert"}).json()
    r = http.put(
        f"{bulk_base(emu)}/{job['id']}/batches", data=csv, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 201, r.text
    assert http.patch(f"{bulk_base(emu)}/{job['id']}", json={"state": "UploadComplete"}).ok
    wait_job(emu, job["id"])
    return job["id"]


def wait_job(emu: EmulatorHandle, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while (info := emu.http.get(f"{bulk_base(emu)}/{job_id}").json())["state"] != "JobComplete":
        assert info["state"] != "Failed", info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    return info


def test_parse_faults_knows_the_after_apply_faults() -> None:
    spec = parse_faults("lost=0.3, bulk_results=1,slow=0.25,slow_seconds=2.5")
    assert (spec.lost, spec.bulk_results, spec.slow, spec.slow_seconds) == (0.3, 1.0, 0.25, 2.5)
    assert parse_faults("slow=1").slow_seconds == 5.0  # the default
    assert parse_faults("").to_string() == ""
    assert spec.to_string() == "lost=0.3,bulk_results=1,slow=0.25,slow_seconds=2.5"
    assert parse_faults(spec.to_string()) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lost=2", r"fault lost=2 is out of range \(needs a share from 0 to 1\)"),
        ("bulk_results=1.5", "fault bulk_results=1.5 is out of range"),
        ("slow=-0.1", "fault slow=-0.1 is out of range"),
        ("slow_seconds=-1", r"fault slow_seconds=-1 is out of range \(needs a number >= 0\)"),
        ("lost=nan", "fault lost=nan is out of range"),
        ("slow_seconds=inf", "fault slow_seconds=inf is out of range"),
        ("nosuch=1", "unknown fault 'nosuch=1'; known: bulk_results, bulk_seconds, drop, lock"),
        ("lost", "unknown fault 'lost'"),
        ("lost=lots", "fault lost needs a number, got 'lots'"),
    ],
)
def test_bad_specs_are_refused_with_the_bad_part_named(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_faults(spec)


def test_bad_after_apply_spec_on_the_command_line(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="fault slow_seconds=-1 is out of range"),
        start_emulator(tmp_path, "--faults", "slow_seconds=-1"),
    ):
        pass


def test_lost_create_is_applied_but_never_answered(live: EmulatorHandle) -> None:
    set_faults(live, "lost=1")
    rows = [{"attributes": {"type": "Account"}, "Name": f"Lost {i}"} for i in range(3)]
    with pytest.raises(NO_ANSWER):
        live.session().post(
            data_url(live, "composite/sobjects"), json={"records": rows}, timeout=10
        )
    set_faults(live, "")
    found = soql(live, "SELECT Id, Name FROM Account ORDER BY Name")
    assert [r["Name"] for r in found] == ["Lost 0", "Lost 1", "Lost 2"]
    stats = live.stats()
    assert stats["faults"] == zero_counts(lost=1)
    # The call was applied, so it counts (the query too); the server keeps serving.
    assert stats["api_calls"] == 2
    assert stats["requests_by_route"]["POST /services/data/v{version}/composite/sobjects"] == 1
    assert live.process.poll() is None


def test_lost_upsert_by_external_id_is_applied(live: EmulatorHandle) -> None:
    created = create_accounts(live, 1)
    assert created[0]["success"]
    account_id = created[0]["id"]
    live.http.patch(
        data_url(live, f"sobjects/Account/{account_id}"), json={"External_Id__c": "EXT-1"}
    ).raise_for_status()
    set_faults(live, "lost=1")
    rows = [
        {"attributes": {"type": "Account"}, "Name": "Renamed", "External_Id__c": "EXT-1"},
        {"attributes": {"type": "Account"}, "Name": "New", "External_Id__c": "EXT-2"},
    ]
    with pytest.raises(NO_ANSWER):
        live.session().patch(
            data_url(live, "composite/sobjects/Account/External_Id__c"),
            json={"allOrNone": False, "records": rows},
            timeout=10,
        )
    # A single-record upsert is a write too.
    with pytest.raises(NO_ANSWER):
        live.session().patch(
            data_url(live, "sobjects/Account/External_Id__c/EXT-3"),
            json={"Name": "Single"},
            timeout=10,
        )
    set_faults(live, "")
    found = soql(live, "SELECT Id, Name, External_Id__c FROM Account ORDER BY External_Id__c")
    assert [(r["Name"], r["External_Id__c"]) for r in found] == [
        ("Renamed", "EXT-1"),
        ("New", "EXT-2"),
        ("Single", "EXT-3"),
    ]
    assert found[0]["Id"] == account_id
    assert fault_counts(live) == zero_counts(lost=2)


def test_lost_bulk_create_upload_and_close_are_applied(live: EmulatorHandle) -> None:
    base = bulk_base(live)
    set_faults(live, "lost=1")
    with pytest.raises(NO_ANSWER):
        live.session().post(base, json={"object": "Account", "operation": "insert"}, timeout=10)
    set_faults(live, "")
    (job,) = live.http.get(base).json()["records"]  # the job was created
    assert (job["object"], job["state"]) == ("Account", "Open")

    set_faults(live, "lost=1")
    csv = "Name\n" + "\n".join(f"Bulk {i}" for i in range(5)) + "\n"
    with pytest.raises(NO_ANSWER):
        live.session().put(
            f"{base}/{job['id']}/batches",
            data=csv,
            headers={"Content-Type": "text/csv"},
            timeout=10,
        )
    with pytest.raises(NO_ANSWER):
        live.session().patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, timeout=10)
    set_faults(live, "")
    # The upload and the close were applied: the job runs and processes the rows.
    info = wait_job(live, job["id"])
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (5, 0)
    assert len(live.records("Account")) == 5
    # A second upload is refused: the lost one is the job's data.
    retry = live.http.put(
        f"{base}/{job['id']}/batches", data=csv, headers={"Content-Type": "text/csv"}
    )
    assert retry.status_code == 409
    set_faults(live, "lost=1")
    with pytest.raises(NO_ANSWER):
        live.session().delete(f"{base}/{job['id']}", timeout=10)
    set_faults(live, "")
    assert live.http.get(base).json()["records"] == []
    assert fault_counts(live) == zero_counts(lost=4)


def test_lost_leaves_reads_alone(live: EmulatorHandle) -> None:
    set_faults(live, "lost=1")
    http = live.session()
    for _ in range(3):
        assert http.get(limits_url(live), timeout=10).status_code == 200
    assert soql(live, "SELECT Id FROM Account") == []
    assert fault_counts(live) == zero_counts()


def test_bulk_results_downloads_fail_and_succeed_after(live: EmulatorHandle) -> None:
    job_id = finished_job(live, "Name\nR0\nR1\nR2\n")
    base = bulk_base(live)
    set_faults(live, "bulk_results=1")
    http = live.session()
    for kind in ("successfulResults/", "successfulResults", "failedResults/", "unprocessedrecords"):
        with pytest.raises(NO_ANSWER):
            http.get(f"{base}/{job_id}/{kind}", timeout=10)
    # Nothing else changes: the job is complete and other calls are answered.
    assert http.get(f"{base}/{job_id}", timeout=10).json()["state"] == "JobComplete"
    assert create_accounts(live, 1)[0]["success"]
    assert fault_counts(live) == zero_counts(bulk_results=4)
    set_faults(live, "")
    r = http.get(f"{base}/{job_id}/successfulResults/", timeout=10)
    assert r.status_code == 200
    rows = r.text.splitlines()
    assert rows[0] == '"sf__Id","sf__Created","Name"'
    assert sorted(row.split(",")[-1] for row in rows[1:]) == ['"R0"', '"R1"', '"R2"']
    assert http.get(f"{base}/{job_id}/failedResults/", timeout=10).text.strip() == (
        '"sf__Id","sf__Error","Name"'
    )


def test_slow_answer_outlasts_the_read_timeout_but_the_write_is_applied(
    live: EmulatorHandle,
) -> None:
    set_faults(live, "slow=1,slow_seconds=2")
    rows = [{"attributes": {"type": "Account"}, "Name": "Slow"}]
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        live.session().post(
            data_url(live, "composite/sobjects"), json={"records": rows}, timeout=(5, 0.5)
        )
    # Applied at once, and the server serves others while it holds the answer back.
    assert [r["Name"] for r in live.records("Account")] == ["Slow"]
    assert live.http.get(limits_url(live), timeout=10).status_code == 200  # a read: not slow
    assert time.monotonic() - started < 1.8
    assert fault_counts(live) == zero_counts(slow=1)
    # A patient client gets the answer, late.
    set_faults(live, "slow=1,slow_seconds=1")
    started = time.monotonic()
    r = live.session().post(
        data_url(live, "composite/sobjects"),
        json={"records": [{"attributes": {"type": "Account"}, "Name": "Late"}]},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()[0]["success"], r.text
    assert "Sforce-Limit-Info" in r.headers
    assert time.monotonic() - started >= 1.0
    assert fault_counts(live) == zero_counts(slow=2)


def lost_pattern(emu: EmulatorHandle, spec: str, seed: int, n: int = 16) -> list[str]:
    """Alternate limits reads and one-record creates; what each of them got."""
    set_faults(emu, spec, seed=seed)
    outcomes = []
    for i in range(n):
        try:
            if i % 2:
                r = emu.session().post(
                    data_url(emu, "composite/sobjects"),
                    json={"records": [{"attributes": {"type": "Account"}, "Name": f"S{i}"}]},
                    timeout=10,
                )
            else:
                r = emu.session().get(limits_url(emu), timeout=10)
            outcomes.append(str(r.status_code))
        except NO_ANSWER:
            outcomes.append("lost")
    set_faults(emu, "")
    return outcomes


def test_a_seed_gives_the_same_lost_sequence(live: EmulatorHandle) -> None:
    first = lost_pattern(live, "lost=0.5", seed=9)
    assert "lost" in first and "200" in first[1::2]  # creates: some lost, some answered
    assert all(outcome == "200" for outcome in first[0::2])  # reads are never lost
    assert len(live.records("Account")) == 8  # lost or not, every create was applied
    assert fault_counts(live)["lost"] == first.count("lost")
    assert lost_pattern(live, "lost=0.5", seed=9) == first
    assert lost_pattern(live, "lost=0.5", seed=10) != first


def test_after_apply_faults_leave_a_seeds_unavailable_draws_alone(live: EmulatorHandle) -> None:
    before = lost_pattern(live, "unavailable=0.5", seed=3, n=30)
    after = lost_pattern(live, "unavailable=0.5,lost=0.5", seed=3, n=30)
    assert "503" in before and "lost" in after
    assert [o == "503" for o in after] == [o == "503" for o in before]
    assert all(o == "200" for o, b in zip(after, before, strict=True) if b == "200" and o != "lost")


def test_faults_route_shape_auth_and_errors(live: EmulatorHandle) -> None:
    url = live.url("/__emulator/faults")
    assert live.http.get(url).json() == {
        "faults": "",
        "seed": None,
        "spec": {
            "lock": 0.0,
            "unavailable": 0.0,
            "drop": 0.0,
            "session_ttl": None,
            "bulk_seconds": 0.0,
            "lost": 0.0,
            "bulk_results": 0.0,
            "slow": 0.0,
            "slow_seconds": 5.0,
            "parent_locks": 0.0,
            "lock_ms": 0.0,
            "lock_wait_ms": 0.0,
        },
    }
    answer = set_faults(live, "lost=0.3, bulk_results=1", seed=5)
    assert answer["faults"] == "lost=0.3,bulk_results=1" and answer["seed"] == 5
    assert (answer["spec"]["lost"], answer["spec"]["bulk_results"]) == (0.3, 1.0)
    assert live.http.get(url).json() == answer
    for body, message in [
        ({"faults": "lost=2"}, "fault lost=2 is out of range"),
        ({"faults": "slow_seconds=-1"}, "fault slow_seconds=-1 is out of range"),
        ({"faults": "nosuch=1"}, "unknown fault 'nosuch=1'"),
        ({"faults": "lost=0.1", "seed": "x"}, "seed must be an integer"),
        ({"seed": 1}, "expected a JSON object"),
        (["lost=1"], "expected a JSON object"),
    ]:
        r = live.http.post(url, json=body)
        assert r.status_code == 400, r.text
        ((error),) = r.json()
        assert error["errorCode"] == "INVALID_REQUEST"
        assert message in error["message"], error
    assert live.http.get(url).json() == answer  # a refused spec changes nothing
    # Token required; never an API call, never faulted.
    assert requests.get(url, verify=live.ca_bundle, timeout=10).status_code == 401
    cleared = live.http.post(url, json={"faults": ""}).json()
    assert (cleared["faults"], cleared["seed"]) == ("", 5)  # no seed given: the draws go on
    assert live.http.post(url, json={"faults": "", "seed": None}).json()["seed"] is None
    assert live.stats()["api_calls"] == 0
    # /__emulator/reset zeroes the fault counts.
    set_faults(live, "lost=1")
    with pytest.raises(NO_ANSWER):
        create_accounts(live, 1)
    assert fault_counts(live)["lost"] == 1
    live.reset()
    assert fault_counts(live) == zero_counts()


def test_changed_faults_reach_every_reader(live: EmulatorHandle) -> None:
    # Request faults.
    set_faults(live, "drop=1,unavailable=0")
    with pytest.raises(NO_ANSWER):
        live.session().get(limits_url(live), timeout=10)
    set_faults(live, "unavailable=1")
    assert live.session().get(limits_url(live), timeout=10).status_code == 503
    assert fault_counts(live) == zero_counts(drop=1, unavailable=1)
    # Record locks (the org's hook), on and off again.
    set_faults(live, "lock=1")
    results = live.session().post(
        data_url(live, "composite/sobjects"),
        json={"records": [{"attributes": {"type": "Account"}, "Name": "L"}]},
        timeout=10,
    )
    assert results.json()[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    set_faults(live, "")
    assert create_accounts(live, 1)[0]["success"]
    # bulk_seconds (the Bulk settings) keeps a job InProgress.
    set_faults(live, "bulk_seconds=1")
    started = time.monotonic()
    finished_job(live, "Name\nB0\n")
    assert time.monotonic() - started >= 1.0
    set_faults(live, "")
    # session_ttl expires tokens, the one changing faults included; a new token clears it.
    set_faults(live, "session_ttl=0.5")
    time.sleep(0.7)
    assert live.session().get(limits_url(live), timeout=10).status_code == 401
    token = requests.post(
        live.url("/services/oauth2/token"),
        data={"grant_type": "password", "username": "u", "password": "p"},
        verify=live.ca_bundle,
        timeout=10,
    ).json()["access_token"]
    cleared = live.session(token).post(
        live.url("/__emulator/faults"), json={"faults": ""}, timeout=10
    )
    assert cleared.status_code == 200, cleared.text
    assert live.session().get(limits_url(live), timeout=10).status_code == 200
