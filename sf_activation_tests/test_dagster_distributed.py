"""`sync_all` as a distributed deployment runs it (docs/deployment.md): every step in its
own OS process, nothing shared between them but S3, the warehouse and Dagster's storage.

The multiprocess executor stands in for `k8s_job_executor`'s pods: each step is a fresh
process that rebuilds the job from this module. The state and the reject files are on
moto's S3 server, the warehouse is a real PostgreSQL server with the warehouse diff
engine on (`SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA`), Salesforce is the emulator.

What a user sees:

- every row lands in Salesforce exactly once; the row Salesforce refuses is in a reject
  file on S3;
- each `salesforce/<model>` sent the plan its `warehouse/<model>` step staged in another
  process (`plan_source: staged`), diffed in the warehouse (`diff_engine: warehouse`);
- the staged plans and the leases are gone from S3 once sent; the state is on S3; no
  step left anything on its local disk that another would need (no local state, no
  work directory left behind);
- a second run after 3 rows of one model changed sends exactly those 3, and reads only
  those 3 out of the warehouse (`rows_fetched` 3, and 0 for the other model): the
  warehouse engine's tables were written back in step by the send steps' processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from sf_activation.dagster.resources import SalesforceResource, SyncSettingsResource
from sf_activation.definitions import ALL_JOB_NAME, build_definitions
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.postgres import postgres_url as postgres_url  # fixture
from sf_activation_tests.support.s3 import S3Server
from sf_activation_tests.support.s3 import s3_server as s3_server  # fixture

ACCOUNTS = 40
CONTACTS = 40
BAD_EMAIL = "C-7"  # Salesforce refuses its email in the first run; fixed in the second
MODELS = ("accounts", "contacts")
RUN_CONFIG = {"execution": {"config": {"multiprocess": {"max_concurrent": 4}}}}


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[str, str]]:
    """The warehouse's tables and the warehouse engine's schema, fresh for the test."""
    schema = f"sfa_dist_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as con:
        con.execute(sa.text("DROP TABLE IF EXISTS dist_accounts, dist_contacts"))
        con.execute(
            sa.text(
                "CREATE TABLE dist_accounts AS SELECT 'A-' || i AS account_id, "
                f"'Account ' || i AS name FROM generate_series(1, {ACCOUNTS}) i"
            )
        )
        con.execute(
            sa.text(
                "CREATE TABLE dist_contacts AS SELECT 'C-' || i AS contact_id, "
                "'Last ' || i AS last_name, "
                f"CASE WHEN 'C-' || i = '{BAD_EMAIL}' THEN 'not-an-address' "
                "ELSE 'c' || i || '@example.com' END AS email "
                f"FROM generate_series(1, {CONTACTS}) i"
            )
        )
    try:
        yield postgres_url, schema
    finally:
        with engine.begin() as con:
            con.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            con.execute(sa.text("DROP TABLE IF EXISTS dist_accounts, dist_contacts"))
        engine.dispose()


def write_models(models: Path) -> None:
    models.mkdir(exist_ok=True)
    # Two objects: the sends take different object leases and may run side by side.
    (models / "accounts.yml").write_text(
        "object: Account\noperation: upsert\nprimary_key: account_id\n"
        "external_id: External_Id__c\ntransport: composite\n"
        "query: SELECT account_id, name FROM dist_accounts\n"
        "fields:\n  account_id: External_Id__c\n  name: Name\n"
    )
    (models / "contacts.yml").write_text(
        "object: Contact\noperation: upsert\nprimary_key: contact_id\n"
        "external_id: External_Id__c\ntransport: composite\n"
        "query: SELECT contact_id, last_name, email FROM dist_contacts\n"
        "fields:\n  contact_id: External_Id__c\n  last_name: LastName\n  email: Email\n"
    )


def sync_all_job(
    models: str, state_url: str, rejects_url: str, instance_url: str, token: str, ca: str, pg: str
) -> dg.JobDefinition:
    """Module-level: each step's process rebuilds the job from these arguments."""
    defs = build_definitions(
        models,
        resources={
            "salesforce": SalesforceResource(
                instance_url=instance_url, access_token=token, ca_bundle=ca
            ),
            "sync_settings": SyncSettingsResource(
                warehouse_url=pg, state_url=state_url, rejects_url=rejects_url
            ),
        },
        declare_dbt_assets=False,
        automation=False,
    )
    return defs.resolve_job_def(ALL_JOB_NAME)


def _materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """`salesforce/<model>` -> its materialization's metadata, in this run."""
    out: dict[str, dict] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = record.dagster_event.event_specific_data.materialization
        if mat.asset_key.path[0] == "salesforce":
            out[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Step key -> the OS process it started in."""
    return {
        r.dagster_event.step_key: r.dagster_event.pid
        for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    }


def _warehouse_rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            return [tuple(r) for r in con.execute(sa.text(sql)).fetchall()]
    finally:
        engine.dispose()


def _leftovers(tmp: Path) -> list[str]:
    """What the steps' processes left in their temp directory (work dirs, state copies)."""
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("sf-activation-", "sfa-")))


