"""Composite and Bulk 2.0 sends against the emulator over real HTTPS.

API-call counts are read from the emulator's own counter, not the client's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sf_activation.salesforce import (
    BulkSettings,
    RecordOutcome,
    SalesforceClient,
    SendReport,
    SendRequest,
    coerce_batch,
)
from sf_activation.salesforce.describe import ObjectDescribe
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.salesforce_fixtures import fast_client, write_schema_dir

SYSTEM_FIELDS = {
    "Id", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById",
    "SystemModstamp", "IsDeleted", "OwnerId", "attributes", "LastViewedDate",
    "LastReferencedDate",
}  # fmt: skip


@pytest.fixture(scope="module")
def widget_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    tmp = tmp_path_factory.mktemp("sf_send")
    schema = write_schema_dir(tmp / "schema")
    with start_emulator(tmp, "--schema", str(schema)) as handle:
        yield handle


@pytest.fixture
def em(emulator: EmulatorHandle) -> EmulatorHandle:
    """The shared emulator (built-in objects), emptied before each test."""
    return emulator


@pytest.fixture
def client(em: EmulatorHandle) -> Iterator[SalesforceClient]:
    c = fast_client(em)
    yield c
    c.close()


def canonical(
    describe: ObjectDescribe, columns: dict[str, list[Any]], field_map: dict[str, str], pk: str
) -> pa.RecordBatch:
    """What the sync hands the client: coerce_batch output keyed by the primary key."""
    out = coerce_batch(
        pa.RecordBatch.from_pydict(columns), primary_key=pk, field_map=field_map, describe=describe
    )
    assert out.column("__error_code").null_count == out.num_rows, out.column("__error_message")
    keep = [n for n in out.schema.names if not n.startswith("__")]
    return pa.RecordBatch.from_arrays(
        [out.column("__pk"), *(out.column(n) for n in keep)], names=["__key", *keep]
    )


def send(
    client: SalesforceClient, batches: list[pa.RecordBatch], **request: Any
) -> tuple[SendReport, dict[str, RecordOutcome]]:
    outcomes: list[RecordOutcome] = []
    report = client.send(SendRequest(**request), batches, outcomes.extend)
    by_key = {o.key: o for o in outcomes}
    assert len(by_key) == len(outcomes) == report.sent, "exactly one outcome per record"
    return report, by_key


def calls(em: EmulatorHandle) -> int:
    return em.stats()["api_calls"]


def accounts(
    client: SalesforceClient, n: int, start: int = 0, **extra: list[Any]
) -> pa.RecordBatch:
    cols: dict[str, list[Any]] = {
        "ext": [f"A-{i}" for i in range(start, start + n)],
        "name": [f"Account {i}" for i in range(start, start + n)],
        **extra,
    }
    mapping = {"ext": "External_Id__c", "name": "Name"}
    mapping.update({k: k for k in extra})
    return canonical(client.describe("Account"), cols, mapping, "ext")


def test_composite_upsert_takes_one_call_per_200_records(em, client):
    client.describe("Account")
    batch = accounts(client, 450)
    before = calls(em)
    # The stream arrives in uneven batches; chunks are still full 200s.
    parts = [batch.slice(0, 150), batch.slice(150, 75), batch.slice(225)]
    report, outcomes = send(
        client, parts, object="Account", operation="upsert", external_id="External_Id__c"
    )
    assert calls(em) - before == math.ceil(450 / 200) == report.api_calls
    assert report.succeeded == 450 and all(o.created for o in outcomes.values())
    assert all(o.sf_id and o.sf_id.startswith("001") for o in outcomes.values())
    stored = {r["External_Id__c"]: r["Id"] for r in em.records("Account")}
    assert stored == {k: o.sf_id for k, o in outcomes.items()}

    report, outcomes = send(
        client, [batch], object="Account", operation="upsert", external_id="External_Id__c"
    )
    assert report.succeeded == 450 and not any(o.created for o in outcomes.values())
    assert len(em.records("Account")) == 450


def test_composite_insert_update_and_delete_by_id(em, client):
    describe = client.describe("Account")
    inserted = canonical(
        describe, {"k": [f"k{i}" for i in range(250)], "n": [f"N{i}" for i in range(250)]},
        {"n": "Name"}, "k",
    )  # fmt: skip
    before = calls(em)
    report, outcomes = send(client, [inserted], object="Account", operation="insert")
    assert report.succeeded == 250 and calls(em) - before == 2
    ids = [outcomes[f"k{i}"].sf_id for i in range(250)]
    update = canonical(
        describe,
        {"k": [f"k{i}" for i in range(250)], "id": ids, "emp": list(range(250))},
        {"id": "Id", "emp": "NumberOfEmployees"},
        "k",
    )
    before = calls(em)
    report, outcomes = send(client, [update], object="Account", operation="update")
    assert report.succeeded == 250 and calls(em) - before == 2
    assert {r["NumberOfEmployees"] for r in em.records("Account")} == set(range(250))
    delete = canonical(describe, {"k": [f"k{i}" for i in range(250)], "id": ids}, {"id": "Id"}, "k")
    before = calls(em)
    report, outcomes = send(client, [delete], object="Account", operation="delete")
    assert report.succeeded == 250 and calls(em) - before == 2
    assert em.records("Account") == []


def test_rows_without_id_or_external_id_are_rejected_before_sending(em, client):
    describe = client.describe("Account")
    batch = canonical(describe, {"k": ["a", "b"], "id": [None, None]}, {"id": "Id"}, "k")
    before = calls(em)
    report, outcomes = send(client, [batch], object="Account", operation="update")
    assert calls(em) == before and report.failed == 2
    assert outcomes["a"].error_code == "MISSING_ARGUMENT" and not outcomes["a"].retryable


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_record_errors_reject_the_row_not_the_batch(em, client, transport):
    describe = client.describe("Account")
    batch = canonical(describe, {"k": ["ok", "no-name"], "n": ["Fine", None]}, {"n": "Name"}, "k")
    report, outcomes = send(
        client, [batch], object="Account", operation="insert", transport=transport
    )
    assert outcomes["ok"].success
    bad = outcomes["no-name"]
    assert (bad.success, bad.retryable, bad.error_code) == (False, False, "REQUIRED_FIELD_MISSING")
    assert bad.fields == ["Name"] and report.failed == 1


def test_a_request_refused_as_a_whole_is_split_to_find_the_bad_record(em, client):
    # With `nulls: keep` a null field is left out, so only one record carries Bogus__c;
    # Salesforce refuses the whole request for an unknown field.
    n = 200
    bogus = [None] * n
    bogus[137] = "x"
    batch = accounts(client, n)
    batch = pa.RecordBatch.from_arrays(
        [*batch.columns, pa.array(bogus, pa.string())], names=[*batch.schema.names, "Bogus__c"]
    )
    report, outcomes = send(
        client, [batch], object="Account", operation="upsert",
        external_id="External_Id__c", nulls="keep",
    )  # fmt: skip
    assert report.succeeded == n - 1 and report.failed == 1
    bad = outcomes["A-137"]
    assert bad.error_code == "INVALID_FIELD" and not bad.retryable
    assert len(em.records("Account")) == n - 1
    assert report.api_calls <= 2 * math.ceil(math.log2(n)) + 1


def count_polls(client: SalesforceClient) -> list[int]:
    """Count the client's job-status polls (the emulator's route counter lumps every Bulk
    route together, so polls are told apart here; totals still come from the emulator)."""
    polls = [0]
    session = client.session
    original = session.request

    def request(method: str, path: str, **kwargs: Any):
        parts = path.rstrip("/").split("/")
        if method == "GET" and len(parts) == 3 and parts[:2] == ["jobs", "ingest"]:
            polls[0] += 1
        return original(method, path, **kwargs)

    session.request = request  # type: ignore[method-assign]
    return polls


def test_bulk_upsert_is_one_job_with_at_most_six_calls_plus_polls(em, client):
    client.describe("Account")
    batch = accounts(client, 3000)
    polls = count_polls(client)
    before = calls(em)
    report, outcomes = send(
        client, [batch], object="Account", operation="upsert",
        external_id="External_Id__c", transport="bulk",
    )  # fmt: skip
    assert report.succeeded == 3000 and len(report.bulk_job_ids) == 1
    used = calls(em) - before
    assert used == report.api_calls and polls[0] >= 1
    assert used - polls[0] <= 6
    stored = {r["External_Id__c"]: r["Id"] for r in em.records("Account")}
    assert stored == {k: o.sf_id for k, o in outcomes.items()}
    assert all(o.created for o in outcomes.values())


def test_bulk_splits_jobs_by_csv_size_and_streams_them(em):
    small = fast_client(
        em, bulk=BulkSettings(max_job_bytes=15_000, poll_initial=0.05, poll_max=0.2)
    )
    small.describe("Account")
    batches = [accounts(small, 500, start=i * 500) for i in range(4)]
    polls = count_polls(small)
    before = calls(em)
    report, outcomes = send(
        small, batches, object="Account", operation="upsert",
        external_id="External_Id__c", transport="bulk",
    )  # fmt: skip
    jobs = len(report.bulk_job_ids)
    assert jobs >= 3 and report.succeeded == 2000
    assert calls(em) - before - polls[0] <= 6 * jobs
    assert len(em.records("Account")) == 2000


def test_bulk_insert_update_and_delete_by_id(em, client):
    describe = client.describe("Account")
    keys = [f"k{i}" for i in range(300)]
    names = [f'Name "{i}", with, commas\nand a newline ✓' for i in range(300)]
    inserted = canonical(describe, {"k": keys, "n": names}, {"n": "Name"}, "k")
    report, outcomes = send(
        client, [inserted], object="Account", operation="insert", transport="bulk"
    )
    assert report.succeeded == 300
    by_id = {r["Id"]: r["Name"] for r in em.records("Account")}
    assert {by_id[outcomes[k].sf_id] for k in keys} == set(names)  # quoting survived
    ids = [outcomes[k].sf_id for k in keys]
    update = canonical(
        describe, {"k": keys, "id": ids, "s": ["x"] * 300}, {"id": "Id", "s": "Site"}, "k"
    )
    report, _ = send(client, [update], object="Account", operation="update", transport="bulk")
    assert report.succeeded == 300 and {r["Site"] for r in em.records("Account")} == {"x"}
    delete = canonical(describe, {"k": keys, "id": ids}, {"id": "Id"}, "k")
    report, _ = send(client, [delete], object="Account", operation="delete", transport="bulk")
    assert report.succeeded == 300 and em.records("Account") == []


def test_identical_insert_rows_each_get_their_own_record(em, client):
    describe = client.describe("Account")
    batch = canonical(describe, {"k": ["a", "b", "c"], "n": ["Same"] * 3}, {"n": "Name"}, "k")
    report, outcomes = send(client, [batch], object="Account", operation="insert", transport="bulk")
    assert report.succeeded == 3
    assert len({o.sf_id for o in outcomes.values()}) == 3 == len(em.records("Account"))


def test_a_failed_bulk_job_leaves_its_rows_retryable(em, client):
    client.describe("Account")
    batch = accounts(client, 50)
    batch = pa.RecordBatch.from_arrays(
        [*batch.columns, pa.array(["x"] * 50)], names=[*batch.schema.names, "Bogus__c"]
    )
    report, outcomes = send(
        client, [batch], object="Account", operation="upsert",
        external_id="External_Id__c", transport="bulk",
    )  # fmt: skip
    assert report.retryable == 50 and report.succeeded == 0
    outcome = outcomes["A-0"]
    assert outcome.retryable and outcome.error_code == "BULK_JOB_FAILED"
    assert "Bogus__c" in (outcome.message or "")
    assert em.records("Account") == []


# -- the two transports write the same records -----------------------------------------

WIDGET_MAP = {
    "key": "Ext__c", "name": "Name", "count": "Count__c", "price": "Price__c",
    "ratio": "Ratio__c", "weight": "Weight__c", "active": "Active__c", "launch": "Launch__c",
    "seen": "Seen__c", "tier": "Tier__c", "regions": "Regions__c", "notes": "Notes__c",
    "account": "Account__r.External_Id__c",
}  # fmt: skip


def widget_rows(with_nulls: bool) -> dict[str, list[Any]]:
    n = 40
    rows: dict[str, list[Any]] = {
        "key": [f"W-{i}" for i in range(n)],
        "name": [f'Widget {i}, "quoted"' if i % 3 else f"Widget {i}\nline two ü" for i in range(n)],
        "count": [i * 7 for i in range(n)],
        "price": [i * 1.255 for i in range(n)],
        "ratio": [i / 3 for i in range(n)],
        "weight": [i * 1000.12345 for i in range(n)],
        "active": [i % 2 == 0 for i in range(n)],
        "launch": [f"2024-01-{1 + i % 28:02d}" for i in range(n)],
        "seen": [f"2024-02-03T04:05:{i % 60:02d}.5+02:00" for i in range(n)],
        "tier": [["Gold", "Silver", "Bronze"][i % 3] for i in range(n)],
        "regions": [["EU", "US"] if i % 2 else ["APAC"] for i in range(n)],
        "notes": ["a,b;c\td" * (i % 4) or None for i in range(n)],
        "account": [f"A-{i % 3}" for i in range(n)],
    }
    if with_nulls:
        for column in rows:
            if column != "key":
                rows[column] = [None if i % 2 else v for i, v in enumerate(rows[column])]
        rows["active"] = [True] * n  # Active__c is not nillable
    return rows


def widget_snapshot(em: EmulatorHandle) -> dict[str, dict[str, Any]]:
    account_ext = {r["Id"]: r["External_Id__c"] for r in em.records("Account")}
    snapshot = {}
    for record in em.records("Widget__c"):
        values = {k: v for k, v in record.items() if k not in SYSTEM_FIELDS}
        values["Account__c"] = account_ext.get(values.get("Account__c"))  # Ids differ per run
        snapshot[record["Ext__c"]] = values
    return snapshot


def sync_widgets(em: EmulatorHandle, transport: str, nulls: str) -> dict[str, dict[str, Any]]:
    em.reset()
    client = fast_client(em)
    try:
        send(
            client, [accounts(client, 3)], object="Account", operation="upsert",
            external_id="External_Id__c",
        )  # fmt: skip
        describe = client.describe("Widget__c")
        for with_nulls in (False, True):
            batch = canonical(describe, widget_rows(with_nulls), WIDGET_MAP, "key")
            report, _ = send(
                client, [batch], object="Widget__c", operation="upsert", external_id="Ext__c",
                transport=transport, nulls=nulls,
            )  # fmt: skip
            assert report.succeeded == batch.num_rows, report
    finally:
        client.close()
    return widget_snapshot(em)


@pytest.mark.parametrize("nulls", ["clear", "keep"])
def test_composite_and_bulk_write_the_same_record_field_by_field(widget_emulator, nulls):
    by_composite = sync_widgets(widget_emulator, "composite", nulls)
    by_bulk = sync_widgets(widget_emulator, "bulk", nulls)
    assert by_composite.keys() == by_bulk.keys() and len(by_bulk) == 40
    for key, record in by_composite.items():
        for field, value in record.items():
            assert by_bulk[key].get(field) == value, (key, field)
    odd = by_composite["W-1"]  # a row whose second send had nulls
    if nulls == "clear":
        assert odd["Name"] is None and odd["Count__c"] is None and odd["Account__c"] is None
        assert odd["Regions__c"] is None
    else:
        assert odd["Name"] == 'Widget 1, "quoted"' and odd["Account__c"] == "A-1"
    even = by_composite["W-0"]
    assert (
        even["Name"] == "Widget 0\nline two ü" and even["Seen__c"] == "2024-02-03T02:05:00.500+0000"
    )
    assert even["Regions__c"] == "APAC" and even["Account__c"] == "A-0"


# -- API budget --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_the_run_stops_before_the_api_budget_and_leaves_rows_pending(tmp_path, transport):
    with start_emulator(tmp_path, "--daily-api-limit", "40") as em:
        client = fast_client(em, max_api_usage_share=0.5)
        client.describe("Account")
        small_jobs = BulkSettings(max_job_bytes=8_000, poll_initial=0.05, poll_max=0.1)
        client.bulk = small_jobs
        batch = accounts(client, 6000)
        report, outcomes = send(
            client, [batch], object="Account", operation="upsert",
            external_id="External_Id__c", transport=transport,
        )  # fmt: skip
        assert report.stopped_reason and "budget" in report.stopped_reason.lower()
        assert calls(em) <= 20  # 50% of 40
        assert report.succeeded > 0 and report.failed == 0
        assert report.succeeded + report.retryable == 6000
        pending = [o for o in outcomes.values() if not o.success]
        assert all(o.retryable and o.error_code == "API_BUDGET_REACHED" for o in pending)
        assert len(em.records("Account")) == report.succeeded


def test_the_daily_limit_itself_stops_the_run_cleanly(tmp_path):
    with start_emulator(tmp_path, "--daily-api-limit", "5") as em:
        client = fast_client(em, max_api_usage_share=1.0)
        client.describe("Account")
        report, outcomes = send(
            client, [accounts(client, 2000)], object="Account", operation="upsert",
            external_id="External_Id__c", concurrency=1,
        )  # fmt: skip
        assert report.stopped_reason and report.succeeded == len(em.records("Account")) <= 800
        assert report.failed == 0 and report.retryable == 2000 - report.succeeded


def test_bulk_rows_to_send_stay_out_of_memory(em, client, tmp_path):
    # Spool files live in the work dir while a job runs and are removed afterwards.
    work = tmp_path / "work"
    work.mkdir()
    client.bulk = BulkSettings(work_dir=work, poll_initial=0.05, poll_max=0.2)
    client.describe("Account")
    report, _ = send(
        client, [accounts(client, 100)], object="Account", operation="upsert",
        external_id="External_Id__c", transport="bulk",
    )  # fmt: skip
    assert report.succeeded == 100 and list(Path(work).iterdir()) == []
