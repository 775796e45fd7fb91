"""REST resources on the emulator: describes, single records, query paging, limits, errors.

simple-salesforce is the independent client where it has the call; plain requests
where it does not (or where the status code matters).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceResourceNotFound

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

V = "62.0"


def url(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def bulk_create(
    http: requests.Session, emu: EmulatorHandle, type_: str, rows: list[dict[str, Any]]
) -> list[str]:
    ids = []
    for start in range(0, len(rows), 200):
        chunk = [{"attributes": {"type": type_}, **r} for r in rows[start : start + 200]]
        results = http.post(url(emu, "composite/sobjects"), json={"records": chunk}).json()
        assert all(r["success"] for r in results), results
        ids += [r["id"] for r in results]
    return ids


# ---- describes ----------------------------------------------------------------------------


def test_global_describe_lists_builtin_and_schema_objects(emu: EmulatorHandle) -> None:
    body = emu.salesforce(V).describe()
    assert body["encoding"] == "UTF-8" and body["maxBatchSize"] == 200
    by_name = {o["name"]: o for o in body["sobjects"]}
    for name, prefix in [
        ("Account", "001"),
        ("Contact", "003"),
        ("Opportunity", "006"),
        ("Lead", "00Q"),
        ("Case", "500"),
        ("User", "005"),
        ("Organization", "00D"),
        ("Widget__c", "a01"),
        ("Gadget__c", "a02"),
    ]:
        assert by_name[name]["keyPrefix"] == prefix
    assert by_name["Widget__c"]["custom"] is True
    assert (
        by_name["Account"]["urls"]["describe"] == f"/services/data/v{V}/sobjects/Account/describe"
    )
    assert "fields" not in by_name["Account"]


def test_object_describe(emu: EmulatorHandle, http: requests.Session) -> None:
    describe = emu.salesforce(V).Account.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    assert describe["name"] == "Account" and describe["keyPrefix"] == "001"
    assert fields["Name"]["type"] == "string" and fields["Name"]["length"] == 255
    assert fields["External_Id__c"]["externalId"] is True
    # Case-insensitive names, trailing slash, and the `sf sobject describe --json` wrapper.
    assert http.get(url(emu, "sobjects/account/describe/")).json()["name"] == "Account"
    gadget = http.get(url(emu, "sobjects/Gadget__c/describe")).json()
    assert gadget["name"] == "Gadget__c"
    assert {f["name"] for f in gadget["fields"]} >= {"Gadget_Id__c", "Widget__c"}
    basic = http.get(url(emu, "sobjects/Widget__c")).json()
    assert basic["objectDescribe"]["name"] == "Widget__c" and basic["recentItems"] == []


def test_unknown_object_is_404(emu: EmulatorHandle, http: requests.Session) -> None:
    for method, path in [
        ("get", "sobjects/Foo/describe"),
        ("get", "sobjects/Foo"),
        ("post", "sobjects/Foo"),
        ("get", "sobjects/Foo/001000000000001AAA"),
    ]:
        r = getattr(http, method)(url(emu, path), json={})
        assert r.status_code == 404
        assert r.json() == [
            {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
        ]


def test_schema_dir_overrides_a_builtin_object(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    describe = {
        "name": "Account",
        "label": "Account",
        "keyPrefix": "001",
        "fields": [
            {
                "name": "Id",
                "type": "id",
                "label": "Account ID",
                "nillable": False,
                "createable": False,
                "updateable": False,
                "defaultedOnCreate": True,
                "idLookup": True,
            },
            {
                "name": "Name",
                "type": "string",
                "label": "Account Name",
                "length": 10,
                "nillable": False,
                "createable": True,
                "updateable": True,
            },
            {
                "name": "Tier__c",
                "type": "picklist",
                "label": "Tier",
                "length": 40,
                "nillable": True,
                "createable": True,
                "updateable": True,
                "restrictedPicklist": True,
                "picklistValues": [{"value": "Gold", "active": True}],
            },
        ],
    }
    (schemas / "Account.json").write_text(json.dumps({"status": 0, "result": describe}))
    with start_emulator(tmp_path, "--schema", str(schemas)) as emu:
        http = emu.session()
        fields = [
            f["name"] for f in http.get(url(emu, "sobjects/Account/describe")).json()["fields"]
        ]
        assert fields == ["Id", "Name", "Tier__c"]
        rows = [
            {"attributes": {"type": "Account"}, "Name": "0123456789X"},
            {"attributes": {"type": "Account"}, "Name": "ok", "Tier__c": "Tin"},
        ]
        too_long, bad_tier = http.post(
            url(emu, "composite/sobjects"), json={"records": rows}
        ).json()
        assert too_long["errors"][0]["statusCode"] == "STRING_TOO_LONG"
        assert "(max length=10)" in too_long["errors"][0]["message"]
        assert bad_tier["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


# ---- single-record endpoints ----------------------------------------------------------------


def test_single_record_lifecycle_with_simple_salesforce(emu: EmulatorHandle) -> None:
    sf = emu.salesforce(V)
    created = sf.Account.create({"Name": "Acme", "NumberOfEmployees": 10})
    assert created["success"] is True and created["errors"] == []
    record_id = created["id"]
    got = sf.Account.get(record_id)
    assert got["Name"] == "Acme" and got["NumberOfEmployees"] == 10 and got["Id"] == record_id
    assert got["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v{V}/sobjects/Account/{record_id}",
    }
    assert "Industry" in got and got["Industry"] is None  # every field, null when unset
    assert sf.Account.update(record_id, {"Industry": "Banking"}) == 204
    assert sf.Account.get(record_id)["Industry"] == "Banking"
    assert sf.Account.delete(record_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(record_id)


def test_single_record_status_codes(emu: EmulatorHandle, http: requests.Session) -> None:
    r = http.post(url(emu, "sobjects/Account"), json={"Name": "A"})
    assert r.status_code == 201
    record_id = r.json()["id"]
    r = http.get(url(emu, f"sobjects/Account/{record_id}"), params={"fields": "Name,Phone"})
    assert r.json() == {
        "attributes": {
            "type": "Account",
            "url": f"/services/data/v{V}/sobjects/Account/{record_id}",
        },
        "Name": "A",
        "Phone": None,
    }
    r = http.post(url(emu, "sobjects/Account"), json={"Phone": "1"})
    assert r.status_code == 400
    assert r.json() == [
        {
            "message": "Required fields are missing: [Name]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["Name"],
        }
    ]
    r = http.post(url(emu, "sobjects/Account"), json={"Name": "A", "Nope": 1})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "INVALID_FIELD"
    r = http.patch(url(emu, f"sobjects/Account/{record_id}"), json={"NumberOfEmployees": "many"})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    r = http.patch(url(emu, "sobjects/Account/001000000000001AAA"), json={"Name": "x"})
    assert r.status_code == 404 and r.json()[0]["errorCode"] == "NOT_FOUND"
    r = http.patch(url(emu, "sobjects/Account/abc"), json={"Name": "x"})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "MALFORMED_ID"
    assert http.delete(url(emu, f"sobjects/Account/{record_id}")).status_code == 204
    r = http.delete(url(emu, f"sobjects/Account/{record_id}"))
    assert r.status_code == 404 and r.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    r = http.post(
        url(emu, "sobjects/Account"), data=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_upsert_and_get_by_external_id(emu: EmulatorHandle, http: requests.Session) -> None:
    sf = emu.salesforce(V)
    r = http.patch(url(emu, "sobjects/Account/External_Id__c/A-1"), json={"Name": "First"})
    assert r.status_code == 201
    assert r.json()["created"] is True and r.json()["success"] is True
    r = http.patch(url(emu, "sobjects/Account/External_Id__c/A-1"), json={"Name": "Second"})
    assert r.status_code == 200 and r.json()["created"] is False
    assert sf.Account.upsert("External_Id__c/A-2", {"Name": "via simple-salesforce"}) == 201
    got = sf.Account.get_by_custom_id("External_Id__c", "A-1")
    assert got["Name"] == "Second" and got["External_Id__c"] == "A-1"
    r = http.get(url(emu, "sobjects/Account/External_Id__c/none"))
    assert r.status_code == 404
    r = http.patch(url(emu, "sobjects/Account/No_Such__c/1"), json={"Name": "x"})
    assert r.status_code == 404
    assert (
        r.json()[0]["message"]
        == "Provided external ID field does not exist or is not accessible: No_Such__c"
    )
    # Several records share a non-unique external id: 300 with their URLs.
    rows = [{"Name": f"W{i}", "Legacy_Code__c": "L"} for i in range(2)]
    ids = bulk_create(http, emu, "Widget__c", rows)
    r = http.get(url(emu, "sobjects/Widget__c/Legacy_Code__c/L"))
    assert r.status_code == 300
    assert sorted(r.json()) == sorted(f"/services/data/v{V}/sobjects/Widget__c/{i}" for i in ids)


def test_recorded_contact_upsert_by_email_sequence(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    """The shape of a recorded real-org exchange: upsert Contacts on Email, twice."""
    first = [
        {"FirstName": "Lindsay", "LastName": "Sitwell", "Email": "lindsay.bluth@example.com"},
        {"FirstName": "Audrey", "LastName": "Cain", "Email": "audrey.cain@example.com"},
    ]
    body = {
        "allOrNone": False,
        "records": [{**r, "attributes": {"type": "Contact"}} for r in first],
    }
    results = http.patch(url(emu, "composite/sobjects/Contact/Email"), json=body).json()
    assert [set(r) for r in results] == [{"id", "success", "errors", "created"}] * 2
    assert [r["created"] for r in results] == [True, True]
    second = [
        {"FirstName": "Lindsay", "LastName": "Bluth", "Email": "Lindsay.Bluth@example.com"},
        {"FirstName": "Michael", "LastName": "Bluth", "Email": "michael.bluth@example.com"},
    ]
    body = {
        "allOrNone": False,
        "records": [{**r, "attributes": {"type": "Contact"}} for r in second],
    }
    again = http.patch(url(emu, "composite/sobjects/Contact/Email"), json=body).json()
    assert again[0] == {"id": results[0]["id"], "success": True, "errors": [], "created": False}
    assert again[1]["created"] is True
    names = sorted(c["Name"] for c in emu.records("Contact"))
    assert names == ["Audrey Cain", "Lindsay Bluth", "Michael Bluth"]


# ---- query paging -----------------------------------------------------------------------------


def test_query_pages_past_2000_rows(emu: EmulatorHandle, http: requests.Session) -> None:
    bulk_create(http, emu, "Account", [{"Name": f"Account {i:05d}"} for i in range(2300)])
    first = http.get(url(emu, "query/?q=SELECT+Id,+Name+FROM+Account")).json()
    assert first["totalSize"] == 2300 and first["done"] is False
    assert len(first["records"]) == 2000
    next_url = first["nextRecordsUrl"]
    assert next_url.startswith(f"/services/data/v{V}/query/01g") and next_url.endswith("-2000")
    second = http.get(emu.url(next_url)).json()
    assert (
        second["done"] is True and len(second["records"]) == 300 and "nextRecordsUrl" not in second
    )
    seen = {r["Id"] for r in first["records"]} | {r["Id"] for r in second["records"]}
    assert len(seen) == 2300
    # simple-salesforce follows nextRecordsUrl itself.
    assert len(emu.salesforce(V).query_all("SELECT Id FROM Account")["records"]) == 2300
    # A smaller page on request (Sforce-Query-Options), %20 for spaces.
    r = http.get(
        url(emu, "query?q=SELECT%20Id%20FROM%20Account"),
        headers={"Sforce-Query-Options": "batchSize=500"},
    )
    assert len(r.json()["records"]) == 500 and r.json()["nextRecordsUrl"].endswith("-500")


def test_query_errors_and_count(emu: EmulatorHandle, http: requests.Session) -> None:
    r = http.get(url(emu, "query"))
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "MALFORMED_QUERY"
    r = http.get(url(emu, "query"), params={"q": "SELECT Id FROM Nope__c"})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "INVALID_TYPE"
    r = http.get(url(emu, "query/01g000000000000AAA-2000"))
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    bulk_create(http, emu, "Contact", [{"LastName": f"L{i}"} for i in range(3)])
    r = http.get(url(emu, "query"), params={"q": "SELECT COUNT() FROM Contact"})
    assert r.json() == {"totalSize": 3, "done": True, "records": []}
    r = http.get(
        url(emu, "query"), params={"q": "SELECT Id, LastName FROM Contact", "columns": "true"}
    )
    assert r.status_code == 200 and "columnMetadata" in r.json()


# ---- limits, counting, test routes ----------------------------------------------------------


def test_limits_and_usage_header(emu: EmulatorHandle, http: requests.Session) -> None:
    sf = emu.salesforce(V)
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 14999}
    r = http.get(url(emu, "limits/"))
    assert r.headers["Sforce-Limit-Info"] == "api-usage=2/15000"
    assert r.json()["DailyApiRequests"]["Remaining"] == 14998
    assert sf.api_usage["api-usage"].used == 1  # simple-salesforce reads the header
    bulk_create(http, emu, "Account", [{"Name": "A"}])
    r = http.get(url(emu, "limits/recordCount"), params={"sObjects": "Account,Contact"})
    assert r.json() == {
        "sObjects": [{"count": 1, "name": "Account"}, {"count": 0, "name": "Contact"}]
    }


def test_stats_records_and_reset(emu: EmulatorHandle, http: requests.Session) -> None:
    bulk_create(http, emu, "Account", [{"Name": "A"}, {"Name": "B"}])
    http.get(url(emu, "sobjects/Account/describe"))
    http.get(url(emu, "sobjects/Contact/describe"))
    stats = emu.stats()
    assert stats["api_calls"] == 3
    assert stats["requests_by_route"] == {
        "POST /services/data/v{version}/composite/sobjects": 1,
        "GET /services/data/v{version}/sobjects/{object}/describe": 2,
    }
    assert len(emu.records("Account")) == 2
    assert len(emu.records("User")) == 1  # the org's own user
    r = http.get(emu.url("/__emulator/records/Nope__c"))
    assert r.status_code == 404
    emu.reset()
    no_faults = {"lost": 0, "bulk_results": 0, "slow": 0, "drop": 0, "unavailable": 0}
    assert emu.records("Account") == []
    assert emu.stats() == {
        "api_calls": 0,
        "requests_by_route": {},
        "api_calls_by_client": {"by_token_sha256": {}, "by_client_id": {}},
        "faults": no_faults,
    }
    assert len(emu.records("User")) == 1 and len(emu.records("Organization")) == 1


def test_daily_api_limit(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--daily-api-limit", "3") as emu:
        http = emu.session()
        for used in (1, 2, 3):
            r = http.get(url(emu, "limits/"))
            assert r.status_code == 200 and r.headers["Sforce-Limit-Info"] == f"api-usage={used}/3"
        r = http.get(url(emu, "sobjects/"))
        assert r.status_code == 403
        assert r.json() == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
        assert (
            emu.stats()["api_calls"] == 3
        )  # refused calls are not counted, test routes still work


def test_unknown_routes_and_methods(emu: EmulatorHandle, http: requests.Session) -> None:
    for path in (
        url(emu, "nope"),
        emu.url("/services/data/vX/sobjects/"),
        emu.url("/nothing/here"),
    ):
        r = http.get(path)
        assert r.status_code == 404
        assert r.json()[0]["errorCode"] == "NOT_FOUND"
    r = http.put(url(emu, "sobjects/Account"), json={})
    assert r.status_code == 405 and r.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"
    # Resources index of a version.
    assert "sobjects" in http.get(url(emu, "")).json()


def test_query_all_sees_deleted_records_and_15_character_ids_work(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    kept, gone = bulk_create(http, emu, "Account", [{"Name": "kept"}, {"Name": "gone"}])
    assert http.delete(url(emu, f"sobjects/Account/{gone[:15]}")).status_code == 204
    assert http.get(url(emu, f"sobjects/Account/{kept[:15]}")).json()["Id"] == kept
    live = http.get(url(emu, "query"), params={"q": "SELECT Id, IsDeleted FROM Account"}).json()
    assert [r["Id"] for r in live["records"]] == [kept]
    every = http.get(
        url(emu, "queryAll/"), params={"q": "SELECT Id, IsDeleted FROM Account"}
    ).json()
    assert {r["Id"]: r["IsDeleted"] for r in every["records"]} == {kept: False, gone: True}
