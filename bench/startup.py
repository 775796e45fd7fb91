"""Start fast: what a sync costs before it does any work, beside the floor it cannot go under.

    .venv/bin/python -m bench.startup [--rows 20000] [--repeat 5] [--latency-ms 50]
        [--compare LABEL=DIR ...]

In one run, each figure the median of `--repeat` fresh processes, run interleaved so that
a burst of load on the shared machine hits every row alike:

1. `python -X importtime -c STATEMENT`: the statement's imports (the cumulative time of
   the top-level imports after `site`, so the interpreter's own start is left out) and
   the process's wall time and CPU, for `pass`, `import pyarrow, duckdb` (what any sync
   needs) and `import sf_activation.sync` (the sync path);
2. whole-process wall time and CPU of `sf-activation sync MODEL --json` of a `--rows` DuckDB
   model (the Account-like table of `bench/harness.py`) against the emulator, after a first
   sync has sent every row, so there is nothing to send; beside `python -c pass` and
   `python -c "import pyarrow, duckdb"` run the same way.

`--compare LABEL=DIR` adds the sf_activation rows for another copy of the package (DIR
holds an `sf_activation/` directory, e.g. an older version exported with `git archive`),
measured in the same run through PYTHONPATH. Every process runs from a scratch directory
with PYTHONPATH set, so which code is measured never depends on the current directory.

Prints a Markdown table. `-X importtime` adds overhead of its own, so its columns are for
comparing its rows, not for adding up with the plain wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT, Emulator, build_accounts, emulator, write_model

BASELINES = ("pass", "import pyarrow, duckdb")
SYNC_IMPORT = "import sf_activation.sync"
MODEL = "startup"


@dataclass
class Figures:
    imports_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def statement_import_us(stderr: str) -> int:
    """Cumulative µs of the top-level imports after `site`: those the statement made."""
    total = 0
    after_site = False
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if name.startswith("  "):  # nested: counted in its parent's cumulative time
            continue
        if after_site:
            total += int(cumulative)
        after_site = after_site or name.strip() == "site"
    return total


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, str]:
    """Wall ms and CPU ms of one child process, its stdout and stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu, result.stdout, result.stderr


def with_path(env: dict[str, str], tree: Path) -> dict[str, str]:
    # bench/ comes from this checkout whatever tree is measured (the harness imports
    # sf_activation.emulator from the measured tree, which every version has).
    return {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(tree), str(ROOT)]))}


def sync_env(work: Path, emu: Emulator, warehouse: Path, state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "SF_ACT"))}
    return {
        **env,
        "SALESFORCE_INSTANCE_URL": emu.instance_url,
        "SALESFORCE_ACCESS_TOKEN": emu.access_token,
        "SALESFORCE_CA_BUNDLE": emu.ca_bundle,
        "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{warehouse}",
        "SF_ACTIVATION_MODELS_DIR": str(work / "models"),
        "SF_ACTIVATION_STATE_URL": str(work / "state" / state),
        "SF_ACTIVATION_REJECTS_URL": str(work / "rejects"),
    }


def run(rows: int, repeat: int, latency_ms: int, trees: dict[str, Path]) -> dict[str, Figures]:
    cli = str(Path(sys.executable).with_name("sf-activation"))
    sync = [cli, "sync", MODEL, "--json"]
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, emulator(latency_ms) as emu:
        work = Path(tmp)
        warehouse = work / "warehouse.duckdb"
        build_accounts(warehouse, rows)
        write_model(work / "models", MODEL, "upsert", "auto")
        here = with_path(dict(os.environ), ROOT)
        # label -> (measure once: adds figures to results[label])
        steps: dict[str, Callable[[], None]] = {}

        def importtime(label: str, statement: str, env: dict[str, str]) -> None:
            command = [sys.executable, "-X", "importtime", "-c", statement]
            wall, cpu, _, err = timed(command, env, work)
            figures = results.setdefault(label, Figures())
            figures.imports_ms.append(statement_import_us(err) / 1000)
            figures.wall_ms.append(wall)
            figures.cpu_ms.append(cpu)

        def plain(label: str, command: list[str], env: dict[str, str], check: bool) -> None:
            wall, cpu, out, _ = timed(command, env, work)
            if check:
                summary = json.loads(out.strip().splitlines()[-1])
                assert summary["sent"] == 0 and summary["rows"] == rows, summary
            figures = results.setdefault(label, Figures())
            figures.wall_ms.append(wall)
            figures.cpu_ms.append(cpu)

        for statement in BASELINES:
            label = f"`python -X importtime -c {statement!r}`"
            steps[label] = lambda lb=label, st=statement: importtime(lb, st, here)
        for name, tree in trees.items():
            label = f"`python -X importtime -c {SYNC_IMPORT!r}` ({name})"
            env = with_path(dict(os.environ), tree)
            steps[label] = lambda lb=label, e=env: importtime(lb, SYNC_IMPORT, e)
        for statement in BASELINES:
            label = f"`python -c {statement!r}`"
            command = [sys.executable, "-c", statement]
            steps[label] = lambda lb=label, c=command: plain(lb, c, here, False)
        for i, (name, tree) in enumerate(trees.items()):
            env = with_path(sync_env(work, emu, warehouse, f"tree{i}"), tree)
            first = json.loads(timed(sync, env, work)[2].strip().splitlines()[-1])
            assert first["rows"] == rows and first["failed"] == 0, first
            label = f"`sf-activation sync`, {rows:,} rows, nothing to send ({name})"
            steps[label] = lambda lb=label, e=env: plain(lb, sync, e, True)
        for _ in range(repeat):
            for step in steps.values():
                step()
        return {label: results[label] for label in steps}


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}" if values else "–"


def table(results: dict[str, Figures]) -> str:
    lines = ["| process | imports ms | wall ms | CPU ms |", "|---|---:|---:|---:|"]
    for label, f in results.items():
        lines.append(
            f"| {label} | {_median(f.imports_ms)} | {_median(f.wall_ms)} | {_median(f.cpu_ms)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per figure")
    parser.add_argument("--latency-ms", type=int, default=50, help="emulator latency per call")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also measure the sf_activation package under DIR (repeatable)",
    )
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    for spec in args.compare:
        label, _, path = spec.partition("=")
        if not path or not (Path(path) / "sf_activation").is_dir():
            parser.error(f"--compare {spec}: expected LABEL=DIR with DIR/sf_activation/")
        trees[label] = Path(path).resolve()
    results = run(args.rows, args.repeat, args.latency_ms, trees)
    print(table(results))
    print(
        f"\nmedian of {args.repeat} processes each, interleaved; "
        f"emulator latency {args.latency_ms} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
