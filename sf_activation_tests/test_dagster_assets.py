"""Materializing the assets: the emulator over real HTTPS, reject files on moto's S3 server,
a DuckDB warehouse. What the tests assert is what the Dagster UI shows a user."""

import json
import textwrap
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import duckdb
import pytest

from sf_activation.dagster.assets import SyncConfig, build_model_assets
from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource
from sf_activation.models import load_models
from sf_activation_tests.support.s3 import s3_server, s3_url  # noqa: F401

ACCOUNTS = """
object: Account
operation: upsert
primary_key: account_id
external_id: External_Id__c
query: SELECT account_id, name FROM accounts
fields:
  account_id: External_Id__c
  name: Name
max_reject_rate: 0.01
"""

CONTACTS = """
object: Contact
operation: upsert
primary_key: contact_id
external_id: External_Id__c
query: SELECT contact_id, last_name, account_id FROM contacts
fields:
  contact_id: External_Id__c
  last_name: LastName
  account_id: Account.External_Id__c
max_reject_rate: 0.5
"""

ACTIVITY = """
object: Case
operation: insert
primary_key: event_id
query: SELECT event_id, subject, occurred_at FROM activity
fields:
  subject: Subject
partition_by: {column: occurred_at, start: 2024-01-01, cadence: daily}
"""


class Project:
    def __init__(self, root: Path, emulator: Any, rejects_url: str) -> None:
        self.root = root
        self.emulator = emulator
        self.models = root / "models"
        self.models.mkdir()
        self.warehouse = root / "warehouse.duckdb"
        self.resources = {
            "salesforce": SalesforceResource(
                instance_url=emulator.instance_url,
                access_token=emulator.access_token,
                ca_bundle=emulator.ca_bundle,
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=f"duckdb:///{self.warehouse}",
                state_url=str(root / "state"),
                rejects_url=rejects_url,
            ),
        }

    def sql(self, statement: str) -> None:
        con = duckdb.connect(str(self.warehouse))
        try:
            con.execute(statement)
        finally:
            con.close()

    def model(self, name: str, body: str) -> None:
        (self.models / f"{name}.yml").write_text(textwrap.dedent(body))

    def assets(self, name: str) -> list[dg.AssetsDefinition]:
        return list(build_model_assets(load_models(self.models)[name]))

    def materialize(self, name: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.assets(name), resources=self.resources, raise_on_error=False, **kwargs
        )


@pytest.fixture
def project(tmp_path: Path, emulator: Any, s3_url: str) -> Project:  # noqa: F811
    return Project(tmp_path, emulator, f"{s3_url}/rejects")


def _metadata(result: dg.ExecuteInProcessResult, node: str, count: int = 1) -> dict[str, Any]:
    """The metadata of the node's materialization (one per partition in a range run)."""
    materializations = result.asset_materializations_for_node(node)
    assert len(materializations) == count
    return {k: v.value for k, v in materializations[0].metadata.items()}


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "rejected_rows"
    return evaluation


def _read_s3(url: str) -> list[dict[str, Any]]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def _all_metadata_text(result: dg.ExecuteInProcessResult) -> str:
    parts = []
    for event in result.all_events:
        data = event.event_specific_data
        metadata = getattr(data, "metadata", None) or getattr(
            getattr(data, "materialization", None), "metadata", None
        )
        if metadata is None and hasattr(data, "asset_check_evaluation"):
            metadata = data.asset_check_evaluation.metadata
        if metadata:
            parts += [str(v.value) for v in metadata.values()]
    return "\n".join(parts)