def test_sync_all_on_separate_processes_over_s3_and_the_warehouse_engine(
    tmp_path: Path,
    emulator: EmulatorHandle,
    pg: tuple[str, str],
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, schema = pg
    prefix = f"dist-{uuid.uuid4().hex[:12]}"
    state_url = f"{s3_server.url}/{prefix}/state"
    rejects_url = f"{s3_server.url}/{prefix}/rejects"
    write_models(tmp_path / "models")
    # The steps' processes inherit these: their working directory (a relative default
    # state or rejects directory would land here), their temp directory (work dirs), and
    # the warehouse engine's schema, as a pod gets them from its environment.
    work = tmp_path / "worker"
    (work / "tmp").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(work / "tmp"))
    monkeypatch.setenv("SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA", schema)
    job = dg.build_reconstructable_job(
        __name__,
        "sync_all_job",
        reconstructor_working_directory=str(Path(__file__).resolve().parent.parent),
        reconstructable_args=(
            str(tmp_path / "models"),
            state_url,
            rejects_url,
            emulator.instance_url,
            emulator.access_token,
            str(emulator.ca_bundle),
            url,
        ),
    )
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        # ------------------------------------------------ first run: an empty org
        first = dg.execute_job(job, instance=instance, run_config=RUN_CONFIG)
        assert first.success
        meta = _materializations(instance, first.run_id)
        pids = _step_pids(instance, first.run_id)

        # Four steps, four processes, none of them this one.
        assert set(pids) == {
            f"{layer}__{m}" for layer in ("warehouse", "salesforce") for m in MODELS
        }
        assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()
        for model, rows in (("accounts", ACCOUNTS), ("contacts", CONTACTS)):
            m = meta[model]
            assert (m["plan_source"], m["diff_engine"]) == ("staged", "warehouse"), model
            # The first run reads every row once (the engine's tables did not exist yet),
            # and says why.
            assert (m["rows"], m["rows_fetched"]) == (rows, rows), model
            assert m.get("full_read_reason"), model
        assert (meta["accounts"]["succeeded"], meta["accounts"]["failed"]) == (ACCOUNTS, 0)
        assert (meta["contacts"]["succeeded"], meta["contacts"]["failed"]) == (CONTACTS - 1, 1)

        # Every row in Salesforce exactly once.
        accounts = emulator.records("Account")
        contacts = emulator.records("Contact")
        assert sorted(r["External_Id__c"] for r in accounts) == sorted(
            f"A-{i}" for i in range(1, ACCOUNTS + 1)
        )
        assert sorted(r["External_Id__c"] for r in contacts) == sorted(
            f"C-{i}" for i in range(1, CONTACTS + 1) if f"C-{i}" != BAD_EMAIL
        )

        # Everything the steps handed each other is on S3, and only what must stay stays.
        state_keys = s3_server.keys(f"{prefix}/state/")
        for model in MODELS:
            mine = [k for k in state_keys if k.startswith(f"{prefix}/state/{model}/")]
            assert mine, f"no state of {model} on S3"
            assert not [k for k in mine if "/plans/" in k], "a staged plan was left on S3"
            assert f"{prefix}/state/{model}/lease.json" not in state_keys
        assert not [k for k in state_keys if k.endswith("lease.json")], "a lease was left"
        reject_files = [
            k for k in s3_server.keys(f"{prefix}/rejects/contacts/") if k.endswith(".jsonl")
        ]
        assert len(reject_files) == 1 and first.run_id in reject_files[0]
        body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=reject_files[0])
        assert f'"{BAD_EMAIL}"' in body["Body"].read().decode()
        assert not s3_server.keys(f"{prefix}/rejects/accounts/")
        # Nothing local: no state or rejects directory, no work directory left behind.
        assert not (work / ".sf_activation").exists()
        assert _leftovers(work / "tmp") == []

        # The warehouse engine's tables are in step with the state on S3.
        in_step = _warehouse_rows(url, f"SELECT model FROM {schema}.sfa_models ORDER BY model")
        assert [r[0] for r in in_step] == list(MODELS)

        # ------------------------------------------------ second run: 3 rows changed
        engine = sa.create_engine(url)
        with engine.begin() as con:
            con.execute(
                sa.text(
                    "UPDATE dist_contacts SET last_name = last_name || ' (moved)' "
                    "WHERE contact_id IN ('C-1', 'C-2')"
                )
            )
            con.execute(
                sa.text("UPDATE dist_contacts SET email = 'c7@example.com' WHERE contact_id = :k"),
                {"k": BAD_EMAIL},
            )
        engine.dispose()
        second = dg.execute_job(job, instance=instance, run_config=RUN_CONFIG)
        assert second.success
        meta = _materializations(instance, second.run_id)
        assert len(set(_step_pids(instance, second.run_id).values())) == 4

    for m in meta.values():
        assert (m["plan_source"], m["diff_engine"]) == ("staged", "warehouse")
        assert "full_read_reason" not in m  # the engine was in step: no full read
    contacts_meta, accounts_meta = meta["contacts"], meta["accounts"]
    assert (contacts_meta["sent"], contacts_meta["succeeded"]) == (3, 3)
    assert contacts_meta["rows_fetched"] == 3
    assert (accounts_meta["sent"], accounts_meta["rows_fetched"]) == (0, 0)
    assert accounts_meta["unchanged"] == ACCOUNTS

    contacts = {r["External_Id__c"]: r for r in emulator.records("Contact")}
    assert len(contacts) == CONTACTS == len(emulator.records("Contact"))
    assert contacts["C-1"]["LastName"] == "Last 1 (moved)"
    assert contacts["C-2"]["LastName"] == "Last 2 (moved)"
    assert contacts[BAD_EMAIL]["Email"] == "c7@example.com"
    assert len(emulator.records("Account")) == ACCOUNTS
    assert not [k for k in s3_server.keys(f"{prefix}/state/") if "/plans/" in k]
    assert not (work / ".sf_activation").exists()
    assert _leftovers(work / "tmp") == []
