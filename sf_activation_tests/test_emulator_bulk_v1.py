"""Bulk API 1.0 (`/services/async/{version}/job…`) on the emulator, over real HTTPS.

The requests are the ones the Bulk API Developer Guide shows and the recorded real-org
exchanges in shared/data/real-org make (XML jobInfo, CSV batches, `X-SFDC-Session`);
the answers are read as a client reads them: XML parsed, CSV read, JSON loaded.
"""

from __future__ import annotations

import csv
import io
import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from sf_activation_tests.support.emulator import EmulatorHandle

V = "62.0"
NS = "http://www.force.com/2009/06/asyncapi/dataload"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XML = "application/xml; charset=UTF-8"


def bulk(emu: EmulatorHandle, path: str = "") -> str:
    return f"{emu.instance_url}/services/async/{V}/job{path}"


@pytest.fixture
def v1(emulator: EmulatorHandle) -> requests.Session:
    """A session authenticating the Bulk 1.0 way: `X-SFDC-Session`, no Authorization."""
    session = requests.Session()
    session.verify = emulator.ca_bundle or True
    session.headers["X-SFDC-Session"] = emulator.access_token
    return session


def xml_fields(text: str) -> dict[str, str]:
    root = ET.fromstring(text)
    return {child.tag.split("}")[1]: child.text or "" for child in root}


def job_xml(**fields: str) -> str:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><jobInfo xmlns="{NS}">{inner}</jobInfo>'


def create_xml_job(v1: requests.Session, emu: EmulatorHandle, **fields: str) -> dict[str, str]:
    r = v1.post(bulk(emu), data=job_xml(**fields), headers={"Content-Type": XML})
    assert r.status_code == 201, r.text
    return xml_fields(r.text)


