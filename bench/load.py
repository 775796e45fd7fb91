"""Initial load and steady state: sf_activation beside the approaches users would otherwise pick.

    .venv/bin/python -m bench.load --rows 20000 --rows 200000

Against the emulator with 50 ms latency per request and a DuckDB table of Account-like rows
with ten mapped fields, in one run:

1. initial load: sf_activation with transport auto, composite and bulk; baseline A (one REST
   upsert per record through simple-salesforce, 8 threads; only up to --baseline-a-max rows,
   it is slow by design); baseline B (simple-salesforce bulk2 upsert of the whole table);
2. steady state: 1% of rows changed, 0.1% added, 0.1% removed: sf_activation upsert and
   mirror against both baselines reloading everything; and a rerun with nothing changed.

Prints a Markdown table per size (wall time, records written, API calls, client CPU seconds,
peak RSS) with the ratios to each baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    ROOT,
    Emulator,
    build_accounts,
    change_accounts,
    emulator,
    measure,
    write_model,
)


class _Rows(list):
    """Results, each reported on stderr as it is measured (a full run takes minutes)."""

    def append(self, row: Row) -> None:
        _progress(row)
        super().append(row)


@dataclass
class Row:
    scenario: str
    approach: str
    wall_s: float
    written: int
    api_calls: int
    cpu_s: float
    peak_rss_mb: float
    note: str = ""
    send_cpu_s: float | None = None  # sf_activation: CPU of the send phase alone


class Bench:
    def __init__(self, work: Path, emu: Emulator, warehouse: Path) -> None:
        self.work = work
        self.emu = emu
        self.warehouse = warehouse
        self.models = work / "models"

    def env(self, state: str) -> dict[str, str]:
        return {
            **os.environ,
            "SALESFORCE_INSTANCE_URL": self.emu.instance_url,
            "SALESFORCE_ACCESS_TOKEN": self.emu.access_token,
            "SALESFORCE_CA_BUNDLE": self.emu.ca_bundle,
            "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{self.warehouse}",
            "SF_ACTIVATION_MODELS_DIR": str(self.models),
            "SF_ACTIVATION_STATE_URL": str(self.work / "state" / state),
            "SF_ACTIVATION_REJECTS_URL": str(self.work / "rejects"),
        }

    def sync(self, scenario: str, model: str, state: str, label: str) -> Row:
        calls = self.emu.api_calls()
        m = measure(
            [sys.executable, "-m", "sf_activation", "sync", model, "--json"],
            self.env(state),
            cwd=self.work,
        )
        summary = json.loads(m.stdout.strip().splitlines()[-1])
        written = summary["sent"] + summary.get("deleted", 0)
        note = f"transport={summary['transport']}, failed={summary['failed']}"
        send_cpu = summary.get("send_cpu_s")
        return Row(
            scenario,
            label,
            m.wall_s,
            written,
            self.emu.api_calls() - calls,
            m.cpu_s,
            m.peak_rss_mb,
            note,
            send_cpu,
        )

    def baseline(self, scenario: str, script: str, label: str) -> Row:
        calls = self.emu.api_calls()
        m = measure(
            [
                sys.executable,
                "-m",
                f"bench.{script}",
                "--warehouse",
                str(self.warehouse),
                "--instance-url",
                self.emu.instance_url,
                "--token",
                self.emu.access_token,
                "--ca-bundle",
                self.emu.ca_bundle,
            ],
            _baseline_env(),
            cwd=ROOT,
        )
        result = json.loads(m.stdout.strip().splitlines()[-1])
        return Row(
            scenario,
            label,
            m.wall_s,
            result["sent"],
            self.emu.api_calls() - calls,
            m.cpu_s,
            m.peak_rss_mb,
            f"succeeded={result['succeeded']}",
        )


def _baseline_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # requests lets these override the session's verify= (the emulator's CA).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name, None)
    return env


def run_size(rows: int, latency_ms: int, baseline_a_max: int) -> list[Row]:
    out: _Rows = _Rows()
    with tempfile.TemporaryDirectory(prefix=f"bench-{rows}-") as tmp, emulator(latency_ms) as emu:
        work = Path(tmp)
        warehouse = work / "warehouse.duckdb"
        build_accounts(warehouse, rows)
        bench = Bench(work, emu, warehouse)
        for transport in ("composite", "bulk", "auto"):
            write_model(bench.models, f"load_{transport}", "upsert", transport)
        write_model(bench.models, "steady_mirror", "mirror", "auto")
        with_a = rows <= baseline_a_max

        for transport in ("composite", "bulk", "auto"):
            emu.reset()
            out.append(
                bench.sync("initial", f"load_{transport}", transport, f"sf_activation {transport}")
            )
        emu.reset()
        out.append(bench.baseline("initial", "baseline_bulk2", "baseline B: bulk2 reload"))
        if with_a:
            emu.reset()
            out.append(bench.baseline("initial", "baseline_rest", "baseline A: REST per record"))

        # Steady state starts from a loaded org and the state of the auto and mirror runs.
        emu.reset()
        shutil.rmtree(work / "state" / "auto", ignore_errors=True)
        bench.sync("setup", "load_auto", "auto", "setup")
        bench.sync("setup", "steady_mirror", "mirror", "setup")
        change_accounts(warehouse, changed=0.01, added=0.001, removed=0.001)
        out.append(bench.sync("steady", "load_auto", "auto", "sf_activation upsert"))
        out.append(bench.sync("steady", "steady_mirror", "mirror", "sf_activation mirror"))
        out.append(bench.sync("steady", "load_auto", "auto", "sf_activation, nothing changed"))
        out.append(bench.baseline("steady", "baseline_bulk2", "baseline B: bulk2 reload"))
        if with_a:
            out.append(bench.baseline("steady", "baseline_rest", "baseline A: REST per record"))
    return out


def _progress(row: Row) -> None:
    print(
        f"  {row.scenario:<8} {row.approach:<32} {row.wall_s:8.1f} s {row.written:>9,} written "
        f"{row.api_calls:>7,} calls {row.cpu_s:6.1f} CPU s {row.peak_rss_mb:6.0f} MB",
        file=sys.stderr,
        flush=True,
    )


def ratio(ours: float, baseline: float) -> str:
    """How many times the baseline's figure is ours (baseline ÷ ours)."""
    if ours == 0:
        return "∞×" if baseline else "–"
    value = baseline / ours
    return f"{value:,.0f}×" if value >= 10 else f"{value:,.2g}×"


