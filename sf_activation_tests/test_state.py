"""StateStore: commits, fold order, compaction, resume after a kill, and S3 via moto."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sf_activation.state import (
    COMMITS_DIR,
    SNAPSHOT_NAME,
    STATE_COLUMNS,
    StateError,
    StateStore,
    normalize_state,
)
from sf_activation_tests.support.s3 import S3Server, s3_server, s3_url  # noqa: F401


def rows(pks, status="synced", hashes=None, sf_ids=None) -> pa.Table:
    pks = list(pks)
    return pa.table(
        {
            "pk": pks,
            "hash": hashes or [f"h-{p}" for p in pks],
            "sf_id": sf_ids or [f"001{p}" for p in pks],
            "status": [status] * len(pks),
        }
    )


def as_dict(table: pa.Table, col: str = "hash") -> dict[str, object]:
    # Small test tables only: the store itself never builds a dict of rows.
    return dict(zip(table.column("pk").to_pylist(), table.column(col).to_pylist(), strict=True))


def test_empty_store_loads_empty_table(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "accounts")
    table = store.load()
    assert table.num_rows == 0
    assert table.column_names == list(STATE_COLUMNS)
    assert store.compact() == 0


def test_commits_fold_latest_wins_and_deleted_drop_out(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "accounts", run_id="run-1")
    store.commit(rows(["a", "b", "c"]))
    store.commit(rows(["a"], hashes=["h-a2"]))
    store.commit(rows(["b"], status="deleted"))
    store.commit(rows(["d"], status="rejected", sf_ids=[None]))
    # Within one commit the last row for a pk wins too.
    store.commit(pa.table({"pk": ["c", "c"], "hash": ["x", "h-c3"], "status": ["synced"] * 2}))
    table = store.load()
    assert as_dict(table) == {"a": "h-a2", "c": "h-c3", "d": "h-d"}
    assert as_dict(table, "status")["d"] == "rejected"
    assert as_dict(table, "sf_id")["c"] is None  # commit rows replace the whole row
    assert table.column("updated_at").null_count == 0
    assert as_dict(store.load(include_deleted=True), "status")["b"] == "deleted"
    # Commit files carry the store's sequence, so their lexical order is the order
    # written, whatever a worker's clock says.
    names = store.commit_files()
    assert names == sorted(names) and len(names) == 5
    assert names[0] == "s000000000001-run-1.parquet"


def test_commits_of_later_runs_win(tmp_path: Path) -> None:
    first = StateStore(str(tmp_path), "m", run_id="zzz-random-id")
    first.commit(rows(["a"], hashes=["old"]))
    second = StateStore(str(tmp_path), "m", run_id="aaa-random-id")
    second.commit(rows(["a"], hashes=["new"]))
    assert as_dict(StateStore(str(tmp_path), "m").load()) == {"a": "new"}


def test_compact_folds_and_removes_commits(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "m")
    store.commit(rows(["a", "b"]))
    store.commit(rows(["b"], status="deleted"))
    before = store.load()
    assert store.compact() == 1
    assert store.commit_files() == []
    assert (tmp_path / "m" / SNAPSHOT_NAME).is_file()
    assert as_dict(store.load()) == as_dict(before) == {"a": "h-a"}
    store.commit(rows(["c"]))
    assert as_dict(store.load()) == {"a": "h-a", "c": "h-c"}
    store.compact()
    assert as_dict(store.load()) == {"a": "h-a", "c": "h-c"}


def test_compaction_killed_before_cleanup_does_not_reapply(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "m")
    store.commit(rows(["a"], hashes=["v1"]))
    commits_dir = tmp_path / "m" / COMMITS_DIR
    saved = {p.name: p.read_bytes() for p in commits_dir.iterdir()}
    store.compact()
    # Simulate a compaction killed after writing the snapshot: its commits are still there.
    for name, data in saved.items():
        (commits_dir / name).write_bytes(data)
    # A later commit changed the row after compaction (so a re-applied v1 would be wrong
    # only if it were applied after it; it must simply be skipped).
    store.commit(rows(["a"], hashes=["v2"]))
    assert as_dict(store.load()) == {"a": "v2"}
    store.compact()
    assert as_dict(store.load()) == {"a": "v2"}
    assert store.commit_files() == []


def test_bad_rows_and_urls_are_refused(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "m")
    with pytest.raises(StateError, match="status 'done'"):
        store.commit(rows(["a"], status="done"))
    with pytest.raises(StateError, match="lack column"):
        store.commit(pa.table({"hash": ["x"]}))
    with pytest.raises(StateError, match="null pk"):
        store.commit(pa.table({"pk": pa.array([None], pa.string()), "status": ["synced"]}))
    with pytest.raises(StateError, match="safe identifier"):
        StateStore(str(tmp_path), "../escape")
    with pytest.raises(StateError, match="s3://bucket/prefix"):
        StateStore("gs://bucket/x", "m")
    assert store.commit(rows([])) == ""  # nothing to write, no empty file
    assert store.commit_files() == []


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "m")
    store.commit(rows(["a"]))
    store.compact()
    leftovers = [p for p in (tmp_path / "m").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


KILLER = textwrap.dedent(
    """
    import os, sys, time
    import pyarrow as pa
    from sf_activation.state import StateStore

    store = StateStore(sys.argv[1], "m", run_id="killed")
    for i in range(1000):
        pks = [f"k{i}-{j}" for j in range(50)]
        store.commit(pa.table({"pk": pks, "hash": ["h"] * 50, "status": ["synced"] * 50}))
        print(i, flush=True)  # the parent kills us after reading a number: that commit is done
        if i == 5:
            time.sleep(60)
    """
)


def test_resume_after_kill_between_batches(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    confirmed = -1
    for line in proc.stdout:
        confirmed = int(line)
        if confirmed == 5:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    table = StateStore(str(tmp_path), "m").load()
    expected = {f"k{i}-{j}" for i in range(6) for j in range(50)}
    assert set(table.column("pk").to_pylist()) == expected
    assert table.num_rows == len(expected)


def test_state_on_s3(s3_server: S3Server, s3_url: str) -> None:  # noqa: F811
    store = StateStore(s3_url, "accounts", run_id="r1")
    assert store.load().num_rows == 0
    store.commit(rows(["a", "b"]))
    store.commit(rows(["b"], status="deleted"))
    prefix = s3_url.removeprefix(f"s3://{s3_server.bucket}/")
    keys = s3_server.keys(prefix)
    assert len(keys) == 2 and all(f"{prefix}/accounts/commits/" in k for k in keys)
    assert as_dict(store.load()) == {"a": "h-a"}
    assert store.compact() == 1
    assert s3_server.keys(prefix) == [f"{prefix}/accounts/{SNAPSHOT_NAME}"]
    # A fresh store (another process, another machine) sees the same state.
    other = StateStore(s3_url, "accounts")
    other.commit(rows(["c"]))
    assert as_dict(StateStore(s3_url, "accounts").load()) == {"a": "h-a", "c": "h-c"}
    # The snapshot is ordinary Parquet anyone can read.
    body = (
        s3_server.client()
        .get_object(Bucket=s3_server.bucket, Key=f"{prefix}/accounts/{SNAPSHOT_NAME}")["Body"]
        .read()
    )
    assert pq.read_table(pa.BufferReader(body)).num_rows == 1


class _LaggingClock(dt.datetime):
    """A worker whose clock is an hour behind the one that compacted last."""

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
        return dt.datetime.now(tz) - dt.timedelta(hours=1)


def test_a_worker_whose_clock_lags_loses_no_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = StateStore(str(tmp_path), "accounts", run_id="on-time")
    first.commit(rows(["a", "b"]))
    first.compact()
    # The next run lands on a worker an hour behind: its commits must still count.
    import sf_activation.state as state_module

    lagging = type("dt", (), {"datetime": _LaggingClock, "UTC": dt.UTC, "timedelta": dt.timedelta})
    monkeypatch.setattr(state_module, "dt", lagging)
    late = StateStore(str(tmp_path), "accounts", run_id="lagging")
    late.commit(rows(["c"]))
    late.commit(rows(["a"], hashes=["h-a2"]))
    assert as_dict(late.load()) == {"a": "h-a2", "b": "h-b", "c": "h-c"}
    late.compact()
    monkeypatch.undo()
    assert as_dict(StateStore(str(tmp_path), "accounts").load()) == {
        "a": "h-a2",
        "b": "h-b",
        "c": "h-c",
    }


def test_sequence_continues_across_runs_and_after_older_files(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path), "accounts", run_id="old")
    # A commit file named by the earlier (clock) scheme, left by an older version.
    commits = tmp_path / "accounts" / "commits"
    commits.mkdir(parents=True)
    old = normalize_state(rows(["a"], hashes=["h-old"]))
    pq.write_table(old, commits / "20991231T235959000000Z-old-000001.parquet")
    assert (
        StateStore(str(tmp_path), "accounts", run_id="r1")
        .commit(rows(["a"]))
        .startswith("s000000000001-")
    )
    # The newer scheme's commit wins over the older file whatever the dates say.
    assert as_dict(store.load()) == {"a": "h-a"}
    store.compact()
    second = StateStore(str(tmp_path), "accounts", run_id="r2")
    assert second.commit(rows(["b"])) == "s000000000002-r2.parquet"
    assert as_dict(second.load()) == {"a": "h-a", "b": "h-b"}


def test_unwritable_store_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    store = StateStore(str(blocker), "accounts", run_id="r")
    with pytest.raises(StateError, match=r"state store .*not-a-dir.* is not writable"):
        store.check_writable()
