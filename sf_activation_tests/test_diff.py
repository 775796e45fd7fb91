"""plan_changes: every class, hashing, full resync, mirror safety, state round trip."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from sf_activation.diff import (
    DeleteRateExceeded,
    DiffError,
    Plan,
    check_delete_rate,
    plan_changes,
)
from sf_activation.state import StateStore, empty_state


def batch(pks, names=None, revenue=None, errors=None) -> pa.RecordBatch:
    """A coerced batch as coerce_batch would produce it (fields: Name, AnnualRevenue)."""
    pks = list(pks)
    n = len(pks)
    errors = errors or [None] * n
    return pa.record_batch(
        {
            "__pk": pa.array(pks, pa.string()),
            "__error_code": pa.array(errors, pa.string()),
            "__error_message": pa.array([e and f"bad: {e}" for e in errors], pa.string()),
            "Name": pa.array(names or [f"name {p}" for p in pks], pa.string()),
            "AnnualRevenue": pa.array(revenue or [1.0] * n, pa.float64()),
        }
    )


def collect(batches) -> pa.Table | None:
    batches = list(batches)
    return pa.Table.from_batches(batches) if batches else None


def col(batches, name: str) -> list:
    table = collect(batches)
    return [] if table is None else table.column(name).to_pylist()


def commit_all_sent(plan: Plan, store: StateStore, status: str = "synced") -> None:
    """What the sync does after Salesforce confirms: record hash, Id and payload."""
    for sent in plan.iter_to_send(batch_rows=3):
        pks = sent.column("__pk").to_pylist()
        store.commit(
            pa.table(
                {
                    "pk": sent.column("__pk"),
                    "hash": sent.column("__hash"),
                    "sf_id": pa.array([f"001{p}" for p in pks], pa.string()),
                    "status": pa.array([status] * len(pks)),
                    "payload": sent.column("__payload"),
                }
            )
        )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


def test_first_run_all_added_then_unchanged(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "accounts")
    source = [batch(["a", "b"]), batch(["c"])]
    with plan_changes(source, store.load(), work_dir=work) as plan:
        assert plan.counts["added"] == 3 and plan.counts["rows"] == 3
        sent = collect(plan.iter_to_send())
        assert sent is not None
        assert sent.column_names[:4] == ["__pk", "__hash", "__sf_id", "__class"]
        assert sent.column_names[4:] == ["Name", "AnnualRevenue", "__payload"]
        assert sent.column("__pk").to_pylist() == ["a", "b", "c"]  # query order kept
        commit_all_sent(plan, store)
    with plan_changes([batch(["a", "b", "c"])], store, work_dir=work) as plan:
        assert plan.counts["unchanged"] == 3
        assert plan.to_send == 0 and list(plan.iter_to_send()) == []
    # The plan's database is removed on close.
    assert not any(work.iterdir())


def test_every_class(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "accounts")
    with plan_changes([batch(["same", "chg", "rej", "gone", "dup"])], store, work_dir=work) as p:
        commit_all_sent(p, store)
    store.commit(pa.table({"pk": ["rej"], "hash": ["x"], "sf_id": [None], "status": ["rejected"]}))
    source = batch(
        ["same", "chg", "rej", "new", None, "dup", "dup", "err"],
        names=["name same", "CHANGED", "name rej", "n", "n", "d1", "d2", "e"],
        errors=[None] * 7 + ["STRING_TOO_LONG"],
    )
    with plan_changes([source], store, work_dir=work) as plan:
        assert plan.counts == {
            "rows": 8,
            "invalid": 4,
            "added": 1,
            "changed": 1,
            "unchanged": 1,
            "pending": 1,
            "removed": 1,
            "superseded": 0,
            "state_rows": 5,
            "state_synced": 4,
        }
        sent = collect(plan.iter_to_send())
        assert sent is not None
        classes = dict(
            zip(sent.column("__pk").to_pylist(), sent.column("__class").to_pylist(), strict=True)
        )
        assert classes == {"chg": "changed", "rej": "pending", "new": "added"}
        assert (
            dict(
                zip(
                    sent.column("__pk").to_pylist(), sent.column("__sf_id").to_pylist(), strict=True
                )
            )["chg"]
            == "001chg"
        )
        invalid = collect(plan.iter_invalid())
        assert invalid is not None
        assert invalid.column_names == [
            "__pk",
            "__error_code",
            "__error_message",
            "Name",
            "AnnualRevenue",
        ]
        codes = list(
            zip(
                invalid.column("__pk").to_pylist(),
                invalid.column("__error_code").to_pylist(),
                strict=True,
            )
        )
        assert codes == [
            (None, "NULL_PRIMARY_KEY"),
            ("dup", "DUPLICATE_PRIMARY_KEY"),
            ("dup", "DUPLICATE_PRIMARY_KEY"),
            ("err", "STRING_TOO_LONG"),
        ]
        assert invalid.column("__error_message").to_pylist()[3] == "bad: STRING_TOO_LONG"
        assert "appears on more than one row" in invalid.column("__error_message").to_pylist()[1]
        removed = collect(plan.iter_removed())
        assert removed is not None and removed.to_pylist() == [
            {"__pk": "gone", "__sf_id": "001gone"}
        ]
        # dup was synced before; now invalid, it is neither re-sent nor removed.


def test_full_resync_sends_unchanged(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "m")
    with plan_changes([batch(["a", "b"])], store, work_dir=work) as p:
        commit_all_sent(p, store)
    with plan_changes([batch(["a", "b", "c"])], store, work_dir=work, full_resync=True) as plan:
        assert plan.counts["unchanged"] == 2 and plan.counts["added"] == 1
        assert plan.to_send == 3
        assert sorted(col(plan.iter_to_send(), "__class")) == ["added", "unchanged", "unchanged"]


def test_hash_is_canonical(tmp_path: Path, work: Path) -> None:
    """Field order in the mapping does not matter; null and '' differ; values matter."""
    a = batch(["k"], names=["x"], revenue=[1.0])
    reordered = pa.record_batch(
        [a.column(0), a.column(1), a.column(2), a.column(4), a.column(3)],
        names=["__pk", "__error_code", "__error_message", "AnnualRevenue", "Name"],
    )
    null_name = pa.record_batch(
        {**{n: a.column(n) for n in a.schema.names}, "Name": pa.array([None], pa.string())}
    )
    empty_name = batch(["k"], names=[""], revenue=[1.0])
    hashes = []
    for b in (a, reordered, null_name, empty_name, batch(["k"], names=["x"], revenue=[1.0000001])):
        with plan_changes([b], empty_state(), work_dir=work) as plan:
            hashes.append(col(plan.iter_to_send(), "__hash")[0])
    assert hashes[0] == hashes[1]
    assert len(set(hashes[1:])) == 4
    # Coerced 1 (int) arrives as float64 1.0 for a currency field: same hash as 1.0.
    assert len(hashes[0]) == 32


def test_sample_changes_before_after(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "m")
    with plan_changes([batch(["a", "b"], revenue=[1.0, 2.0])], store, work_dir=work) as p:
        commit_all_sent(p, store)
    source = batch(["a", "b", "c"], names=["name a", "renamed", "name c"], revenue=[5.0, 2.0, 3.0])
    with plan_changes([source], store, work_dir=work) as plan:
        sample = plan.sample_changes(10)
    assert [s["pk"] for s in sample] == ["a", "b", "c"]
    assert sample[0]["changes"] == {"AnnualRevenue": {"before": 1.0, "after": 5.0}}
    assert sample[1]["changes"] == {"Name": {"before": "name b", "after": "renamed"}}
    assert sample[2]["class"] == "added"
    assert sample[2]["changes"] == {"Name": {"after": "name c"}, "AnnualRevenue": {"after": 3.0}}


def test_batches_are_full(tmp_path: Path, work: Path) -> None:
    source = [batch([f"k{i}-{j}" for j in range(7)]) for i in range(10)]
    with plan_changes(source, empty_state(), work_dir=work) as plan:
        sizes = [b.num_rows for b in plan.iter_to_send(batch_rows=20)]
    assert sizes == [20, 20, 20, 10]


def test_rows_to_send_come_in_source_order_across_read_ranges(
    tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows are read a range of the source at a time; shrink the range so a small plan
    # spans many, with ranges holding nothing to send, some invalid rows and unchanged ones.
    monkeypatch.setattr("sf_activation.diff.SEND_RANGE_ROWS", 4)
    store = StateStore(str(tmp_path / "state"), "m")
    with plan_changes([batch([f"u{i:02d}" for i in range(10)])], store, work_dir=work) as plan:
        commit_all_sent(plan, store)
    pks = [f"u{i:02d}" for i in range(10)] + [f"n{i:02d}" for i in range(13)]
    errors = [None] * 23
    errors[12] = errors[17] = "INVALID"
    source = [batch(pks[:9], errors=errors[:9]), batch(pks[9:], errors=errors[9:])]
    with plan_changes(source, store, work_dir=work) as plan:
        sent = col(plan.iter_to_send(batch_rows=5), "__pk")
    assert sent == [p for p, e in zip(pks, errors, strict=True) if p[0] == "n" and e is None]


def test_state_table_and_store_agree(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "m")
    with plan_changes([batch(["a", "b", "c"])], store, work_dir=work) as p:
        commit_all_sent(p, store)
    store.commit(pa.table({"pk": ["b"], "status": ["deleted"]}))
    source = [batch(["a", "c", "d"], names=["name a", "C!", "d"])]
    with plan_changes(source, store, work_dir=work) as p1:
        from_store = p1.counts
    with plan_changes(source, store.load(), work_dir=work) as p2:
        assert p2.counts == from_store
    assert from_store["unchanged"] == 1 and from_store["changed"] == 1 and from_store["added"] == 1


def test_empty_source_and_bad_source(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "m")
    with plan_changes([batch(["a"])], store, work_dir=work) as p:
        commit_all_sent(p, store)
    schema = batch(["x"]).schema
    with plan_changes([], store, work_dir=work, schema=schema) as plan:
        assert plan.counts["rows"] == 0 and plan.counts["removed"] == 1
        assert plan.fields == ["Name", "AnnualRevenue"]
    with plan_changes([], store, work_dir=work, detect_removed=False) as plan:
        assert plan.counts["removed"] == 0
    with pytest.raises(DiffError, match="__pk"):
        plan_changes([pa.record_batch({"Name": ["x"]})], store, work_dir=work)


def mirror_state(tmp_path: Path, work: Path, n: int) -> StateStore:
    store = StateStore(str(tmp_path / "state"), "prospect_leads")
    with plan_changes([batch([f"k{i:03d}" for i in range(n)])], store, work_dir=work) as p:
        commit_all_sent(p, store)
    return store


def test_mirror_refuses_to_wipe_on_empty_query(tmp_path: Path, work: Path) -> None:
    store = mirror_state(tmp_path, work, 50)
    with plan_changes([], store, work_dir=work) as plan:
        with pytest.raises(DeleteRateExceeded) as info:
            check_delete_rate(plan, max_delete_rate=0.2, model="prospect_leads")
        message = str(info.value)
        assert "refusing to delete 50 of 50 synced records (100.0%)" in message
        assert "the query returned no rows" in message
        assert "k000" in message
        assert "raise max_delete_rate in models/prospect_leads.yml" in message
        assert "--allow-deletes" in message
        assert info.value.removed == 50
        check_delete_rate(plan, max_delete_rate=0.2, model="prospect_leads", allow_deletes=True)
        check_delete_rate(plan, max_delete_rate=1.0, model="prospect_leads")


def test_mirror_allows_deletes_within_rate(tmp_path: Path, work: Path) -> None:
    store = mirror_state(tmp_path, work, 50)
    keep = [f"k{i:03d}" for i in range(40)]  # 10 of 50 leave: 20%
    with plan_changes([batch(keep)], store, work_dir=work) as plan:
        assert plan.counts["removed"] == 10
        check_delete_rate(plan, max_delete_rate=0.2, model="m")
        with pytest.raises(DeleteRateExceeded, match="10 of 50 synced records"):
            check_delete_rate(plan, max_delete_rate=0.1, model="m")
        # The caller may give its own denominator (e.g. records counted in Salesforce).
        check_delete_rate(plan, max_delete_rate=0.1, model="m", synced_count=500)


def test_insert_only_never_resends(tmp_path: Path, work: Path) -> None:
    store = StateStore(str(tmp_path / "state"), "events")
    with plan_changes([batch(["a", "b"])], store, work_dir=work, insert_only=True) as p:
        commit_all_sent(p, store)
    store.commit(pa.table({"pk": ["b"], "hash": ["x"], "status": ["rejected"]}))
    source = [batch(["a", "b", "c"], names=["changed", "name b", "name c"])]
    kw = {"work_dir": work, "insert_only": True, "full_resync": True}
    with plan_changes(source, store, **kw) as plan:  # type: ignore[arg-type]
        assert plan.counts["changed"] == 1
        assert col(plan.iter_to_send(), "__pk") == ["b", "c"]
        assert plan.to_send == 2
