"""The per-model lease on its real stores: flock across real processes, S3 over HTTP (moto).

Nothing of the lease is mocked. The one substitution is this machine's clock in the
clock test, moved an hour either way to show that S3 expiry reads only S3's clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import sf_activation.lease as lease_mod
from sf_activation.lease import LeaseError, LeaseHeld, LeaseInfo, ModelLease
from sf_activation_tests.support.s3 import S3Server, s3_server, s3_url  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

# Holds a lease in its own process until a line arrives on stdin (or it is killed).
HOLDER_SCRIPT = """
import sys
from sf_activation.lease import ModelLease
url, model, run_id = sys.argv[1:4]
lease = ModelLease(url, model, run_id)
prev = lease.acquire()
print("ACQUIRED", prev.model_dump_json() if prev else "null", flush=True)
sys.stdin.readline()
lease.release()
print("RELEASED", flush=True)
"""


class Holder:
    """A lease held by another process."""

    def __init__(self, url: str, model: str, run_id: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, url, model, run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("ACQUIRED"):
            self.proc.kill()
            raise AssertionError(f"holder did not acquire: {line!r} {self.proc.stderr.read()}")
        self.previous = json.loads(line.split(" ", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        """Ask the holder to release (without waiting for it)."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.release()
        assert self.proc.wait(timeout=10) == 0, self.proc.stderr.read()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@contextmanager
def holder(url: str, model: str, run_id: str) -> Iterator[Holder]:
    h = Holder(url, model, run_id)
    try:
        yield h
    finally:
        h.cleanup()


def read_lease_json(root: Path, model: str) -> dict | None:
    path = root / model / "lease.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# --------------------------------------------------------------------- local store


def test_local_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with holder(str(tmp_path), "accounts", "run-A") as a:
        assert a.previous is None
        with pytest.raises(LeaseHeld) as err:
            ModelLease(str(tmp_path), "accounts", "run-B").acquire()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith("model accounts is being synced by run run-A (host ")
        assert f"pid {a.pid}) since " in msg
        assert "SF_ACTIVATION_LEASE_WAIT_S" in msg
        assert err.value.holder is not None
        assert (err.value.holder.run_id, err.value.holder.pid) == ("run-A", a.pid)
        a.finish()
    assert read_lease_json(tmp_path, "accounts") is None  # a clean release removes it
    lease = ModelLease(str(tmp_path), "accounts", "run-B")
    assert lease.acquire() is None  # released, not died: nothing to reconcile
    lease.release()