def report(rows: int, results: list[Row]) -> str:
    lines = [
        f"### {rows:,} rows",
        "",
        "| scenario | approach | wall s | rows/s | records written | API calls | client CPU s "
        "| send CPU s per 1M sent | peak RSS MB | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        per_s = f"{r.written / r.wall_s:,.0f}" if r.written else "–"
        cpu = r.send_cpu_s if r.send_cpu_s is not None else r.cpu_s
        cpu_per_m = f"{cpu / r.written * 1e6:,.1f}" if r.written else "–"
        lines.append(
            f"| {r.scenario} | {r.approach} | {r.wall_s:,.1f} | {per_s} | {r.written:,} "
            f"| {r.api_calls:,} | {r.cpu_s:,.1f} | {cpu_per_m} | {r.peak_rss_mb:,.0f} | {r.note} |"
        )
    lines.append("")
    for scenario in ("initial", "steady"):
        ours = [r for r in results if r.scenario == scenario and r.approach.startswith("sf_")]
        base_a = next(
            (r for r in results if r.scenario == scenario and "baseline A" in r.approach), None
        )
        base_b = next(
            (r for r in results if r.scenario == scenario and "baseline B" in r.approach), None
        )
        for r in ours:
            parts = []
            if base_a:
                parts.append(
                    f"vs A: API calls ÷{ratio(r.api_calls, base_a.api_calls)}, "
                    f"wall time ÷{ratio(r.wall_s, base_a.wall_s)}"
                )
            if base_b:
                parts.append(
                    f"vs B: records written ÷{ratio(r.written, base_b.written)}, "
                    f"API calls ÷{ratio(r.api_calls, base_b.api_calls)}, "
                    f"wall time ÷{ratio(r.wall_s, base_b.wall_s)}"
                )
            if parts:
                lines.append(f"- {scenario}, {r.approach}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="table size (repeatable)")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--baseline-a-max", type=int, default=20_000)
    args = parser.parse_args()
    for rows in args.rows or [20_000]:
        print(report(rows, run_size(rows, args.latency_ms, args.baseline_a_max)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
