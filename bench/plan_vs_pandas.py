"""`sf-activation plan` as a whole process, beside a naive pandas diff and a pure-DuckDB floor.

    .venv/bin/python -m bench.plan_vs_pandas --rows 1000000 [--changed 0.01] [--skip-pandas-above N]

In one run, on the Account-like DuckDB warehouse of bench/harness.py (ten mapped fields):

1. setup (not measured): the model is planned once by the project's own code
   (`SyncRun._make_plan` against the emulator's describe) and every row to send is
   committed to the model's state through `StateStore.commit` as synced, then compacted:
   the state a first sync leaves, without sending a million records to the emulator;
2. a share of rows (``--changed``, 1% by default) gets a new AnnualRevenue;
3. each measured approach runs as its own process (peak RSS is its own, through
   bench/rusage_wrapper.py):

   - **plan**: ``python -m sf_activation plan MODEL --json`` (imports, describe, warehouse
     query, coercion, hashing, diff, summary);
   - **pandas**: the script one writes first: both tables read with pandas (the warehouse
     through DuckDB, the state from its Parquet snapshot), md5 of each row's JSON with
     hashlib in Python, ``merge(how="outer", indicator=True)``, classify;
   - **duckdb SQL**: the floor: one DuckDB query hashing the warehouse rows and joining
     them with the state Parquet (no coercion, no invalid-row or duplicate handling).

All three must report the same counts (the pandas and SQL JSON are made byte-identical to
the canonical payload for this data), which checks the figures as well as timing them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.harness import ACCOUNT_FIELDS, ROOT, build_accounts, emulator, measure, write_model

MODEL = "plan_bench"
COUNT_KEYS = ("rows", "added", "changed", "unchanged", "removed")


def _env(work: Path, instance_url: str, token: str, ca_bundle: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SALESFORCE_INSTANCE_URL": instance_url,
        "SALESFORCE_ACCESS_TOKEN": token,
        "SALESFORCE_CA_BUNDLE": ca_bundle,
        "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{work / 'warehouse.duckdb'}",
        "SF_ACTIVATION_MODELS_DIR": str(work / "models"),
        "SF_ACTIVATION_STATE_URL": str(work / "state"),
        "SF_ACTIVATION_REJECTS_URL": str(work / "rejects"),
    }


# --------------------------------------------------------------------------- child steps


def step_setup(work: Path) -> dict:
    """State as a first sync leaves it: every planned row committed as synced."""
    import pyarrow as pa

    from sf_activation.config import Settings
    from sf_activation.models import load_model
    from sf_activation.state import STATE_SCHEMA
    from sf_activation.sync import SyncRun

    settings = Settings.from_env()
    run = SyncRun(load_model(work / "models" / f"{MODEL}.yml"), settings)
    plan = run.plan()  # the very plan `sf-activation plan` makes
    try:
        committed = 0
        for b in plan.iter_to_send(100_000):
            n = b.num_rows
            # State keeps the stored payload (masked) when the model redacts fields.
            payload = "__stored_payload" if "__stored_payload" in b.schema.names else "__payload"
            run.state.commit(
                pa.table(
                    {
                        "pk": b.column("__pk"),
                        "hash": b.column("__hash"),
                        "sf_id": pa.array([f"001{committed + i:015d}" for i in range(n)]),
                        "status": pa.array(["synced"] * n),
                        "updated_at": pa.nulls(n, STATE_SCHEMA.field("updated_at").type),
                        "payload": b.column(payload),
                    },
                    schema=STATE_SCHEMA,
                )
            )
            committed += n
    finally:
        plan.close()
    kept = run.state.compact(work_dir=work)
    run._cleanup()
    return {"state_rows": kept}


def _snapshot(work: Path) -> Path:
    return next((work / "state").rglob("snapshot.parquet"))


def step_pandas(work: Path) -> dict:
    """The naive diff: whole tables in pandas, a Python md5 per row, an outer merge."""
    import hashlib
    import math

    import duckdb
    import numpy as np
    import pandas as pd

    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    cols = ", ".join(f'{c} AS "{f}"' for c, f in ACCOUNT_FIELDS.items())
    df = con.sql(f"SELECT account_id AS pk, {cols} FROM accounts").df()
    con.close()
    state = pd.read_parquet(_snapshot(work), columns=["pk", "hash"])
    keys = sorted(ACCOUNT_FIELDS.values())

    def canon(k: str, v: object) -> object:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if k == "NumberOfEmployees":  # Salesforce int: the canonical JSON writes an integer
            return int(v)
        if k == "AnnualRevenue":  # currency of scale 0, rounded half up as Salesforce saves
            return float(math.floor(float(v) + 0.5))
        return v.item() if hasattr(v, "item") else v

    df["hash"] = [
        hashlib.md5(
            json.dumps({k: canon(k, r[k]) for k in keys}, separators=(",", ":")).encode()
        ).hexdigest()
        for r in df[keys].to_dict("records")
    ]
    merged = df[["pk", "hash"]].merge(
        state, on="pk", how="outer", indicator=True, suffixes=("", "_st")
    )
    both = merged["_merge"] == "both"
    same = merged["hash"] == merged["hash_st"]
    return {
        "rows": int((merged["_merge"] != "right_only").sum()),
        "added": int((merged["_merge"] == "left_only").sum()),
        "changed": int((both & ~same).sum()),
        "unchanged": int((both & same).sum()),
        "removed": int((merged["_merge"] == "right_only").sum()),
    }


def step_sql(work: Path) -> dict:
    """The floor: hash and join in one DuckDB query (the canonical JSON, no coercion)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '1GB'")
    con.execute(f"ATTACH '{work / 'warehouse.duckdb'}' AS wh (READ_ONLY)")
    by_field = {f: c for c, f in ACCOUNT_FIELDS.items()}
    # AnnualRevenue is a currency of scale 0 in the emulator's describe: rounded as coerced.
    by_field["AnnualRevenue"] = "round(annual_revenue, 0)"
    pairs = ", ".join(f"'{f}', {by_field[f]}" for f in sorted(by_field))
    row = con.sql(
        f"""
        WITH src AS (
            SELECT account_id AS pk, md5(json_object({pairs})::VARCHAR) AS hash
            FROM wh.accounts
        ),
        st AS (SELECT pk, hash FROM read_parquet('{_snapshot(work)}'))
        SELECT count(src.pk), count(*) FILTER (st.pk IS NULL),
               count(*) FILTER (src.pk IS NOT NULL AND st.pk IS NOT NULL AND src.hash <> st.hash),
               count(*) FILTER (src.hash = st.hash), count(*) FILTER (src.pk IS NULL)
        FROM src FULL OUTER JOIN st ON src.pk = st.pk
        """
    ).fetchall()[0]
    return dict(zip(COUNT_KEYS, (int(x) for x in row), strict=True))


