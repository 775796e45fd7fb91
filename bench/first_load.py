"""Whole-process first load over Composite, optionally beside other copies of the package.

    .venv/bin/python -m bench.first_load --rows 20000 --repeat 5 [--compare LABEL=DIR ...]

Each run is one `sf-activation sync` process (imports, plan, send, commit) of an upsert
first load of the same Account-like table against the emulator at `--latency-ms`, with a
fresh state. `--compare LABEL=DIR` runs another checkout's package through PYTHONPATH,
interleaved with this tree's runs so machine drift hits both alike. Prints each run, then
a Markdown table of rows/s and process CPU per tree (medians and ranges).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.harness import ROOT, build_accounts, emulator, measure, write_model
from bench.load import Bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR")
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    for spec in args.compare:
        label, _, path = spec.partition("=")
        trees[label] = Path(path).resolve()
    rates: dict[str, list[float]] = {label: [] for label in trees}
    cpu: dict[str, list[float]] = {label: [] for label in trees}
    with (
        tempfile.TemporaryDirectory(prefix="bench-first-load-") as tmp,
        emulator(args.latency_ms) as emu,
    ):
        work = Path(tmp)
        warehouse = work / "warehouse.duckdb"
        build_accounts(warehouse, args.rows)
        bench = Bench(work, emu, warehouse)
        write_model(bench.models, "first_load", "upsert", "composite")
        for run in range(args.repeat):
            for n, (label, tree) in enumerate(trees.items()):
                emu.reset()
                env = {**bench.env(f"run-{run}-{n}"), "PYTHONPATH": str(tree)}
                command = [sys.executable, "-m", "sf_activation", "sync", "first_load", "--json"]
                m = measure(command, env, cwd=work)
                summary = json.loads(m.stdout.strip().splitlines()[-1])
                assert summary["sent"] == args.rows, summary
                rates[label].append(args.rows / m.wall_s)
                cpu[label].append(m.cpu_s)
                print(
                    f"{label} run {run + 1}: {rates[label][-1]:,.0f} rows/s, wall {m.wall_s:.2f} s, "
                    f"CPU {m.cpu_s:.2f} s, send {summary.get('send_s')} s",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"\n{args.rows:,} rows, Composite, {args.latency_ms} ms latency, {args.repeat} runs "
        f"per tree ({os.cpu_count()} cores)\n"
    )
    print("| tree | rows/s, median (range) | process CPU s, median |")
    print("|---|---|---:|")
    for label in trees:
        r = rates[label]
        print(
            f"| {label} | {statistics.median(r):,.0f} ({min(r):,.0f}–{max(r):,.0f}) "
            f"| {statistics.median(cpu[label]):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
