"""Bulk API 2.0 query jobs (`/services/data/vXX.X/jobs/query`) on the emulator.

The flow the Bulk API 2.0 guide walks through ("Step 6: Query Jobs") and jsforce's
`bulk2.query` follows: create, poll until JobComplete, then page the CSV results by
`Sforce-Locator` until it says `null`.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import requests

from sf_activation_tests.support.emulator import EmulatorHandle

V = "62.0"


def jobs(emu: EmulatorHandle, path: str = "", version: str = V) -> str:
    return f"{emu.instance_url}/services/data/v{version}/jobs/query{path}"


def create(emu: EmulatorHandle, query: str, **body: Any) -> requests.Response:
    return emu.http.post(jobs(emu), json={"operation": "query", "query": query, **body})


def wait(emu: EmulatorHandle, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = emu.http.get(jobs(emu, f"/{job_id}")).json()
        if info["state"] in ("JobComplete", "Failed", "Aborted") or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def insert_accounts(emu: EmulatorHandle, n: int) -> list[str]:
    out: list[str] = []
    for start in range(0, n, 200):
        records = [
            {"attributes": {"type": "Account"}, "Name": f"Account {i:03d}", "NumberOfEmployees": i}
            for i in range(start, min(n, start + 200))
        ]
        r = emu.http.post(
            emu.url(f"/services/data/v{V}/composite/sobjects"),
            json={"allOrNone": True, "records": records},
        )
        r.raise_for_status()
        out += [item["id"] for item in r.json()]
    return out


def test_query_job_pages_results_by_locator(emulator: EmulatorHandle) -> None:
    ids = insert_accounts(emulator, 25)
    r = create(emulator, "SELECT Id, Name, NumberOfEmployees FROM Account ORDER BY Name")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"].startswith("750") and job["object"] == "Account"
    assert (job["operation"], job["state"], job["contentType"]) == (
        "query",
        "UploadComplete",
        "CSV",
    )
    assert (job["apiVersion"], job["lineEnding"], job["columnDelimiter"]) == (62.0, "LF", "COMMA")

    info = wait(emulator, job["id"])
    assert info["state"] == "JobComplete" and info["jobType"] == "V2Query"
    assert info["numberRecordsProcessed"] == 25

    rows: list[dict[str, str]] = []
    sizes: list[int] = []
    locator: str | None = None
    while True:
        params: dict[str, Any] = {"maxRecords": 10}
        if locator:
            params["locator"] = locator
        page = emulator.http.get(jobs(emulator, f"/{job['id']}/results"), params=params)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/csv")
        assert page.text.splitlines()[0] == '"Id","Name","NumberOfEmployees"'
        page_rows = list(csv.DictReader(io.StringIO(page.text)))
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(page_rows)
        sizes.append(len(page_rows))
        rows += page_rows
        locator = page.headers["Sforce-Locator"]
        if locator == "null":
            break
    assert sizes == [10, 10, 5]
    assert [r["Name"] for r in rows] == [f"Account {i:03d}" for i in range(25)]
    assert {r["Id"] for r in rows} == set(ids)
    assert rows[7]["NumberOfEmployees"] == "7"
    # A locator can be used again: the same page comes back.
    again = emulator.http.get(
        jobs(emulator, f"/{job['id']}/results"), params={"maxRecords": 10, "locator": "MTA"}
    )
    assert [r["Name"] for r in csv.DictReader(io.StringIO(again.text))][0] == "Account 010"
    # Without maxRecords everything fits one page.
    whole = emulator.http.get(jobs(emulator, f"/{job['id']}/results"))
    assert whole.headers["Sforce-Locator"] == "null"
    assert whole.headers["Sforce-NumberOfRecords"] == "25"


def test_parent_fields_nulls_booleans_and_delimiters(emulator: EmulatorHandle) -> None:
    account = emulator.http.post(
        emulator.url(f"/services/data/v{V}/sobjects/Account"), json={"Name": "Acme"}
    ).json()["id"]
    for body in ({"LastName": "Able", "AccountId": account}, {"LastName": "Baker"}):
        emulator.http.post(
            emulator.url(f"/services/data/v{V}/sobjects/Contact"), json=body
        ).raise_for_status()
    r = create(
        emulator,
        "SELECT LastName, Account.Name, Email, IsDeleted, CreatedDate FROM Contact "
        "ORDER BY LastName",
        columnDelimiter="PIPE",
        lineEnding="CRLF",
    )
    job = r.json()
    assert wait(emulator, job["id"])["state"] == "JobComplete"
    text = emulator.http.get(jobs(emulator, f"/{job['id']}/results")).content.decode()
    lines = text.split("\r\n")
    assert lines[0] == '"LastName"|"Account.Name"|"Email"|"IsDeleted"|"CreatedDate"'
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="|"))
    assert rows[1][:4] == ["Able", "Acme", "", "false"]
    assert rows[2][:2] == ["Baker", ""]  # no parent: empty, not an error
    assert rows[1][4].endswith("Z") and "+0000" not in rows[1][4]


def test_query_all_list_abort_delete(emulator: EmulatorHandle) -> None:
    a, b = insert_accounts(emulator, 2)
    emulator.http.delete(emulator.url(f"/services/data/v{V}/sobjects/Account/{b}"))
    live = create(emulator, "SELECT Id FROM Account").json()
    every = create(emulator, "SELECT Id, IsDeleted FROM Account", operation="queryAll").json()
    assert every["operation"] == "queryAll"
    wait(emulator, live["id"])
    wait(emulator, every["id"])

    def ids_of(job_id: str) -> set[str]:
        text = emulator.http.get(jobs(emulator, f"/{job_id}/results")).text
        return {row["Id"] for row in csv.DictReader(io.StringIO(text))}

    assert ids_of(live["id"]) == {a}
    assert ids_of(every["id"]) == {a, b}

    listed = emulator.http.get(jobs(emulator)).json()
    assert listed["done"] is True
    assert {j["id"] for j in listed["records"]} >= {live["id"], every["id"]}
    assert {j["jobType"] for j in listed["records"]} == {"V2Query"}

    # Abort needs a job still running: bulk_seconds holds it InProgress.
    emulator.set_faults("bulk_seconds=5")
    try:
        slow = create(emulator, "SELECT Id FROM Account").json()
        early = emulator.http.get(jobs(emulator, f"/{slow['id']}/results"))
        assert early.status_code == 412
        assert early.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"
        aborted = emulator.http.patch(jobs(emulator, f"/{slow['id']}"), json={"state": "Aborted"})
        assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
        assert emulator.http.get(jobs(emulator, f"/{slow['id']}")).json()["state"] == "Aborted"
    finally:
        emulator.set_faults("")
    again = emulator.http.patch(jobs(emulator, f"/{slow['id']}"), json={"state": "Aborted"})
    assert again.status_code == 409

    assert emulator.http.delete(jobs(emulator, f"/{live['id']}")).status_code == 204
    gone = emulator.http.get(jobs(emulator, f"/{live['id']}"))
    assert gone.status_code == 404 and gone.json()[0]["errorCode"] == "NOT_FOUND"


def test_refused_queries_and_versions(emulator: EmulatorHandle) -> None:
    unknown_field = create(emulator, "SELECT Nope__c FROM Account")
    assert unknown_field.status_code == 400
    assert unknown_field.json()[0]["errorCode"] == "INVALID_FIELD"
    unknown_object = create(emulator, "SELECT Id FROM Nope__c")
    assert unknown_object.status_code == 400
    assert unknown_object.json()[0]["errorCode"] == "INVALID_TYPE"
    # What Bulk API 2.0 does not run: aggregates, OFFSET, parent-to-child sub-queries.
    for soql in (
        "SELECT COUNT() FROM Account",
        "SELECT Id FROM Account LIMIT 5 OFFSET 2",
        "SELECT Id, (SELECT Id FROM Contacts) FROM Account",
    ):
        refused = create(emulator, soql)
        assert refused.status_code == 400, soql
    bad_operation = emulator.http.post(jobs(emulator), json={"operation": "insert", "query": "x"})
    assert bad_operation.status_code == 400

    insert_accounts(emulator, 1)
    job = create(emulator, "SELECT Id FROM Account").json()
    wait(emulator, job["id"])
    # Results are read with the version the job was created with.
    other = emulator.http.get(jobs(emulator, f"/{job['id']}/results", version="61.0"))
    assert other.status_code == 409