def test_sync_reports_plan_outcome_and_a_failing_rejected_rows_check(project: Project) -> None:
    project.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS account_id, 'Account ' || i AS name "
        "FROM range(20) t(i)"
    )
    project.sql("INSERT INTO accounts VALUES (NULL, 'no key')")
    project.model("accounts", ACCOUNTS)

    result = project.materialize("accounts")

    planned = _metadata(result, "warehouse__accounts")
    assert planned["dagster/row_count"] == 21
    assert (planned["added"], planned["changed"], planned["removed"], planned["invalid"]) == (
        20,
        0,
        0,
        1,
    )
    assert planned["sample_changes"], "the plan shows a sample of what will change"

    synced = _metadata(result, "salesforce__accounts")
    assert (synced["succeeded"], synced["failed"], synced["retried"]) == (20, 0, 0)
    assert synced["transport"] == "composite"
    assert synced["bulk_job_ids"] == []
    assert 1 <= synced["api_calls"] <= 3  # describe + one Composite call of 200
    assert synced["duration_s"] > 0
    assert len(project.emulator.records("Account")) == 20

    # 1 of 21 rows rejected is above max_reject_rate 1%: an ERROR failure, the step fails
    # (the check blocks), and the materialization is recorded all the same.
    check = _check(result)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["count"] == 1
    assert meta["rate"] == pytest.approx(1 / 21, abs=1e-5)
    assert meta["by_error_code"] == {"NULL_PRIMARY_KEY": 1}
    assert meta["sample"].records[0].data["error_code"] == "NULL_PRIMARY_KEY"
    assert meta["reject_file"].startswith("s3://")
    (reject,) = _read_s3(meta["reject_file"])
    assert reject["error_code"] == "NULL_PRIMARY_KEY"
    assert reject["record"]["Name"] == "no key"
    assert not result.success

    assert project.emulator.access_token not in _all_metadata_text(result)

    # Nothing changed: the next run sends nothing. A full resync from the Launchpad sends all.
    again = project.materialize("accounts")
    assert _metadata(again, "warehouse__accounts")["unchanged"] == 20
    assert _metadata(again, "salesforce__accounts")["sent"] == 0
    resync = project.materialize(
        "accounts",
        run_config=dg.RunConfig({"salesforce__accounts": SyncConfig(full_resync=True)}),
    )
    resynced = _metadata(resync, "salesforce__accounts")
    assert (resynced["sent"], resynced["succeeded"], resynced["full_resync"]) == (20, 20, True)
    assert len(project.emulator.records("Account")) == 20


def test_rejects_below_max_reject_rate_pass_with_warn_severity(project: Project) -> None:
    project.sql("CREATE TABLE accounts AS SELECT 'P-1' AS account_id, 'Parent' AS name")
    project.sql(
        "CREATE TABLE contacts AS SELECT 'C-' || i AS contact_id, 'Person ' || i AS last_name, "
        "CASE WHEN i < 8 THEN 'P-1' ELSE 'P-404' END AS account_id FROM range(10) t(i)"
    )
    project.model("accounts", ACCOUNTS)
    project.model("contacts", CONTACTS)
    assert project.materialize("accounts").success

    result = project.materialize("contacts")

    synced = _metadata(result, "salesforce__contacts")
    assert (synced["succeeded"], synced["failed"]) == (8, 2)
    check = _check(result)
    assert check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in check.metadata.items()}
    assert (meta["count"], meta["rate"]) == (2, 0.2)
    rejected = _read_s3(meta["reject_file"])
    assert sorted(r["primary_key"] for r in rejected) == ["C-8", "C-9"]
    assert set(meta["by_error_code"]) == {r["error_code"] for r in rejected}
    assert result.success


def test_partitioned_activity_model_syncs_one_window_or_a_range(project: Project) -> None:
    project.sql(
        "CREATE TABLE activity AS SELECT 'E-' || i AS event_id, 'Event ' || i AS subject, "
        "TIMESTAMP '2024-01-01 08:00:00' + (i // 3) * INTERVAL 1 DAY AS occurred_at "
        "FROM range(8) t(i)"
    )  # 3 events on Jan 1, 3 on Jan 2, 2 on Jan 3
    project.model("activity", ACTIVITY)

    one_day = project.materialize("activity", partition_key="2024-01-02")
    assert _metadata(one_day, "warehouse__activity")["dagster/row_count"] == 3
    assert _metadata(one_day, "salesforce__activity")["succeeded"] == 3
    assert sorted(r["Subject"] for r in project.emulator.records("Case")) == [
        "Event 3",
        "Event 4",
        "Event 5",
    ]

    # A range backfill runs once (single-run backfill policy) over the whole window;
    # the day already synced is unchanged and not sent again.
    backfill = project.materialize(
        "activity",
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-03",
        },
    )
    # One materialization per day of the range, each with the run's figures.
    planned = _metadata(backfill, "warehouse__activity", count=3)
    assert (planned["dagster/row_count"], planned["unchanged"]) == (8, 3)
    assert _metadata(backfill, "salesforce__activity", count=3)["succeeded"] == 5
    assert len(project.emulator.records("Case")) == 8
