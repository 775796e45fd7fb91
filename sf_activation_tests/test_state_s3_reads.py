"""State on S3 without whole downloads: a read fetches only the columns it asks for (range
requests, counted on the wire by a proxy in front of moto's S3 server), and compaction
leaves a large snapshot alone until the commits beside it are worth folding.

Every figure checked here is counted, not estimated: the proxy counts the bytes S3 sends
back (headers and bodies) and records each request's line and Range header.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from sf_activation.config import Settings, SettingsError
from sf_activation.state import (
    COMMITS_DIR,
    KEY_SALT_NAME,
    SNAPSHOT_NAME,
    StateStore,
)
from sf_activation_tests.support.s3 import S3Server, s3_server, s3_url  # noqa: F401

ROWS = 12_000  # with BLOB bytes of random payload each: a snapshot above SMALL_SNAPSHOT
BLOB = 1_500
SMALL_SNAPSHOT = 16 << 20  # state.COMPACT_MIN_SNAPSHOT_BYTES: always compacted below it
NARROW = ["pk", "hash", "sf_id", "status"]  # what a plan needs of every row


class CountingProxy:
    """A TCP forwarder to moto: counts the bytes coming back and records the requests."""

    _REQUEST = re.compile(rb"^(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1$")
    _RANGE = re.compile(rb"^range: *bytes=(\d+)-(\d*)$", re.IGNORECASE)

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._lock = threading.Lock()
        self.received = 0
        self.requests: list[list] = []  # [method, path, (first, last) | None]
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.received = 0
            self.requests = []

    def close(self) -> None:
        self._sock.close()

    def gets(self, key: str) -> list[tuple[int, int] | None]:
        """The ranges of the GETs of one object (None: the whole object)."""
        return [r[2] for r in self.requests if r[0] == "GET" and r[1].split("?")[0].endswith(key)]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, outgoing: bool) -> None:
        last: list | None = None
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    if outgoing:
                        for line in data.split(b"\r\n"):
                            if m := self._REQUEST.match(line):
                                last = [m.group(1).decode(), m.group(2).decode(), None]
                                self.requests.append(last)
                            elif (m := self._RANGE.match(line)) and last is not None:
                                last[2] = (int(m.group(1)), int(m.group(2) or -1))
                    else:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for end in (dst, src):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:  # noqa: F811
    """Stores made while it is up reach moto through the proxy (boto3 and pyarrow both)."""
    host, port = s3_server.endpoint_url.removeprefix("http://").rsplit(":", 1)
    counting = CountingProxy((host, int(port)))
    monkeypatch.setenv("AWS_ENDPOINT_URL", counting.url)
    try:
        yield counting
    finally:
        counting.close()


def big_rows(pks: list[str], *, seed: int, status: str = "synced", tag: str = "v1") -> pa.Table:
    """Rows with a payload of BLOB random bytes each (barely compressible, as a long text
    field would be): the payload column is nearly all of the file."""
    rng = random.Random(seed)
    payload = [
        json.dumps(
            {"Name": pk, "Blob__c": base64.b64encode(rng.randbytes(BLOB)).decode()},
            separators=(",", ":"),
        )
        for pk in pks
    ]
    return pa.table(
        {
            "pk": pks,
            "hash": [hashlib.md5(f"{tag}{p}".encode()).hexdigest() for p in pks],
            "sf_id": [f"001{i:015d}" for i in range(len(pks))],
            "status": [status] * len(pks),
            "payload": payload,
        }
    )


def keys(n: int, start: int = 0) -> list[str]:
    return [f"k{i:06d}" for i in range(start, start + n)]


def by_pk(table: pa.Table) -> pa.Table:
    return table.sort_by("pk")


def object_size(s3: S3Server, url: str, rel: str) -> int:
    return head(s3, url, rel)["ContentLength"]


def head(s3: S3Server, url: str, rel: str) -> dict:
    key = url.removeprefix(f"s3://{s3.bucket}/") + f"/m/{rel}"
    return s3.client().head_object(Bucket=s3.bucket, Key=key)


def snapshot_version(s3: S3Server, url: str) -> tuple[str, object]:
    meta = head(s3, url, SNAPSHOT_NAME)
    return meta["ETag"], meta["LastModified"]


def seeded_store(url: str, **kwargs) -> StateStore:
    """A state of ROWS rows with large payloads, compacted into one snapshot."""
    store = StateStore(url, "m", run_id="seed", **kwargs)
    store.commit(big_rows(keys(ROWS), seed=1))
    assert store.compact() == ROWS  # no snapshot yet: due
    return store


def test_a_projected_read_transfers_a_small_part_of_the_state_and_reads_the_same_rows(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,  # noqa: F811
    proxy: CountingProxy,
) -> None:
    seeded_store(s3_url)
    # A commit left beside the snapshot (too small to compact), itself large enough to be
    # read by columns too: updates, new rows and deletes.
    change = big_rows(keys(600, start=ROWS - 300), seed=2, tag="v2")
    run = StateStore(s3_url, "m", run_id="run-2")
    run.commit(change)
    run.commit(pa.table({"pk": keys(50, start=100), "status": ["deleted"] * 50}))
    assert len(run.commit_files()) == 2
    snap_bytes = object_size(s3_server, s3_url, SNAPSHOT_NAME)
    assert snap_bytes > SMALL_SNAPSHOT
    total = snap_bytes + sum(
        object_size(s3_server, s3_url, f"{COMMITS_DIR}/{c}") for c in run.commit_files()
    )

    reader = StateStore(s3_url, "m")
    proxy.reset()
    narrow = reader.load(NARROW)
    narrow_bytes, requests = proxy.received, list(proxy.requests)
    proxy.reset()
    full = reader.load()
    full_bytes = proxy.received

    # The same rows as a full read, column for column.
    assert by_pk(narrow).equals(by_pk(full.select(NARROW)))
    assert narrow.num_rows == ROWS + 300 - 50
    assert full_bytes >= total  # a full read still fetches everything
    # A projected read: the footer and the chunks of the columns asked for, by range.
    assert narrow_bytes < 0.1 * total, (narrow_bytes, total)
    snap_gets = [r[2] for r in requests if r[0] == "GET" and r[1].endswith(SNAPSHOT_NAME)]
    assert snap_gets and all(r is not None for r in snap_gets), requests
    fetched = sum(last - first + 1 for first, last in snap_gets)
    assert fetched < 0.1 * snap_bytes, (fetched, snap_bytes)
    print(f"\nprojected read: {narrow_bytes} of {total} bytes ({narrow_bytes / total:.1%})")

    # Fewer columns still: only what folding needs besides them.
    proxy.reset()
    statuses = reader.load(["status"])
    assert proxy.received < narrow_bytes
    assert statuses.num_rows == narrow.num_rows
    assert sorted(statuses.column("status").to_pylist()) == ["synced"] * narrow.num_rows


def test_small_commits_leave_the_snapshot_alone_until_the_threshold(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,  # noqa: F811
    proxy: CountingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SF_ACTIVATION_COMPACT_RATIO", "0.1")
    seeded_store(s3_url)
    version = snapshot_version(s3_server, s3_url)
    snap_bytes = object_size(s3_server, s3_url, SNAPSHOT_NAME)
    expected = {pk: hashlib.md5(f"v1{pk}".encode()).hexdigest() for pk in keys(ROWS)}
    per_run = 300  # a tenth of the snapshot's rows is four runs of 300
    for n in range(1, 5):
        run = StateStore(s3_url, "m", run_id=f"run-{n}")
        changed = keys(per_run - 10, start=(n - 1) * 1000) + keys(10, start=ROWS + n * 100)
        run.commit(
            pa.table({"pk": changed, "hash": [f"r{n}"] * per_run, "status": ["synced"] * per_run})
        )
        expected.update(dict.fromkeys(changed, f"r{n}"))
        before = by_pk(run.load())
        assert (
            dict(zip(before["pk"].to_pylist(), before["hash"].to_pylist(), strict=True)) == expected
        )
        due = n * per_run >= 0.1 * ROWS
        proxy.reset()
        run.compact()
        if not due:
            # Left as it was: neither downloaded (footers only) nor uploaded again.
            assert snapshot_version(s3_server, s3_url) == version
            assert proxy.received < 0.02 * snap_bytes, (proxy.received, snap_bytes)
            print(f"\ndeferred compaction {n}: {proxy.received} bytes in, {snap_bytes} snapshot")
            assert not [r for r in proxy.requests if r[0] in ("PUT", "POST")], proxy.requests
            assert len(run.commit_files()) == n
            continue
        assert snapshot_version(s3_server, s3_url) != version
        assert run.commit_files() == []
        after = by_pk(StateStore(s3_url, "m").load())
        assert after.equals(before)
    # What a reader sees did not depend on when the snapshot was rewritten.
    narrow = by_pk(StateStore(s3_url, "m").load(["pk", "hash"]))
    assert dict(zip(narrow["pk"].to_pylist(), narrow["hash"].to_pylist(), strict=True)) == expected


KILLED_COMPACTION = textwrap.dedent(
    """
    import sys
    from sf_activation.state import StateStore

    StateStore(sys.argv[1], "m", run_id="compactor").compact()
    """
)


def test_a_compaction_killed_after_writing_the_snapshot_reads_right_and_is_cleaned_up(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,  # noqa: F811
) -> None:
    seeded_store(s3_url)
    run = StateStore(s3_url, "m", run_id="run-1")
    run.commit(pa.table({"pk": keys(20), "hash": ["new"] * 20, "status": ["synced"] * 20}))
    run.commit(pa.table({"pk": keys(5, start=20), "status": ["deleted"] * 5}))
    expected = by_pk(run.load())
    version = snapshot_version(s3_server, s3_url)
    leftovers = run.commit_files()

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_COMPACTION, s3_url],
        # A ratio of 0: compaction after every run, as before the ratio existed.
        env={
            **os.environ,
            "SF_ACTIVATION_TEST_KILL_AT": "state_compact:1",
            "SF_ACTIVATION_COMPACT_RATIO": "0",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The new snapshot is written; the commits it folded are still there.
    assert snapshot_version(s3_server, s3_url) != version
    assert StateStore(s3_url, "m").commit_files() == leftovers
    reader = StateStore(s3_url, "m")
    assert by_pk(reader.load()).equals(expected)
    assert by_pk(reader.load(NARROW)).equals(expected.select(NARROW))

    # The next run numbers its commits after them and applies them once, in order.
    later = StateStore(s3_url, "m", run_id="run-3")
    name = later.commit(pa.table({"pk": keys(1), "hash": ["newer"], "status": ["synced"]}))
    assert name > leftovers[-1]
    got = by_pk(later.load(["pk", "hash"]))
    assert got["hash"].to_pylist()[:2] == ["newer", "new"]
    assert got.num_rows == expected.num_rows
    # Its compaction is not due (one small commit), but the leftovers go; the snapshot stays.
    version = snapshot_version(s3_server, s3_url)
    later.compact()
    assert later.commit_files() == [name]
    assert snapshot_version(s3_server, s3_url) == version
    assert by_pk(StateStore(s3_url, "m").load(["pk", "hash"])).equals(got)


def _digests(s3: S3Server, url: str, pks: list[str]) -> list[str]:
    """The digests as docs/internals.md defines them, from the salt beside the state."""
    key = url.removeprefix(f"s3://{s3.bucket}/") + f"/m/{KEY_SALT_NAME}"
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    salt = bytes.fromhex(json.loads(body)["salt"])
    k = hmac.new(b"", b"sf_activation primary key v1\0" + salt, hashlib.sha256).digest()
    return ["h:" + hmac.new(k, p.encode(), hashlib.sha256).hexdigest() for p in pks]


def test_a_store_keeping_digests_reads_right_by_columns_before_and_after_its_migration(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,  # noqa: F811
    proxy: CountingProxy,
) -> None:
    # A clear-key state (written before the model redacted its key): a large snapshot and
    # a commit beside it that a clear store does not fold yet.
    seeded_store(s3_url)
    clear = StateStore(s3_url, "m", run_id="clear-run")
    clear.commit(pa.table({"pk": keys(10), "hash": ["c2"] * 10, "status": ["synced"] * 10}))
    snap_bytes = object_size(s3_server, s3_url, SNAPSHOT_NAME)

    def store(run_id: str | None = None) -> StateStore:
        return StateStore(s3_url, "m", run_id=run_id, redact_key=True, redact=["Name"])

    # The model now redacts its key: the first writer saves the salt with a digest commit.
    first = store("digest-run")
    # Its first write saves the salt (a delete of a key the state does not hold).
    first.commit(pa.table({"pk": ["h:" + "0" * 64], "status": ["deleted"]}))
    digests = dict(zip(keys(ROWS), _digests(s3_server, s3_url, keys(ROWS)), strict=True))
    first.commit(pa.table({"pk": [digests["k000011"]], "hash": ["d3"], "status": ["synced"]}))
    want = {digests[p]: hashlib.md5(f"v1{p}".encode()).hexdigest() for p in keys(ROWS)}
    want.update({digests[p]: "c2" for p in keys(10)})
    want[digests["k000011"]] = "d3"

    def check(reader: StateStore) -> pa.Table:
        proxy.reset()
        narrow = by_pk(reader.load(["pk", "hash", "status"]))
        assert proxy.received < 0.15 * snap_bytes, (proxy.received, snap_bytes)
        print(f"\ndigest store, projected read: {proxy.received} of {snap_bytes} bytes")
        assert dict(zip(narrow["pk"].to_pylist(), narrow["hash"].to_pylist(), strict=True)) == want
        full = by_pk(reader.load())
        assert narrow.equals(full.select(["pk", "hash", "status"]))
        # Payloads of rows read from clear files have the key's field masked.
        payloads = [json.loads(p)["Name"] for p in full["payload"].to_pylist() if p]
        assert payloads and all(not str(v).startswith("k0") for v in payloads)
        return narrow

    before = check(store())  # clear snapshot, a clear commit, digest commits
    assert (
        first.compact() == ROWS
    )  # keys in clear: never put off; migrated: an all-digest snapshot, commits folded
    assert first.commit_files() == []
    # Read back by columns: the snapshot's form survives the projected copy (a digest
    # taken for a clear key would be digested again and match nothing).
    after = check(store())
    assert after.equals(before)
    # A later small commit is not folded into the large digest snapshot; reads still agree.
    late = store("late-run")
    late.commit(pa.table({"pk": [digests["k000012"]], "hash": ["d4"], "status": ["synced"]}))
    want[digests["k000012"]] = "d4"
    version = snapshot_version(s3_server, s3_url)
    late.compact()
    assert snapshot_version(s3_server, s3_url) == version
    assert len(late.commit_files()) == 1
    check(store())
    # Another process whose model no longer redacts its key keeps reading digests.
    plain = StateStore(s3_url, "m").load(["pk"])
    assert set(plain["pk"].to_pylist()) == set(want)


def test_sf_activation_compact_ratio_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings.from_env({}).compact_ratio == 0.1
    assert Settings.from_env({"SF_ACTIVATION_COMPACT_RATIO": "0.25"}).compact_ratio == 0.25
    for bad in ("often", "-0.1", "1.5", "nan"):
        with pytest.raises(SettingsError) as info:
            Settings.from_env({"SF_ACTIVATION_COMPACT_RATIO": bad})
        message = str(info.value)
        assert "\n" not in message and "SF_ACTIVATION_COMPACT_RATIO" in message, message
    # A store reads it from the environment unless it is given.
    monkeypatch.setenv("SF_ACTIVATION_COMPACT_RATIO", "0.5")
    assert StateStore(str(tmp_path), "m").compact_ratio == 0.5
    assert StateStore(str(tmp_path), "m", compact_ratio=0.0).compact_ratio == 0.0


def test_when_compaction_is_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sf_activation.state as state

    store = StateStore(str(tmp_path), "m", run_id="r", compact_ratio=0.5)
    assert not store.compaction_due()  # nothing at all
    store.commit(pa.table({"pk": keys(10), "hash": ["a"] * 10, "status": ["synced"] * 10}))
    assert store.compaction_due()  # no snapshot yet
    assert store.compact() == 10
    store.commit(pa.table({"pk": keys(4), "hash": ["b"] * 4, "status": ["synced"] * 4}))
    assert store.compaction_due()  # a small snapshot is always rewritten
    monkeypatch.setattr(state, "COMPACT_MIN_SNAPSHOT_BYTES", 0)  # as if it were large
    assert not store.compaction_due()  # 4 rows beside 10: under half
    assert store.compaction_due(force=True)
    assert store.compact() == 10 and len(store.commit_files()) == 1  # left as it is
    store.commit(pa.table({"pk": keys(1, start=10), "hash": ["c"], "status": ["synced"]}))
    assert store.compaction_due()  # 5 of 10
    monkeypatch.setattr(state, "COMPACT_MAX_COMMIT_FILES", 1)
    assert StateStore(str(tmp_path), "m", compact_ratio=1.0).compaction_due()  # 2 files
    monkeypatch.setattr(state, "COMPACT_MAX_COMMIT_FILES", 500)
    assert not StateStore(str(tmp_path), "m", compact_ratio=1.0).compaction_due()
    assert StateStore(str(tmp_path), "m", compact_ratio=1.0).compact(force=True) == 11
    assert store.commit_files() == [] and not store.compaction_due(force=True)
    got = store.load(["pk", "hash"])
    assert dict(zip(got["pk"].to_pylist(), got["hash"].to_pylist(), strict=True)) == {
        **dict.fromkeys(keys(10), "a"),
        **dict.fromkeys(keys(4), "b"),
        "k000010": "c",
    }