def test_local_refusal_names_a_holder_that_writes_its_name_just_after_locking(
    tmp_path: Path,
) -> None:
    """A holder locks first and writes lease.json just after: a run blocked in between
    still names it (two runs started together hit this gap)."""
    import fcntl

    model_dir = tmp_path / "accounts"
    model_dir.mkdir()
    fd = os.open(model_dir / "lease.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    now = "2026-12-02T07:00:00.000000Z"
    info = LeaseInfo(run_id="run-A", host="h", pid=4242, acquired_at=now, heartbeat_at=now)
    late = threading.Timer(0.3, (model_dir / "lease.json").write_text, [info.model_dump_json()])
    late.start()
    try:
        with pytest.raises(LeaseHeld) as err:
            ModelLease(str(tmp_path), "accounts", "run-B").acquire()
        assert str(err.value).startswith("model accounts is being synced by run run-A (host h")
    finally:
        late.join()
        os.close(fd)


def test_local_waiter_gets_the_lease_when_the_holder_releases(tmp_path: Path) -> None:
    seen: list[tuple[str | None, float]] = []
    with holder(str(tmp_path), "accounts", "run-A") as a:

        def on_wait(info: LeaseInfo | None, waited: float) -> None:
            seen.append((info.run_id if info else None, waited))
            if len(seen) == 3:
                a.release()  # the holder finishes while we wait

        lease = ModelLease(
            str(tmp_path), "accounts", "run-B", wait_s=20, poll_s=0.1, on_wait=on_wait
        )
        assert lease.acquire() is None
        a.finish()
    try:
        assert len(seen) >= 3
        assert all(run_id == "run-A" for run_id, _ in seen[:3])
        assert [w for _, w in seen] == sorted(w for _, w in seen)
        assert read_lease_json(tmp_path, "accounts")["run_id"] == "run-B"
    finally:
        lease.release()


def test_local_waiter_gives_up_after_wait_s(tmp_path: Path) -> None:
    with holder(str(tmp_path), "accounts", "run-A"):
        lease = ModelLease(str(tmp_path), "accounts", "run-B", wait_s=0.5, poll_s=0.1)
        start = time.monotonic()
        with pytest.raises(LeaseHeld, match="still held after waiting") as err:
            lease.acquire()
        assert time.monotonic() - start >= 0.5
        assert err.value.holder is not None and err.value.holder.run_id == "run-A"


def test_local_sigkilled_holder_frees_the_lease_at_once(tmp_path: Path) -> None:
    with holder(str(tmp_path), "accounts", "run-A") as a:
        a.kill()  # no release, no finally: only the kernel drops the flock
        dead_pid = a.pid
    start = time.monotonic()
    lease = ModelLease(str(tmp_path), "accounts", "run-B")  # wait_s=0: no waiting allowed
    previous = lease.acquire()
    assert time.monotonic() - start < 2
    try:
        assert previous is not None  # a takeover: the caller reconciles run-A's leftovers
        assert (previous.run_id, previous.pid) == ("run-A", dead_pid)
        assert lease.taken_over == previous
        assert read_lease_json(tmp_path, "accounts")["run_id"] == "run-B"
    finally:
        lease.release()
    # A clean release after it: the next run has nothing to reconcile.
    with holder(str(tmp_path), "accounts", "run-C") as c:
        assert c.previous is None
        c.finish()


def test_local_different_models_do_not_block_each_other(tmp_path: Path) -> None:
    with holder(str(tmp_path), "accounts", "run-A") as a:
        with ModelLease(str(tmp_path), "contacts", "run-B") as lease:
            assert lease.held and lease.taken_over is None
            with pytest.raises(LeaseHeld):
                ModelLease(str(tmp_path), "accounts", "run-C").acquire()
        a.finish()


def test_local_release_is_idempotent_and_only_removes_our_lease(tmp_path: Path) -> None:
    lease = ModelLease(str(tmp_path), "accounts", "run-A")
    lease.release()  # never acquired: nothing to do
    lease.acquire()
    other = ModelLease(str(tmp_path), "accounts", "run-B")  # same process, other lease
    with pytest.raises(LeaseHeld):
        other.acquire()
    other.release()  # does not hold it: must leave run-A's lease alone
    assert read_lease_json(tmp_path, "accounts")["run_id"] == "run-A"
    lease.release()
    lease.release()
    assert read_lease_json(tmp_path, "accounts") is None
    assert (tmp_path / "accounts" / "lease.lock").exists()  # kept: see _LocalStore.release
    assert other.acquire() is None
    other.release()


def test_local_heartbeat_refreshes_and_notices_a_replaced_lock(tmp_path: Path) -> None:
    root = tmp_path / "state" / "deep"  # created on demand
    lease = ModelLease(str(root), "accounts", "run-A", ttl_s=0.3)
    lease.acquire()
    try:
        first = read_lease_json(root, "accounts")["heartbeat_at"]
        assert wait_until(lambda: read_lease_json(root, "accounts")["heartbeat_at"] != first)
        assert not lease.lost
        (root / "accounts" / "lease.lock").unlink()  # someone wiped the state directory
        assert wait_until(lambda: lease.lost)
    finally:
        lease.release()


def test_local_unusable_store_raises_lease_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(LeaseError, match=str(blocker)):
        ModelLease(str(blocker / "state"), "accounts", "run-A").acquire()
    with pytest.raises(LeaseError, match="s3://bucket/prefix"):
        ModelLease("gs://bucket/x", "accounts", "run-A")
    with pytest.raises(LeaseError, match="safe identifier"):
        ModelLease(str(tmp_path), "../etc", "run-A")


# ------------------------------------------------------------------------ S3 store


def _key(s3_server: S3Server, url: str, model: str) -> str:  # noqa: F811
    return f"{url.removeprefix(f's3://{s3_server.bucket}/')}/{model}/lease.json"


def test_s3_held_then_released(s3_server: S3Server, s3_url: str) -> None:  # noqa: F811
    a = ModelLease(s3_url, "accounts", "run-A")
    assert a.acquire() is None
    try:
        assert s3_server.keys(_key(s3_server, s3_url, "accounts")) == [
            _key(s3_server, s3_url, "accounts")
        ]
        with pytest.raises(LeaseHeld) as err:
            ModelLease(s3_url, "accounts", "run-B").acquire()
        assert "by run run-A (host " in str(err.value) and "\n" not in str(err.value)
        with ModelLease(s3_url, "contacts", "run-C") as c:  # other models are free
            assert c.held
    finally:
        a.release()
    a.release()
    assert s3_server.keys(_key(s3_server, s3_url, "accounts")) == []
    b = ModelLease(s3_url, "accounts", "run-B")
    assert b.acquire() is None
    b.release()


def test_s3_expired_lease_is_taken_over(s3_server: S3Server, s3_url: str) -> None:  # noqa: F811
    a = ModelLease(s3_url, "accounts", "run-A", ttl_s=1)
    a.acquire()
    a._stop_heartbeat()  # as if run-A's worker died: no renewals, no release
    start = time.monotonic()
    b = ModelLease(s3_url, "accounts", "run-B", ttl_s=1, wait_s=10, poll_s=0.2)
    previous = b.acquire()
    try:
        assert time.monotonic() - start > 0.9  # not before the ttl ran out
        assert previous is not None and previous.run_id == "run-A"
        assert previous == a.info
        # run-A coming back to release must not remove run-B's lease.
        a.release()
        with pytest.raises(LeaseHeld, match="run run-B"):
            ModelLease(s3_url, "accounts", "run-C").acquire()
    finally:
        b.release()


def test_s3_heartbeat_keeps_a_lease_past_its_ttl(s3_server: S3Server, s3_url: str) -> None:  # noqa: F811
    a = ModelLease(s3_url, "accounts", "run-A", ttl_s=1)
    a.acquire()
    try:
        time.sleep(3)
        with pytest.raises(LeaseHeld, match="run run-A"):
            ModelLease(s3_url, "accounts", "run-B", ttl_s=1).acquire()
        assert not a.lost
    finally:
        a.release()
    b = ModelLease(s3_url, "accounts", "run-B", ttl_s=1)
    assert b.acquire() is None  # released, not expired: nothing to reconcile
    b.release()


def test_s3_heartbeat_notices_a_takeover(s3_server: S3Server, s3_url: str) -> None:  # noqa: F811
    a = ModelLease(s3_url, "accounts", "run-A", ttl_s=0.6)
    a.acquire()
    client = s3_server.client()
    key = _key(s3_server, s3_url, "accounts")
    other = LeaseInfo(
        run_id="run-X", host="elsewhere", pid=1, acquired_at="x", heartbeat_at="x"
    ).model_dump_json()
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=other.encode())
    assert wait_until(lambda: a.lost)
    a.release()  # not ours any more: left in place
    body = client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert json.loads(body)["run_id"] == "run-X"