def close(v1: requests.Session, emu: EmulatorHandle, job_id: str, fmt: str = "XML") -> Any:
    if fmt == "JSON":
        return v1.post(bulk(emu, f"/{job_id}"), json={"state": "Closed"}).json()
    r = v1.post(
        bulk(emu, f"/{job_id}"), data=job_xml(state="Closed"), headers={"Content-Type": XML}
    )
    assert r.status_code == 200, r.text
    return xml_fields(r.text)


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_insert_job_like_the_recorded_one(
    emulator: EmulatorHandle, v1: requests.Session
) -> None:
    job = create_xml_job(
        v1, emulator, operation="insert", object="Account", concurrencyMode="Parallel",
        contentType="CSV",
    )  # fmt: skip
    assert job["state"] == "Open" and job["object"] == "Account" and job["id"].startswith("750")
    assert job["contentType"] == "CSV" and job["apiVersion"] == V
    assert job["numberBatchesTotal"] == "0"

    body = '"Name","NumberOfEmployees"\n"Sitwell-Bluth","12"\n"","3"\n"Bluth, Co","#N/A"\n'
    r = v1.post(
        bulk(emulator, f"/{job['id']}/batch"), data=body, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 201, r.text
    batch = xml_fields(r.text)
    assert batch["state"] == "Queued" and batch["jobId"] == job["id"]
    assert batch["id"].startswith("751")

    info = xml_fields(v1.get(bulk(emulator, f"/{job['id']}/batch/{batch['id']}")).text)
    assert info["state"] == "Completed"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("3", "1")

    result = v1.get(bulk(emulator, f"/{job['id']}/batch/{batch['id']}/result"))
    assert result.headers["content-type"].startswith("text/csv")
    assert result.text.splitlines()[0] == '"Id","Success","Created","Error"'
    rows = read_csv(result.text)
    assert [(r["Success"], r["Created"]) for r in rows] == [
        ("true", "true"),
        ("false", "false"),
        ("true", "true"),
    ]
    assert rows[1]["Id"] == ""
    assert rows[1]["Error"].startswith("REQUIRED_FIELD_MISSING:Required fields are missing: [Name]")
    stored = {r["Id"]: r for r in emulator.records("Account")}
    assert stored[rows[0]["Id"]]["Name"] == "Sitwell-Bluth"
    assert stored[rows[0]["Id"]]["NumberOfEmployees"] == 12
    assert stored[rows[2]["Id"]]["Name"] == "Bluth, Co"
    assert stored[rows[2]["Id"]]["NumberOfEmployees"] is None

    # The batch request gives back what was sent; the job closes and counts its batches.
    assert v1.get(bulk(emulator, f"/{job['id']}/batch/{batch['id']}/request")).text == body
    closed = close(v1, emulator, job["id"])
    assert closed["state"] == "Closed"
    assert (closed["numberBatchesCompleted"], closed["numberBatchesTotal"]) == ("1", "1")
    assert (closed["numberRecordsProcessed"], closed["numberRecordsFailed"]) == ("3", "1")
    listing = ET.fromstring(v1.get(bulk(emulator, f"/{job['id']}/batch")).text)
    assert [b.find(f"{{{NS}}}id").text for b in listing] == [batch["id"]]  # type: ignore[union-attr]

    # A closed job takes no more batches: Bulk's XML error, HTTP 400.
    late = v1.post(
        bulk(emulator, f"/{job['id']}/batch"), data=body, headers={"Content-Type": "text/csv"}
    )
    assert late.status_code == 400
    assert xml_fields(late.text)["exceptionCode"] == "InvalidJobState"


def test_upsert_by_external_id_then_update_delete_hard_delete(
    emulator: EmulatorHandle, v1: requests.Session
) -> None:
    def run(operation: str, body: str, **extra: str) -> list[dict[str, str]]:
        job = create_xml_job(
            v1, emulator, operation=operation, object="Account", contentType="CSV", **extra
        )
        r = v1.post(
            bulk(emulator, f"/{job['id']}/batch"), data=body, headers={"Content-Type": "text/csv"}
        )
        assert r.status_code == 201, r.text
        close(v1, emulator, job["id"])
        result = v1.get(bulk(emulator, f"/{job['id']}/batch/{xml_fields(r.text)['id']}/result"))
        return read_csv(result.text)

    first = run(
        "upsert", "External_Id__c,Name\nE-1,One\nE-2,Two\n", externalIdFieldName="External_Id__c"
    )
    assert [(r["Success"], r["Created"]) for r in first] == [("true", "true"), ("true", "true")]
    again = run(
        "upsert", "External_Id__c,Name\nE-1,Uno\nE-3,Three\n", externalIdFieldName="external_id__c"
    )
    assert [r["Created"] for r in again] == ["false", "true"]
    assert again[0]["Id"] == first[0]["Id"]
    assert sorted(r["Name"] for r in emulator.records("Account")) == ["Three", "Two", "Uno"]

    updated = run("update", f"Id,Name\n{first[1]['Id']},Deux\n")
    assert updated[0]["Success"] == "true" and updated[0]["Created"] == "false"
    soft = run("delete", f"Id\n{first[1]['Id']}\n")
    hard = run("hardDelete", f"Id\n{again[1]['Id']}\n")
    assert soft[0]["Success"] == hard[0]["Success"] == "true"
    assert [r["Name"] for r in emulator.records("Account")] == ["Uno"]
    # The soft-deleted one is in the recycle bin (queryAll), the hard-deleted one is not.
    everything = emulator.http.get(
        emulator.url(f"/services/data/v{V}/queryAll"),
        params={"q": "SELECT Name, IsDeleted FROM Account"},
    ).json()["records"]
    assert sorted((r["Name"], r["IsDeleted"]) for r in everything) == [
        ("Deux", True),
        ("Uno", False),
    ]

    missing = v1.post(
        bulk(emulator),
        data=job_xml(operation="upsert", object="Account"),
        headers={"Content-Type": XML},
    )
    assert missing.status_code == 400
    assert xml_fields(missing.text)["exceptionCode"] == "InvalidJob"
    assert "External ID was blank for Account" in xml_fields(missing.text)["exceptionMessage"]


def test_json_job_with_bearer_auth_and_serial_mode(emulator: EmulatorHandle) -> None:
    http = emulator.session()  # Authorization: Bearer works as well as X-SFDC-Session
    r = http.post(
        bulk(emulator),
        json={
            "operation": "insert",
            "object": "Contact",
            "contentType": "JSON",
            "concurrencyMode": "Serial",
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["state"], job["concurrencyMode"], job["contentType"]) == ("Open", "Serial", "JSON")
    assert job["apiVersion"] == 62.0 and job["externalIdFieldName"] is None

    account = emulator.http.post(
        emulator.url(f"/services/data/v{V}/sobjects/Account"),
        json={"Name": "Parent", "External_Id__c": "P-1"},
    ).json()["id"]
    records = [
        {"LastName": "Bluth", "Email": "m@example.com", "Account": {"External_Id__c": "P-1"}},
        {"LastName": "Fünke", "Birthdate": "1970-01-31"},
        {"FirstName": "Nobody"},
    ]
    batch = http.post(bulk(emulator, f"/{job['id']}/batch"), json=records).json()
    assert batch["state"] == "Queued" and batch["stateMessage"] is None
    results = http.get(bulk(emulator, f"/{job['id']}/batch/{batch['id']}/result")).json()
    assert [r["success"] for r in results] == [True, True, False]
    assert results[2] == {
        "success": False,
        "created": False,
        "id": None,
        "errors": [
            {
                "message": "Required fields are missing: [LastName]",
                "fields": ["LastName"],
                "statusCode": "REQUIRED_FIELD_MISSING",
            }
        ],
    }
    stored = {r["Id"]: r for r in emulator.records("Contact")}
    assert stored[results[0]["id"]]["AccountId"] == account
    assert stored[results[1]["id"]]["LastName"] == "Fünke"
    assert stored[results[1]["id"]]["Birthdate"] == "1970-01-31"
    listing = http.get(bulk(emulator, f"/{job['id']}/batch")).json()
    assert [b["id"] for b in listing["batchInfo"]] == [batch["id"]]
    assert close(http, emulator, job["id"], "JSON")["numberRecordsFailed"] == 1


def test_simple_salesforce_style_concurrency_ordinals(emulator: EmulatorHandle) -> None:
    # simple-salesforce sends concurrencyMode 0 / 1 (the enum's ordinal) in its JSON.
    http = emulator.session()
    serial = http.post(
        bulk(emulator),
        json={
            "operation": "insert",
            "object": "Account",
            "contentType": "JSON",
            "concurrencyMode": 1,
        },
    )
    parallel = http.post(
        bulk(emulator),
        json={
            "operation": "insert",
            "object": "Account",
            "contentType": "JSON",
            "concurrencyMode": 0,
        },
    )
    assert serial.json()["concurrencyMode"] == "Serial"
    assert parallel.json()["concurrencyMode"] == "Parallel"


def test_xml_batches_with_nil_and_relationships(
    emulator: EmulatorHandle, v1: requests.Session
) -> None:
    emulator.http.post(
        emulator.url(f"/services/data/v{V}/sobjects/Account"),
        json={"Name": "Parent", "External_Id__c": "X-1"},
    ).raise_for_status()
    job = create_xml_job(v1, emulator, operation="insert", object="Contact", contentType="XML")
    body = (
        f'<sObjects xmlns="{NS}" xmlns:xsi="{XSI}">'
        '<sObject><LastName>Bluth</LastName><Title xsi:nil="true"/>'
        "<Account><sObject><External_Id__c>X-1</External_Id__c></sObject></Account></sObject>"
        "<sObject><LastName>Bluth &amp; Sons</LastName><Bogus__c>1</Bogus__c></sObject>"
        "</sObjects>"
    )
    r = v1.post(
        bulk(emulator, f"/{job['id']}/batch"), data=body.encode(), headers={"Content-Type": XML}
    )
    assert r.status_code == 201, r.text
    result = ET.fromstring(
        v1.get(bulk(emulator, f"/{job['id']}/batch/{xml_fields(r.text)['id']}/result")).text
    )
    items = [{c.tag.split("}")[1]: c for c in item} for item in result]
    assert items[0]["success"].text == "true" and items[0]["created"].text == "true"
    assert items[1]["success"].text == "false"
    error = {c.tag.split("}")[1]: c.text for c in items[1]["errors"]}
    assert error["statusCode"] == "INVALID_FIELD" and "Bogus__c" in (error["message"] or "")
    stored = emulator.records("Contact")
    assert [c["LastName"] for c in stored] == ["Bluth"]
    assert stored[0]["AccountId"] == emulator.records("Account")[0]["Id"]


def test_query_batches_in_csv_xml_and_json(emulator: EmulatorHandle, v1: requests.Session) -> None:
    parent = emulator.http.post(
        emulator.url(f"/services/data/v{V}/sobjects/Account"), json={"Name": "Acme"}
    ).json()["id"]
    for name in ("Able", "Baker"):
        emulator.http.post(
            emulator.url(f"/services/data/v{V}/sobjects/Contact"),
            json={"LastName": name, "AccountId": parent, "Birthdate": "1980-02-01"},
        ).raise_for_status()
    soql = (
        "SELECT Id, LastName, Account.Name, Birthdate, CreatedDate FROM Contact ORDER BY LastName"
    )

    def run(content_type: str) -> tuple[dict[str, Any], str]:
        job = create_xml_job(
            v1, emulator, operation="query", object="Contact", contentType=content_type
        )
        media = {"CSV": "text/csv", "XML": XML, "JSON": "application/json"}[content_type]
        r = v1.post(
            bulk(emulator, f"/{job['id']}/batch"), data=soql, headers={"Content-Type": media}
        )
        assert r.status_code == 201, r.text
        batch_id = r.json()["id"] if content_type == "JSON" else xml_fields(r.text)["id"]
        return job, batch_id

    job, batch_id = run("CSV")
    listing = ET.fromstring(v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result")).text)
    assert listing.tag == f"{{{NS}}}result-list"
    result_ids = [r.text for r in listing]
    assert len(result_ids) == 1 and result_ids[0].startswith("752")  # type: ignore[union-attr]
    rows = read_csv(
        v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result/{result_ids[0]}")).text
    )
    assert [(r["LastName"], r["Account.Name"], r["Birthdate"]) for r in rows] == [
        ("Able", "Acme", "1980-02-01"),
        ("Baker", "Acme", "1980-02-01"),
    ]
    # Bulk CSV writes datetimes with a Z, not the REST API's +0000.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[0]["CreatedDate"])
    batch = xml_fields(v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}")).text)
    assert batch["numberRecordsProcessed"] == "2"

    job, batch_id = run("XML")
    result_id = ET.fromstring(v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result")).text)[
        0
    ].text
    page = ET.fromstring(
        v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result/{result_id}")).text
    )
    first = page[0]
    assert first.get(f"{{{XSI}}}type") == "sObject"
    assert first.find(f"{{{NS}}}LastName").text == "Able"  # type: ignore[union-attr]
    assert first.find(f"{{{NS}}}Account/{{{NS}}}Name").text == "Acme"  # type: ignore[union-attr]

    job, batch_id = run("JSON")
    http = emulator.session()
    ids = http.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result")).json()
    records = http.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result/{ids[0]}")).json()
    assert [r["LastName"] for r in records] == ["Able", "Baker"]
    assert records[0]["Account"]["Name"] == "Acme"
    # Bulk 1.0 JSON writes dates and datetimes as epoch milliseconds (as recorded).
    assert records[0]["Birthdate"] == 318211200000  # 1980-02-01T00:00:00Z
    assert isinstance(records[0]["CreatedDate"], int)


def test_query_with_pk_chunking(emulator: EmulatorHandle, v1: requests.Session) -> None:
    emulator.salesforce().bulk.Account.insert([{"Name": f"A{i}"} for i in range(5)])
    r = v1.post(
        bulk(emulator),
        data=job_xml(operation="query", object="Account", contentType="CSV"),
        headers={"Content-Type": XML, "Sforce-Enable-PKChunking": "chunkSize=2"},
    )
    job = xml_fields(r.text)
    original = xml_fields(
        v1.post(
            bulk(emulator, f"/{job['id']}/batch"),
            data="SELECT Name FROM Account",
            headers={"Content-Type": "text/csv"},
        ).text
    )
    close(v1, emulator, job["id"])
    listing = ET.fromstring(v1.get(bulk(emulator, f"/{job['id']}/batch")).text)
    batches = [{c.tag.split("}")[1]: c.text for c in b} for b in listing]
    states = {b["id"]: b["state"] for b in batches}
    assert states.pop(original["id"]) == "NotProcessed"  # the original batch is split up
    assert list(states.values()) == ["Completed"] * 3
    names: list[str] = []
    for batch_id in states:
        result_id = ET.fromstring(
            v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result")).text
        )[0].text
        names += [
            r["Name"]
            for r in read_csv(
                v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result/{result_id}")).text
            )
        ]
    assert sorted(names) == [f"A{i}" for i in range(5)]


def test_errors_in_bulk_format(emulator: EmulatorHandle, v1: requests.Session) -> None:
    # No valid session: 400 with InvalidSessionId, which is what jsforce looks for.
    anonymous = requests.post(
        bulk(emulator), data=job_xml(operation="insert", object="Account"),
        headers={"Content-Type": XML, "X-SFDC-Session": "00Dxx!nope"}, verify=emulator.ca_bundle,
    )  # fmt: skip
    assert anonymous.status_code == 400
    assert ET.fromstring(anonymous.text).tag == f"{{{NS}}}error"
    assert xml_fields(anonymous.text) == {
        "exceptionCode": "InvalidSessionId",
        "exceptionMessage": "Invalid session id",
    }
    as_json = requests.post(
        bulk(emulator), json={"operation": "insert", "object": "Account"},
        headers={"X-SFDC-Session": "nope"}, verify=emulator.ca_bundle,
    )  # fmt: skip
    assert as_json.status_code == 400 and as_json.json()["exceptionCode"] == "InvalidSessionId"

    unknown = v1.post(
        bulk(emulator),
        data=job_xml(operation="insert", object="Nope__c"),
        headers={"Content-Type": XML},
    )
    assert unknown.status_code == 400
    assert xml_fields(unknown.text) == {
        "exceptionCode": "InvalidJob",
        "exceptionMessage": "Unable to find object: Nope__c",
    }
    bad_xml = v1.post(bulk(emulator), data="<jobInfo><operation>", headers={"Content-Type": XML})
    assert xml_fields(bad_xml.text)["exceptionCode"] == "InvalidXML"
    no_job = v1.get(bulk(emulator, "/750000000000000AAA"))
    assert no_job.status_code == 400 and xml_fields(no_job.text)["exceptionCode"] == "InvalidJob"

    # A batch whose CSV header names an unknown field fails as a whole.
    job = create_xml_job(v1, emulator, operation="insert", object="Account", contentType="CSV")
    r = v1.post(
        bulk(emulator, f"/{job['id']}/batch"),
        data="Name,Bogus__c\nx,y\n",
        headers={"Content-Type": "text/csv"},
    )
    batch_id = xml_fields(r.text)["id"]
    info = xml_fields(v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}")).text)
    assert info["state"] == "Failed"
    assert info["stateMessage"] == "InvalidBatch : Field name not found : Bogus__c"
    result = v1.get(bulk(emulator, f"/{job['id']}/batch/{batch_id}/result"))
    assert result.status_code == 400 and xml_fields(result.text)["exceptionCode"] == "InvalidBatch"
    # A query batch with bad SOQL fails with the query's error.
    qjob = create_xml_job(v1, emulator, operation="query", object="Account", contentType="CSV")
    r = v1.post(
        bulk(emulator, f"/{qjob['id']}/batch"),
        data="SELECT Nope FROM Account",
        headers={"Content-Type": "text/csv"},
    )
    info = xml_fields(
        v1.get(bulk(emulator, f"/{qjob['id']}/batch/{xml_fields(r.text)['id']}")).text
    )
    assert info["state"] == "Failed"
    assert info["stateMessage"].startswith("InvalidBatch : Failed to process query: INVALID_FIELD:")
    assert emulator.records("Account") == []


def test_abort_and_queued_batches_under_bulk_seconds(
    emulator: EmulatorHandle, v1: requests.Session
) -> None:
    emulator.set_faults("bulk_seconds=1.5")
    try:
        job = create_xml_job(v1, emulator, operation="insert", object="Account", contentType="CSV")
        first = xml_fields(
            v1.post(
                bulk(emulator, f"/{job['id']}/batch"),
                data="Name\nKept\n",
                headers={"Content-Type": "text/csv"},
            ).text
        )
        # Still queued: results are not there yet, and polling sees the state move.
        early = v1.get(bulk(emulator, f"/{job['id']}/batch/{first['id']}/result"))
        assert early.status_code == 400
        assert xml_fields(early.text)["exceptionMessage"] == "Batch not completed"
        deadline = time.monotonic() + 10
        while (
            xml_fields(v1.get(bulk(emulator, f"/{job['id']}/batch/{first['id']}")).text)["state"]
            != "Completed"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = xml_fields(
            v1.post(
                bulk(emulator, f"/{job['id']}/batch"),
                data="Name\nDropped\n",
                headers={"Content-Type": "text/csv"},
            ).text
        )
        aborted = xml_fields(
            v1.post(
                bulk(emulator, f"/{job['id']}"),
                data=job_xml(state="Aborted"),
                headers={"Content-Type": XML},
            ).text
        )
        assert aborted["state"] == "Aborted"
        time.sleep(2)
        info = xml_fields(v1.get(bulk(emulator, f"/{job['id']}/batch/{second['id']}")).text)
        assert info["state"] == "NotProcessed"
        assert [r["Name"] for r in emulator.records("Account")] == ["Kept"]
    finally:
        emulator.set_faults("")


def test_bulk_v1_batches_count_in_limits(emulator: EmulatorHandle, v1: requests.Session) -> None:
    def remaining() -> int:
        limits = emulator.http.get(emulator.url(f"/services/data/v{V}/limits")).json()
        return int(limits["DailyBulkApiBatches"]["Remaining"])

    before = remaining()
    job = create_xml_job(v1, emulator, operation="insert", object="Account", contentType="CSV")
    for name in ("a", "b"):
        v1.post(
            bulk(emulator, f"/{job['id']}/batch"),
            data=f"Name\n{name}\n",
            headers={"Content-Type": "text/csv"},
        )
    assert remaining() == before - 2
