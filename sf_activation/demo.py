"""`make demo`: the whole product in a few minutes, with nothing but this repository.

Builds a CRM-shaped DuckDB warehouse, starts the local Salesforce emulator, runs every
model's sync through Dagster (the `sync_all` job), then changes a slice of the warehouse and
runs again to show that only the difference is sent. Prints a summary per model and where
the rejects and Dagster's run records are; stops what it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sf_activation.demo_data import DemoSize, build_demo_warehouse, change_a_slice
from sf_activation.emulator.process import emulator_process

REPO = Path(__file__).resolve().parent.parent
# `make dev` opens exactly these: the warehouse, the emulator's org (EMULATOR_ORG), the
# sync state and rejects under DEMO_DIR, and the Dagster instance, so the UI shows the
# demo's runs against the records and state they left. Keep the Makefile in step.
DEMO_DIR = Path(".sf_activation/demo")
EMULATOR_ORG = "emulator-org.json"
DAGSTER_HOME = Path(".dagster_home")
WHY_REJECTED = {
    "INVALID_EMAIL_ADDRESS": "an email that is not an address (made so on purpose)",
    "REQUIRED_FIELD_MISSING": "an opportunity without a close date (CloseDate is required)",
    "DUPLICATE_PRIMARY_KEY": "a contact id that appears twice: neither row is sent",
    "NULL_PRIMARY_KEY": "rows without a primary key",
}


@dataclass
class ModelResult:
    model: str
    rows: int = 0
    # What the plan sent, by class: sent = added + changed + retried (rows an earlier run
    # left pending or Salesforce refused, sent again).
    added: int = 0
    changed: int = 0
    retried: int = 0
    sent: int = 0
    succeeded: int = 0
    rejected: int = 0
    api_calls: int = 0
    transport: str = ""
    seconds: float = 0.0
    reject_file: str = ""
    codes: dict[str, int] | None = None


def run_all_models(label: str) -> list[ModelResult]:
    """One run of the `sync_all` job, recorded in DAGSTER_HOME like a run from the UI."""
    import dagster as dg

    from sf_activation.definitions import ALL_JOB_NAME, build_definitions, resolve_models_dir

    defs = build_definitions(resolve_models_dir())
    job = defs.resolve_job_def(ALL_JOB_NAME)
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={"demo": label},
            # The demo prints its own summary; Dagster's step-by-step log is in the run record.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    elapsed = time.monotonic() - started
    results: dict[str, ModelResult] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        side, model = materialization.asset_key.path[0], materialization.asset_key.path[-1]
        meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        entry = results.setdefault(model, ModelResult(model))
        if side == "warehouse":
            entry.rows = int(meta.get("dagster/row_count", 0))
            entry.added = int(meta.get("added", 0))
            entry.changed = int(meta.get("changed", 0))
            entry.retried = int(meta.get("pending", 0))
            entry.api_calls += int(meta.get("api_calls", 0))
        elif side == "salesforce":
            entry.sent = int(meta.get("sent", 0))
            entry.succeeded = int(meta.get("succeeded", 0))
            entry.rejected = int(meta.get("rejected", 0))
            entry.api_calls += int(meta.get("api_calls", 0))
            entry.transport = str(meta.get("transport", ""))
            entry.seconds = float(meta.get("duration_s", 0.0))
    for evaluation in result.get_asset_check_evaluations():
        model = evaluation.asset_key.path[-1]
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        if model in results:
            results[model].codes = meta.get("by_error_code") or {}
            url = meta.get("reject_file")
            results[model].reject_file = str(url) if url else ""
    if not result.success:
        failed = ", ".join(result.get_failed_step_keys()) or "unknown step"
        raise SystemExit(f"the Dagster run {result.run_id} failed at {failed}")
    print(f"\n{label}: Dagster run {result.run_id} finished in {elapsed:.1f} s")
    return sorted(results.values(), key=lambda r: r.model)


def print_table(results: list[ModelResult]) -> None:
    header = f"{'model':<16}{'rows':>8}{'sent':>8}{'added':>8}{'changed':>9}{'retried':>9}"
    header += f"{'succeeded':>11}{'rejected':>10}{'API calls':>11}  {'transport':<10}{'time s':>7}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.model:<16}{r.rows:>8,}{r.sent:>8,}{r.added:>8,}{r.changed:>9,}{r.retried:>9,}"
            f"{r.succeeded:>11,}{r.rejected:>10,}{r.api_calls:>11,}  {r.transport:<10}"
            f"{r.seconds:>7.1f}"
        )
    print("sent = added + changed + retried (rows an earlier run could not land, sent again)")


def reject_lines(results: list[ModelResult]) -> list[str]:
    """One line per model and reason, so 3 contacts and 2 leads with a bad email read as
    two lines naming their model, not one count of 5 called "contacts"."""
    lines = []
    for r in results:
        for code, n in sorted((r.codes or {}).items()):
            why = WHY_REJECTED.get(code, "see the reject file")
            lines.append(f"  {r.model}: {code} ({n}): {why}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the sf_activation demo end to end.")
    parser.add_argument("--accounts", type=int, default=20_000, help="demo size (accounts)")
    args = parser.parse_args(argv)

    work = DEMO_DIR.resolve()
    # Every demo starts clean: the emulator starts empty, so old state would be wrong.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = DAGSTER_HOME.resolve()
    home.mkdir(parents=True, exist_ok=True)
    # With DAGSTER_HOME set, Dagster reads its dagster.yaml, not the one at the repo root.
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")

    warehouse = work / "warehouse.duckdb"
    started = time.monotonic()
    counts = build_demo_warehouse(warehouse, DemoSize(accounts=args.accounts))
    print(
        "demo warehouse: "
        + ", ".join(f"{n:,} {table}" for table, n in counts.items())
        + f" ({warehouse})"
    )
    # The org is kept in a file beside the state, so `make dev` reopens the same records.
    with emulator_process(work, "--state", str(work / EMULATOR_ORG)) as emulator:
        os.environ.update(
            {
                "SALESFORCE_INSTANCE_URL": emulator["instance_url"],
                "SALESFORCE_ACCESS_TOKEN": emulator["access_token"],
                "SALESFORCE_CA_BUNDLE": emulator["ca_bundle"] or "",
                "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{warehouse}",
                "SF_ACTIVATION_MODELS_DIR": str(REPO / "models"),
                "SF_ACTIVATION_STATE_URL": str(work / "state"),
                "SF_ACTIVATION_REJECTS_URL": str(work / "rejects"),
                "DAGSTER_HOME": str(home),
            }
        )
        print(f"Salesforce emulator at {emulator['instance_url']}")

        first = run_all_models("first sync")
        print_table(first)

        changed = change_a_slice(warehouse)
        print(
            f"\nchanged the warehouse: {changed['accounts_changed']} accounts edited, "
            f"{changed['accounts_added']} added, {changed['contacts_changed']} contacts edited"
        )
        second = run_all_models("second sync (only the difference is sent)")
        print_table(second)

    print("\nWhy rows were rejected (first sync):")
    for line in reject_lines(first):
        print(line)
    print("\nWhere things are:")
    rejects = work / "rejects"
    print(f"  reject files:   {rejects}")
    print(
        f"                  read them: SF_ACTIVATION_REJECTS_URL={rejects} "
        ".venv/bin/sf-activation rejects contacts"
    )
    print(f"  sync state:     {work / 'state'}")
    print(f"  emulator org:   {work / EMULATOR_ORG}")
    print(f"  Dagster runs:   {home}")
    print(
        "\nmake dev opens these runs in the Dagster UI, with this warehouse, org, state and "
        "rejects;\nthe partitioned `calls` model (not in sync_all) is there to sync by day "
        "or backfill."
    )
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s; the emulator is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