STEPS = {"setup": step_setup, "pandas": step_pandas, "sql": step_sql}


# --------------------------------------------------------------------------- driver


def _child(step: str, work: Path) -> list[str]:
    return [sys.executable, "-m", "bench.plan_vs_pandas", "--child", step, "--work", str(work)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of rows changed")
    parser.add_argument("--skip-pandas-above", type=int, default=2_000_000)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(STEPS[args.child](args.work)))
        return 0

    import duckdb

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cpus={os.cpu_count()} load average={load} rows={args.rows:,}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp, emulator(0) as emu:
        work = Path(tmp)
        build_accounts(work / "warehouse.duckdb", args.rows)
        write_model(work / "models", MODEL, "upsert", "auto")
        env = _env(work, emu.instance_url, emu.access_token, emu.ca_bundle)
        setup = measure(_child("setup", work), env, cwd=ROOT)
        print(f"setup: {json.loads(setup.stdout.splitlines()[-1])} in {setup.wall_s:.1f} s")
        con = duckdb.connect(str(work / "warehouse.duckdb"))
        n_changed = max(1, int(args.rows * args.changed))
        con.execute(
            "UPDATE accounts SET annual_revenue = annual_revenue + 1 WHERE account_id IN "
            f"(SELECT account_id FROM accounts ORDER BY hash(account_id) LIMIT {n_changed})"
        )
        con.close()

        results: dict[str, tuple[float, float, float, dict]] = {}
        plan_cmd = [sys.executable, "-m", "sf_activation", "plan", MODEL, "--json"]
        m = measure(plan_cmd, env, cwd=work)
        summary = json.loads(m.stdout.strip().splitlines()[-1])
        results["sf-activation plan"] = (
            m.wall_s,
            m.cpu_s,
            m.peak_rss_mb,
            {k: int(summary[k]) for k in COUNT_KEYS},
        )
        steps = [("naive pandas", "pandas")] if args.rows <= args.skip_pandas_above else []
        for label, step in [*steps, ("DuckDB SQL floor", "sql")]:
            m = measure(_child(step, work), env, cwd=ROOT)
            counts = json.loads(m.stdout.strip().splitlines()[-1])
            results[label] = (m.wall_s, m.cpu_s, m.peak_rss_mb, counts)

    plan_wall = results["sf-activation plan"][0]
    print()
    print("| approach | wall s | CPU s | peak RSS MB | wall ÷ plan's | counts |")
    print("|---|---:|---:|---:|---:|---|")
    for label, (wall, cpu, rss, counts) in results.items():
        shown = " ".join(f"{k}={counts[k]:,}" for k in COUNT_KEYS)
        print(
            f"| {label} | {wall:.1f} | {cpu:.1f} | {rss:,.0f} | {wall / plan_wall:.2f}× | {shown} |"
        )
    reference = results["sf-activation plan"][3]
    mismatched = [label for label, r in results.items() if r[3] != reference]
    if mismatched:
        print(f"COUNTS DIFFER from the plan's: {', '.join(mismatched)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
