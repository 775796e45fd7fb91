"""One plan per run, parents before children: `sync_all` on the multiprocess executor
against a real PostgreSQL warehouse and the emulator.

- Each model's query runs once per run: `warehouse/<m>` plans and stages the plan,
  `salesforce/<m>` sends it (counted in the warehouse: sequential scans of each model's
  table, from PostgreSQL's own statistics).
- On an empty org every valid child row lands in the first run: the Contact model, whose
  lookup points at Account records, syncs after the Account model. The Account model's
  query is slow, so a child run beside it would find no parents.
- A child synced before its parent model ever ran has its rows held (pending, not
  rejected, not counted by the check); once the parent model has landed everything, a
  child pointing at an account nobody syncs is rejected as Salesforce said.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource
from sf_activation.definitions import ALL_JOB_NAME, build_definitions, job_name
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.postgres import postgres_url as postgres_url  # fixture

ACCOUNTS = 30
CONTACTS = 900


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as con:
        con.execute(sa.text("DROP TABLE IF EXISTS crm_accounts, crm_contacts"))
        con.execute(
            sa.text(
                "CREATE TABLE crm_accounts AS SELECT 'A-' || i AS account_id, "
                f"'Account ' || i AS name FROM generate_series(1, {ACCOUNTS}) i"
            )
        )
        con.execute(
            sa.text(
                "CREATE TABLE crm_contacts AS SELECT 'C-' || i AS contact_id, "
                f"'A-' || (1 + i % {ACCOUNTS}) AS account_id, 'Last ' || i AS last_name "
                f"FROM generate_series(1, {CONTACTS}) i"
            )
        )
    engine.dispose()
    yield postgres_url


def _scans(url: str) -> dict[str, int]:
    """Sequential scans per table since the server started, as PostgreSQL counts them."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            rows = con.execute(
                sa.text(
                    "SELECT relname, seq_scan FROM pg_stat_user_tables "
                    "WHERE relname IN ('crm_accounts', 'crm_contacts')"
                )
            ).fetchall()
    finally:
        engine.dispose()
    return {name: int(n) for name, n in rows}


def _scans_settled(url: str, before: dict[str, int], expect: int) -> dict[str, int]:
    # Backends report their statistics when they finish (the steps' processes have), and
    # the server makes them visible within a moment.
    deadline = time.monotonic() + 10
    while True:
        delta = {k: v - before.get(k, 0) for k, v in _scans(url).items()}
        if all(n >= expect for n in delta.values()) or time.monotonic() > deadline:
            return delta
        time.sleep(0.25)


def write_models(models: Path) -> None:
    models.mkdir(exist_ok=True)
    (models / "accounts.yml").write_text(
        "object: Account\noperation: upsert\nprimary_key: account_id\n"
        "external_id: External_Id__c\ntransport: composite\n"
        # Slow on purpose: a child sync beside it would run before any parent exists.
        "query: SELECT account_id, name FROM crm_accounts, pg_sleep(3)\n"
        "fields:\n  account_id: External_Id__c\n  name: Name\n"
    )
    (models / "contacts.yml").write_text(
        "object: Contact\noperation: upsert\nprimary_key: contact_id\n"
        "external_id: External_Id__c\ntransport: composite\nmax_reject_rate: 0\n"
        "query: SELECT contact_id, account_id, last_name FROM crm_contacts\n"
        "fields:\n  contact_id: External_Id__c\n  account_id: Account.External_Id__c\n"
        "  last_name: LastName\n"
    )


def definitions(root: str, instance_url: str, token: str, ca: str, pg: str) -> dg.Definitions:
    base = Path(root)
    return build_definitions(
        base / "models",
        resources={
            "salesforce": SalesforceResource(
                instance_url=instance_url, access_token=token, ca_bundle=ca
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=pg,
                state_url=str(base / "state"),
                rejects_url=str(base / "rejects"),
            ),
        },
        declare_dbt_assets=False,
        automation=False,
    )


def all_models_job(root: str, instance_url: str, token: str, ca: str, pg: str):
    """Module-level so the multiprocess executor can rebuild the job in each step process."""
    return definitions(root, instance_url, token, ca, pg).resolve_job_def(ALL_JOB_NAME)


def _metadata(instance: dg.DagsterInstance, run_id: str, key: list[str]) -> dict:
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            if mat.asset_key == dg.AssetKey(key):
                return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {key} in run {run_id}")


