"""Client CPU of the send phase per million rows sent, over repeated runs.

    .venv/bin/python -m bench.send_cpu --rows 200000 --repeat 5

The target (≤ 15 CPU s per million rows sent: serialise, send, reconcile, commit) is an
absolute figure on a shared 2-core machine where the emulator runs beside the client, so
one run says little: CPU seconds of the same run drift by ±20% with what else the machine
does. Each repetition is a first load of the same Account-like table (ten mapped fields,
emulator with 50 ms latency), one `sf-activation sync` process per run, transports
interleaved so drift hits both alike. Prints each run, then a Markdown table of the
median and range per transport.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.harness import build_accounts, emulator, write_model
from bench.load import Bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--transport", action="append", choices=["composite", "bulk"])
    args = parser.parse_args()
    transports = args.transport or ["composite", "bulk"]
    per_million: dict[str, list[float]] = {t: [] for t in transports}
    with (
        tempfile.TemporaryDirectory(prefix="bench-send-cpu-") as tmp,
        emulator(args.latency_ms) as emu,
    ):
        work = Path(tmp)
        warehouse = work / "warehouse.duckdb"
        build_accounts(warehouse, args.rows)
        bench = Bench(work, emu, warehouse)
        for transport in transports:
            write_model(bench.models, f"load_{transport}", "upsert", transport)
        for run in range(args.repeat):
            for transport in transports:
                emu.reset()
                row = bench.sync("initial", f"load_{transport}", f"{transport}-{run}", transport)
                assert row.send_cpu_s is not None and row.written == args.rows, row
                per_million[transport].append(row.send_cpu_s / args.rows * 1e6)
                print(
                    f"{transport} run {run + 1}: {per_million[transport][-1]:.1f} CPU s per 1M "
                    f"sent ({row.note})",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"\n{args.rows:,} rows per run, {args.repeat} runs, {args.latency_ms} ms latency\n")
    print("| transport | send CPU s per 1M sent: median | min | max |")
    print("|---|---:|---:|---:|")
    for transport, values in per_million.items():
        print(
            f"| {transport} | {statistics.median(values):.1f} | {min(values):.1f} "
            f"| {max(values):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
