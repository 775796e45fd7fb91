"""Load through Dagster: ten models syncing at once in the all-models job, the multiprocess
executor allowing four steps at a time, and the `salesforce` pool (limit 2) keeping at most
two models talking to Salesforce at any moment. Every model lands exactly its rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource
from sf_activation.definitions import ALL_JOB_NAME, build_definitions
from sf_activation_tests.support.emulator import EmulatorHandle

pytestmark = pytest.mark.slow

MODELS = 10
ROWS = 60
POOL_LIMIT = 2


def ten_models_job(
    root: str, instance_url: str, access_token: str, ca_bundle: str
) -> dg.JobDefinition:
    """Module-level so the multiprocess executor can rebuild the job in each step process."""
    base = Path(root)
    defs = build_definitions(
        base / "models",
        resources={
            "salesforce": SalesforceResource(
                instance_url=instance_url, access_token=access_token, ca_bundle=ca_bundle
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=f"duckdb:///{base / 'warehouse.duckdb'}",
                state_url=str(base / "state"),
                rejects_url=str(base / "rejects"),
            ),
        },
        declare_dbt_assets=False,
        automation=False,
    )
    return defs.resolve_job_def(ALL_JOB_NAME)


def _max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_ten_models_at_once_respect_the_salesforce_pool(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    for m in range(MODELS):
        con.execute(
            f"CREATE TABLE t{m} AS SELECT 'M{m}-' || i AS id, 'Model {m} row ' || i AS name "
            f"FROM range({ROWS}) t(i)"
        )
        (models / f"model_{m}.yml").write_text(
            f"object: Account\noperation: upsert\nprimary_key: id\nexternal_id: External_Id__c\n"
            f"query: SELECT id, name FROM t{m}\ntransport: composite\n"
            "fields:\n  id: External_Id__c\n  name: Name\n"
        )
    con.close()

    job = dg.build_reconstructable_job(
        __name__,
        "ten_models_job",
        reconstructor_working_directory=str(Path(__file__).resolve().parent.parent),
        reconstructable_args=(
            str(tmp_path),
            emulator.instance_url,
            emulator.access_token,
            str(emulator.ca_bundle),
        ),
    )
    overrides = {"concurrency": {"pools": {"default_limit": POOL_LIMIT}}}
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), overrides=overrides) as instance:
        result = dg.execute_job(
            job,
            instance=instance,
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 4}}}},
        )
        assert result.success
        starts: dict[str, dt.datetime] = {}
        intervals: list[tuple[dt.datetime, dt.datetime]] = []
        for record in instance.all_logs(result.run_id):
            event = record.dagster_event
            if event is None or not (event.step_key or "").startswith("salesforce"):
                continue
            when = dt.datetime.fromtimestamp(record.timestamp)
            if event.event_type_value == "STEP_START":
                starts[event.step_key] = when
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                intervals.append((starts[event.step_key], when))

    assert len(intervals) == MODELS
    assert _max_overlap(intervals) <= POOL_LIMIT
    records = emulator.records("Account")
    assert len(records) == MODELS * ROWS
    assert len({r["External_Id__c"] for r in records}) == MODELS * ROWS
