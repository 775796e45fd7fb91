"""Injected faults (`--faults`, `--latency-ms`, `--seed`) as a client experiences them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

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