def test_s3_missing_bucket_raises_lease_error(s3_server: S3Server) -> None:  # noqa: F811
    url = "s3://no-such-bucket-for-leases/some/prefix"
    with pytest.raises(LeaseError) as err:
        ModelLease(url, "accounts", "run-A").acquire()
    assert "s3://no-such-bucket-for-leases/some/prefix/accounts/lease.json" in str(err.value)
    assert "SF_ACTIVATION_STATE_URL" in str(err.value)


class _SkewedDatetime(dt.datetime):
    skew = dt.timedelta(0)

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return dt.datetime.now(tz) + cls.skew


def _skew_local_clock(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    """This machine's wall clock, as the lease module sees it, moved by `hours`."""
    offset = dt.timedelta(hours=hours)
    clock = type("Skewed", (_SkewedDatetime,), {"skew": offset})
    fake_dt = types.SimpleNamespace(
        datetime=clock, UTC=dt.UTC, timezone=dt.timezone, timedelta=dt.timedelta
    )
    fake_time = types.SimpleNamespace(
        time=lambda: time.time() + offset.total_seconds(),
        monotonic=time.monotonic,
        sleep=time.sleep,
    )
    monkeypatch.setattr(lease_mod, "dt", fake_dt)
    monkeypatch.setattr(lease_mod, "time", fake_time)


def _age_by_holder_clock(info: LeaseInfo) -> float:
    stamp = dt.datetime.strptime(info.heartbeat_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - stamp).total_seconds()


def test_s3_expiry_uses_s3s_clock_not_ours(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh lease written by a worker whose clock is an hour slow, judged by one whose
    # clock is an hour fast: by local clocks it is two hours old, yet it is live.
    _skew_local_clock(monkeypatch, -1)
    a = ModelLease(s3_url, "accounts", "run-A", ttl_s=1)
    a.acquire()
    assert a.info is not None and _age_by_holder_clock(a.info) > 3500  # the skew took
    a._stop_heartbeat()
    _skew_local_clock(monkeypatch, +1)
    with pytest.raises(LeaseHeld, match="run run-A"):
        ModelLease(s3_url, "accounts", "run-B", ttl_s=1).acquire()
    a.release()

    # A lease written by a worker an hour fast, then abandoned, judged by one an hour
    # slow: by local clocks it was renewed an hour from now, yet it has expired.
    _skew_local_clock(monkeypatch, +1)
    c = ModelLease(s3_url, "accounts", "run-C", ttl_s=1)
    c.acquire()
    c._stop_heartbeat()
    assert c.info is not None and _age_by_holder_clock(c.info) < -3500
    _skew_local_clock(monkeypatch, -1)
    d = ModelLease(s3_url, "accounts", "run-D", ttl_s=1, wait_s=10, poll_s=0.2)
    previous = d.acquire()
    try:
        assert previous is not None and previous.run_id == "run-C"
    finally:
        d.release()
        c.release()


def test_lease_held_pickles() -> None:
    import pickle

    info = LeaseInfo(
        run_id="R", host="H", pid=7, acquired_at="2026-12-02T07:00:00.5Z", heartbeat_at="x"
    )
    err = pickle.loads(pickle.dumps(LeaseHeld("accounts", info, wait_s=0, waited_s=0)))
    assert err.holder == info
    assert str(err) == (
        "model accounts is being synced by run R (host H, pid 7) since 2026-12-02T07:00:00Z; "
        "wait for it to finish, or retry later (SF_ACTIVATION_LEASE_WAIT_S=N waits up to N s)"
    )


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    """Two leases in one process (two threads) are as exclusive as two processes."""
    results: list[str] = []
    barrier = threading.Barrier(2)

    def take(run_id: str) -> None:
        lease = ModelLease(str(tmp_path), "accounts", run_id)
        barrier.wait()
        try:
            lease.acquire()
        except LeaseHeld:
            results.append("held")
            return
        results.append("got")
        time.sleep(0.3)
        lease.release()

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["got", "held"]