def test_sync_all_plans_once_per_model_and_syncs_parents_first(
    tmp_path: Path, emulator: EmulatorHandle, pg: str
) -> None:
    write_models(tmp_path / "models")
    job = dg.build_reconstructable_job(
        __name__,
        "all_models_job",
        reconstructor_working_directory=str(Path(__file__).resolve().parent.parent),
        reconstructable_args=(
            str(tmp_path),
            emulator.instance_url,
            emulator.access_token,
            str(emulator.ca_bundle),
            pg,
        ),
    )
    before = _scans(pg)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(
            job,
            instance=instance,
            run_config={"execution": {"config": {"multiprocess": {"max_concurrent": 4}}}},
        )
        assert result.success
        contacts_meta = _metadata(instance, result.run_id, ["salesforce", "contacts"])
        accounts_meta = _metadata(instance, result.run_id, ["salesforce", "accounts"])

    # Each model's query ran once in the warehouse, in the run that planned and sent it.
    assert _scans_settled(pg, before, 1) == {"crm_accounts": 1, "crm_contacts": 1}
    assert contacts_meta["plan_source"] == "staged"
    assert accounts_meta["plan_source"] == "staged"
    # Every child landed, under its parent, in the first run on an empty org.
    assert contacts_meta["succeeded"] == CONTACTS and contacts_meta["failed"] == 0
    accounts = {r["Id"]: r["External_Id__c"] for r in emulator.records("Account")}
    contacts = emulator.records("Contact")
    assert len(accounts) == ACCOUNTS and len(contacts) == CONTACTS
    assert all(accounts.get(c["AccountId"]) for c in contacts)
    # The staged plans are gone once sent.
    for model in ("accounts", "contacts"):
        assert not list((tmp_path / "state" / model / "plans").glob("*/*"))


def test_a_child_before_its_parent_model_is_held_then_lands(
    tmp_path: Path, emulator: EmulatorHandle, pg: str
) -> None:
    write_models(tmp_path / "models")
    defs = definitions(
        str(tmp_path), emulator.instance_url, emulator.access_token, str(emulator.ca_bundle), pg
    )
    with dg.instance_for_test() as instance:
        # The child alone, on an empty org: held, not rejected; the check does not fail.
        first = defs.resolve_job_def(job_name("contacts")).execute_in_process(instance=instance)
        assert first.success
        meta = _metadata(instance, first.run_id, ["salesforce", "contacts"])
        assert (meta["held"], meta["failed"], meta["succeeded"]) == (CONTACTS, 0, 0)
        assert "parent model accounts (Account) has not synced yet" in json.dumps(
            meta["held_reasons"]
        )
        assert not emulator.records("Contact")
        checks = [
            e.event_specific_data
            for e in first.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert [c.passed for c in checks] == [True]

        # Parent, then child: every held row lands.
        defs.resolve_job_def(job_name("accounts")).execute_in_process(instance=instance)
        second = defs.resolve_job_def(job_name("contacts")).execute_in_process(instance=instance)
        meta = _metadata(instance, second.run_id, ["salesforce", "contacts"])
        assert (meta["succeeded"], meta["held"]) == (CONTACTS, 0)
        assert len(emulator.records("Contact")) == CONTACTS

        # The parent model has landed every row: a child pointing at an account no model
        # syncs is the row's own fault, and rejected as Salesforce said.
        engine = sa.create_engine(pg)
        with engine.begin() as con:
            con.execute(
                sa.text("UPDATE crm_contacts SET account_id = 'A-404' WHERE contact_id = 'C-1'")
            )
        engine.dispose()
        third = defs.resolve_job_def(job_name("contacts")).execute_in_process(
            instance=instance, raise_on_error=False
        )
        meta = _metadata(instance, third.run_id, ["salesforce", "contacts"])
        assert (meta["failed"], meta["held"]) == (1, 0)
        reject_files = list((tmp_path / "rejects" / "contacts").rglob("*.jsonl"))
        rejects = [json.loads(line) for f in reject_files for line in f.read_text().splitlines()]
        assert [(r["primary_key"], r["error_code"]) for r in rejects] == [("C-1", "INVALID_FIELD")]
        assert "A-404 not found" in rejects[0]["message"]
