"""Peak memory of `sf-activation sync` for a 1,000,000-row Bulk 2.0 run.

The promise is bounded memory: Arrow batches in, a plan on disk, Bulk CSV spooled to disk
job by job. This runs the real command as its own process (through the rusage wrapper, so
the figure is that process's own `ru_maxrss`) against the emulator without latency:

    .venv/bin/python bench/bulk_memory.py --rows 1000000

and prints one JSON line with rows, wall seconds, CPU seconds and peak RSS, first for a
10x smaller run so the growth with rows is visible. The figures go in docs/reliability.md
and docs/benchmarks.md ("Memory").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import build_accounts, emulator, measure, write_model  # noqa: E402


def run(rows: int, work: Path) -> dict[str, float | int]:
    warehouse = work / f"warehouse-{rows}.duckdb"
    build_accounts(warehouse, rows)
    models = work / f"models-{rows}"
    write_model(models, "accounts", "upsert", "bulk")
    with emulator(0) as emu:
        env = {
            **os.environ,
            "SALESFORCE_INSTANCE_URL": emu.instance_url,
            "SALESFORCE_ACCESS_TOKEN": emu.access_token,
            "SALESFORCE_CA_BUNDLE": emu.ca_bundle,
            "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{warehouse}",
            "SF_ACTIVATION_MODELS_DIR": str(models),
            "SF_ACTIVATION_STATE_URL": str(work / f"state-{rows}"),
            "SF_ACTIVATION_REJECTS_URL": str(work / f"rejects-{rows}"),
        }
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env.pop(name, None)
        command = [sys.executable, "-m", "sf_activation", "sync", "accounts", "--json"]
        measured = measure(command, env, cwd=work)
        summary = json.loads(measured.stdout)
        landed = emu.count("Account")
    assert summary["succeeded"] == rows == landed, (summary, landed)
    return {
        "rows": rows,
        "transport": summary["transport"],
        "bulk_jobs": len(summary["bulk_job_ids"]),
        "api_calls": summary["api_calls"],
        "wall_s": round(measured.wall_s, 1),
        "cpu_s": measured.cpu_s,
        "peak_rss_mb": measured.peak_rss_mb,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-small", action="store_true", help="skip the rows/10 run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bulk-memory-") as tmp:
        sizes = [args.rows] if args.no_small else [max(1, args.rows // 10), args.rows]
        for rows in sizes:
            print(json.dumps(run(rows, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
