"""Diff at scale: plan time and peak memory of plan_changes vs a naive pandas merge.

    .venv/bin/python bench/diff_scale.py --rows 1000000 [--rows 10000000] [--skip-pandas-above N]

For each size the data is generated in code (10 coerced field columns of mixed types,
in 100k-row Arrow batches): a previous version becomes the state snapshot, then the
current version (2% changed, 1% added, 1% removed) is planned against it. Each measured
engine runs in its own subprocess so its peak RSS (ru_maxrss) is its own:

- duckdb: ``plan_changes(batches, StateStore)`` then draining ``iter_to_send`` (what a
  sync does), DuckDB on disk under the work dir with the default 1 GB memory limit;
- pandas: the script one would write first: the whole source in a DataFrame, md5 of a
  JSON dump per row in Python, ``merge(how="outer", indicator=True)`` with the state.

Both must report the same counts (the pandas JSON is made byte-identical to DuckDB's for
this data), which checks the plan as well as timing it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH = 100_000
FIELDS = [
    "Name",
    "Email",
    "AnnualRevenue",
    "NumberOfEmployees",
    "IsActive__c",
    "CloseDate",
    "LastSeen__c",
    "Industry",
    "Website",
    "Parent.External_Id__c",
]
INDUSTRIES = pa.array(["Banking", "Energy", "Retail", "Technology", "Utilities"])


def _text(prefix: str, ids: pa.Array, suffix: str = "") -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(ids, pa.string()), suffix, "")


def make_batch(start: int, stop: int, version: int, n: int) -> pa.RecordBatch:
    """Rows [start, stop) of the given version; deterministic, no per-row Python."""
    ids = pa.array(range(start, stop), pa.int64())
    revenue = pc.add(pc.multiply(pc.cast(pc.bit_wise_and(ids, 0xFFFF), pa.float64()), 1.25), 10)
    if version == 1:  # 2% changed: every 50th row's revenue moved
        changed = pc.equal(pc.subtract(ids, pc.multiply(pc.divide(ids, 50), 50)), 0)
        revenue = pc.if_else(changed, pc.add(revenue, 1.0), revenue)
    mod7 = pc.subtract(ids, pc.multiply(pc.divide(ids, 7), 7))
    cols = {
        "__pk": _text("K", ids),
        "__error_code": pa.nulls(len(ids), pa.string()),
        "__error_message": pa.nulls(len(ids), pa.string()),
        "Name": _text("Account ", ids, " Ltd"),
        "Email": _text("person", ids, "@example.com"),
        "AnnualRevenue": revenue,
        "NumberOfEmployees": pc.add(pc.bit_wise_and(ids, 0x3FF), 1),
        "IsActive__c": pc.equal(pc.bit_wise_and(ids, 1), 0),
        "CloseDate": pa.array(["2026-12-31"] * len(ids), pa.string()),
        "LastSeen__c": pa.array(["2026-11-01T10:00:00.000Z"] * len(ids), pa.string()),
        "Industry": pc.take(INDUSTRIES, pc.bit_wise_and(ids, 3)),
        "Website": _text("https://www.a", ids, ".example.com"),
        # Every 7th row has no parent: nulls must hash deterministically too.
        "Parent.External_Id__c": pc.if_else(
            pc.equal(mod7, 0), None, _text("K", pc.divide(ids, 100))
        ),
    }
    return pa.record_batch(cols)


def source(n: int, version: int) -> Iterator[pa.RecordBatch]:
    """Version 0: keys 0..n-1. Version 1: drops every 100th key (1% removed), adds n/100
    new keys past n (1% added), and changes 2% (see make_batch)."""
    added = n // 100 if version == 1 else 0
    for start in range(0, n + added, BATCH):
        stop = min(start + BATCH, n + added)
        b = make_batch(start, stop, version, n)
        if version == 1:
            ids = pa.array(range(start, stop), pa.int64())
            keep = pc.or_(
                pc.not_equal(pc.subtract(ids, pc.multiply(pc.divide(ids, 100), 100)), 1),
                pc.greater_equal(ids, n),
            )
            b = b.filter(keep)
        yield b


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds of this process (all threads): comparable on a busy shared machine,
    where wall time is inflated by other work."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- child steps


def step_setup(n: int, work: Path) -> dict:
    """Plan version 0 against nothing and write what it would send as the snapshot."""
    from sf_activation.diff import plan_changes
    from sf_activation.state import SNAPSHOT_NAME, STATE_SCHEMA, StateStore, empty_state

    store = StateStore(str(work / "state"), "bench")
    target = work / "state" / "bench" / SNAPSHOT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        plan_changes(source(n, 0), empty_state(), work_dir=work) as plan,
        pq.ParquetWriter(target, STATE_SCHEMA, compression="zstd") as writer,
    ):
        for b in plan.iter_to_send(BATCH):
            rows = b.num_rows
            writer.write_table(
                pa.table(
                    {
                        "pk": b.column("__pk"),
                        "hash": b.column("__hash"),
                        "sf_id": _text("001000000", pc.cast(pa.array(range(rows)), pa.int64())),
                        "status": pa.array(["synced"] * rows),
                        "updated_at": pa.nulls(rows, STATE_SCHEMA.field("updated_at").type),
                        "payload": b.column("__payload"),
                    },
                    schema=STATE_SCHEMA,
                )
            )
    return {"state_rows": store.load(["pk"]).num_rows, "state_mb": target.stat().st_size / 2**20}


def step_duckdb(n: int, work: Path) -> dict:
    from sf_activation.diff import plan_changes
    from sf_activation.state import StateStore

    store = StateStore(str(work / "state"), "bench")
    t0, cpu0 = time.perf_counter(), cpu_s()
    plan = plan_changes(source(n, 1), store, work_dir=work / "plan")
    t_plan = time.perf_counter() - t0
    sent = sum(b.num_rows for b in plan.iter_to_send(10_000))
    removed = sum(b.num_rows for b in plan.iter_removed())
    t_total = time.perf_counter() - t0
    counts = {k: plan.counts[k] for k in ("rows", "added", "changed", "unchanged", "removed")}
    plan.close()
    assert sent == counts["added"] + counts["changed"] and removed == counts["removed"]
    return {
        "plan_s": t_plan,
        "total_s": t_total,
        "cpu_s": cpu_s() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
        "counts": counts,
    }


def step_pandas(n: int, work: Path) -> dict:
    import hashlib

    import numpy as np
    import pandas as pd

    t0, cpu0 = time.perf_counter(), cpu_s()
    state = pd.read_parquet(work / "state" / "bench" / "snapshot.parquet", columns=["pk", "hash"])
    df = pa.Table.from_batches(list(source(n, 1))).to_pandas()
    keys = sorted(FIELDS)

    def canon(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        return v.item() if hasattr(v, "item") else v

    records = df[keys].to_dict("records")
    df["hash"] = [
        hashlib.md5(
            json.dumps({k: canon(r[k]) for k in keys}, separators=(",", ":")).encode()
        ).hexdigest()
        for r in records
    ]
    merged = df[["__pk", "hash"]].merge(
        state, left_on="__pk", right_on="pk", how="outer", indicator=True, suffixes=("", "_st")
    )
    both = merged["_merge"] == "both"
    counts = {
        "rows": int((merged["_merge"] != "right_only").sum()),
        "added": int((merged["_merge"] == "left_only").sum()),
        "changed": int((both & (merged["hash"] != merged["hash_st"])).sum()),
        "unchanged": int((both & (merged["hash"] == merged["hash_st"])).sum()),
        "removed": int((merged["_merge"] == "right_only").sum()),
    }
    t = time.perf_counter() - t0
    return {
        "plan_s": t,
        "total_s": t,
        "cpu_s": cpu_s() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
        "counts": counts,
    }


STEPS = {"setup": step_setup, "duckdb": step_duckdb, "pandas": step_pandas}


def run_child(step: str, n: int, work: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, "--rows", str(n), "--work", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="source rows (repeatable)")
    parser.add_argument("--work", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument(
        "--skip-pandas-above",
        type=int,
        default=5_000_000,
        help="skip the pandas baseline above N rows",
    )
    parser.add_argument("--child", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.rows or [1_000_000]

    if args.child:
        print(json.dumps(STEPS[args.child](sizes[0], args.work)))
        return

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cpus={os.cpu_count()} load average={load} python={sys.version.split()[0]}")
    header = (
        f"{'rows':>11} | {'engine':<7} | {'plan s':>7} | {'+drain s':>8} | {'CPU s':>6} | "
        f"{'peak RSS MB':>11} | counts"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix="sfa-bench-", dir=args.work))
        try:
            setup = run_child("setup", n, work)
            engines = ["duckdb"] + (["pandas"] if n <= args.skip_pandas_above else [])
            results = {e: run_child(e, n, work) for e in engines}
            for engine, r in results.items():
                c = r["counts"]
                print(
                    f"{n:>11,} | {engine:<7} | {r['plan_s']:>7.1f} | {r['total_s']:>8.1f} | "
                    f"{r['cpu_s']:>6.1f} | "
                    f"{r['peak_rss_mb']:>11,.0f} | rows={c['rows']:,} added={c['added']:,} "
                    f"changed={c['changed']:,} unchanged={c['unchanged']:,} removed={c['removed']:,}",
                    flush=True,
                )
            if "pandas" in results:
                assert results["pandas"]["counts"] == results["duckdb"]["counts"], results
            print(
                f"{'':>11} | state snapshot {setup['state_mb']:.0f} MB Parquet for {setup['state_rows']:,} rows"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
