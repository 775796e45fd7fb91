"""REST resources jsforce and simple-salesforce users call: layouts, SOSL, recent items,
replication (updated/deleted), tabs, themes, list views, query plans, quick actions, the
resource list and the SOAP endpoint; plus the Bulk and limits fixes that came with them.

Driven through simple-salesforce where it has a method for the resource, else plain
HTTP; the assertions are what a client sees.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.login import soap_login

from sf_activation_tests.support.emulator import EmulatorHandle

V = "62.0"
MASTER = "012000000000000AAA"


def data_url(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def create(emu: EmulatorHandle, object_name: str, **fields: Any) -> str:
    r = emu.http.post(data_url(emu, f"sobjects/{object_name}"), json=fields, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def items(section: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for row in section["layoutRows"] for i in row["layoutItems"] if not i["placeholder"]]


# ---- resource list, SOAP -------------------------------------------------------------


def test_resource_list_names_identity_and_the_resources_served(emulator: EmulatorHandle) -> None:
    listing = emulator.salesforce().restful("")
    assert listing["identity"].startswith(emulator.instance_url + "/id/00D")
    for name in ("sobjects", "query", "search", "parameterizedSearch", "recent", "tabs"):
        assert listing[name] == f"/services/data/v{V}/{name}"
    # The identity URL answers (it is the OAuth identity service).
    r = emulator.http.get(listing["identity"], timeout=10)
    assert r.status_code == 200 and r.json()["organization_id"].startswith("00D")


def test_soap_login_gets_a_soap_fault_not_a_rest_401(emulator: EmulatorHandle) -> None:
    envelope = (
        '<?xml version="1.0" encoding="utf-8" ?><env:Envelope '
        'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>'
        '<n1:login xmlns:n1="urn:partner.soap.sforce.com"><n1:username>u</n1:username>'
        "<n1:password>p</n1:password></n1:login></env:Body></env:Envelope>"
    )
    session = requests.Session()
    session.verify = emulator.ca_bundle or True
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        soap_login(
            emulator.url(f"/services/Soap/u/{V}"),
            envelope,
            {"content-type": "text/xml", "SOAPAction": "login"},
            None,
            session,
        )
    assert failure.value.code == "API_DISABLED_FOR_ORG"
    assert "oauth2/token" in failure.value.auth_message
    # Another call without a session: INVALID_SESSION_ID, as XML with status 500.
    r = session.post(emulator.url(f"/services/Soap/u/{V}"), data=b"<x/>", timeout=10)
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/xml")
    assert "<faultcode>sf:INVALID_SESSION_ID</faultcode>" in r.text


# ---- layouts -------------------------------------------------------------------------


def test_describe_layouts_through_simple_salesforce(emulator: EmulatorHandle) -> None:
    sf = emulator.salesforce()
    result = sf.restful("sobjects/Account/describe/layouts")
    assert len(result["layouts"]) == 1
    mapping = result["recordTypeMappings"][0]
    assert mapping["recordTypeId"] == MASTER and mapping["layoutId"] == result["layouts"][0]["id"]
    assert {"Type", "Industry"} <= {p["picklistName"] for p in mapping["picklistsForRecordType"]}

    layout = sf.Account.describe_layout(MASTER)  # .../describe/layouts/{recordTypeId}
    sections = {s["heading"]: s for s in layout["detailLayoutSections"]}
    info = items(sections["Account Information"])
    assert info[0]["layoutComponents"][0]["value"] == "Name" and info[0]["required"]
    assert info[0]["layoutComponents"][0]["details"]["type"] == "string"
    address = items(sections["Address Information"])[0]["layoutComponents"][0]
    assert address["value"] == "BillingAddress"
    assert "BillingCity" in {c["value"] for c in address["components"]}
    system = items(sections["System Information"])
    assert not any(i["editableForUpdate"] for i in system)
    related = {r["name"]: r for r in layout["relatedLists"]}
    assert (
        related["Contacts"]["sobject"] == "Contact" and related["Contacts"]["field"] == "AccountId"
    )
    assert {"Opportunities", "Cases", "Tasks", "ChildAccounts"} <= set(related)

    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.describe_layout("012000000000999AAA")


def test_compact_approval_and_named_layouts(emulator: EmulatorHandle) -> None:
    sf = emulator.salesforce()
    compact = sf.restful("sobjects/Contact/describe/compactLayouts")
    assert compact["compactLayouts"][0]["name"] == "SYSTEM"
    assert compact["recordTypeCompactLayoutMappings"][0]["recordTypeId"] == MASTER
    fields = [i["layoutComponents"][0]["value"] for i in compact["compactLayouts"][0]["fieldItems"]]
    assert fields[0] == "Name"
    assert sf.restful("sobjects/Contact/describe/compactLayouts/primary")["objectType"] == "Contact"
    both = sf.restful("compactLayouts", params={"q": "Account,Contact"})
    assert set(both) == {"Account", "Contact"}

    assert sf.restful("sobjects/Account/describe/approvalLayouts") == {"approvalLayouts": []}
    named = sf.restful("sobjects/User/describe/namedLayouts/UserAlt")
    assert named["layouts"] and named["recordTypeMappings"] == []


def test_unknown_describe_subresource_is_a_plain_404(emulator: EmulatorHandle) -> None:
    for path in ("sobjects/Account/describe/nope", "sobjects/User/describe/namedLayouts/Nope"):
        r = emulator.http.get(data_url(emulator, path), timeout=10)
        assert r.status_code == 404, path
        # Not "Provided external ID field does not exist …": describe is no field.
        assert r.json() == [
            {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
        ]


# ---- SOSL ----------------------------------------------------------------------------


@pytest.fixture
def people(emulator: EmulatorHandle) -> dict[str, str]:
    acme = create(emulator, "Account", Name="Acme Widgets", Phone="(415) 555-1212")
    globex = create(emulator, "Account", Name="Globex Corporation", Industry="Energy")
    smith = create(
        emulator, "Contact", FirstName="John", LastName="Smith", Email="john@acme.example",
        AccountId=acme,
    )  # fmt: skip
    jones = create(emulator, "Contact", FirstName="Jane", LastName="Jones", AccountId=globex)
    return {"acme": acme, "globex": globex, "smith": smith, "jones": jones}


def test_sosl_search_with_returning_fields(
    emulator: EmulatorHandle, people: dict[str, str]
) -> None:
    sf = emulator.salesforce()
    found = sf.search("FIND {Acme} IN ALL FIELDS RETURNING Account(Id, Name)")["searchRecords"]
    assert [(r["attributes"]["type"], r["Id"], r["Name"]) for r in found] == [
        ("Account", people["acme"], "Acme Widgets")
    ]
    # Without RETURNING every searchable object is searched; records carry just their Id.
    quick = sf.quick_search("Smith")["searchRecords"]
    assert [(r["attributes"]["type"], r["Id"]) for r in quick] == [("Contact", people["smith"])]
    # Wildcards, OR, AND NOT, phrases; the RETURNING object's own WHERE and ORDER BY.
    names = lambda q: [r["Name"] for r in sf.search(q)["searchRecords"]]  # noqa: E731
    assert names("FIND {Jo*} RETURNING Contact(Name ORDER BY LastName)") == [
        "Jane Jones",
        "John Smith",
    ]
    assert names("FIND {acme OR globex} RETURNING Account(Name ORDER BY Name DESC)") == [
        "Globex Corporation",
        "Acme Widgets",
    ]
    assert names("FIND {Jo* AND NOT Smith} RETURNING Contact(Name)") == ["Jane Jones"]
    assert names('FIND {"globex corporation"} RETURNING Account(Name)') == ["Globex Corporation"]
    assert names("FIND {corporation globex} RETURNING Account(Name)") == ["Globex Corporation"]
    assert names("FIND {Jo*} RETURNING Contact(Name WHERE LastName = 'Jones')") == ["Jane Jones"]
    # Scopes: phone digits, e-mail fields.
    phone = sf.search("FIND {4155551212} IN PHONE FIELDS RETURNING Account(Id)")
    assert [r["Id"] for r in phone["searchRecords"]] == [people["acme"]]
    email = sf.search("FIND {john@acme.example} IN EMAIL FIELDS RETURNING Contact(Email)")
    assert [r["Email"] for r in email["searchRecords"]] == ["john@acme.example"]
    assert sf.search("FIND {Smith} IN EMAIL FIELDS")["searchRecords"] == []


def test_sosl_errors(emulator: EmulatorHandle) -> None:
    sf = emulator.salesforce()
    with pytest.raises(SalesforceMalformedRequest) as short:
        sf.search("FIND {a}")
    assert short.value.content[0]["errorCode"] == "INVALID_SEARCH"
    with pytest.raises(SalesforceMalformedRequest) as unbraced:
        sf.search("FIND Acme")
    assert unbraced.value.content[0]["errorCode"] == "MALFORMED_SEARCH"
    with pytest.raises(SalesforceMalformedRequest) as bad_object:
        sf.search("FIND {Acme} RETURNING Nope__c(Id)")
    assert bad_object.value.content[0]["errorCode"] == "INVALID_TYPE"


def test_parameterized_search_get_and_post(
    emulator: EmulatorHandle, people: dict[str, str]
) -> None:
    sf = emulator.salesforce()
    got = sf.restful(
        "parameterizedSearch",
        params={"q": "Acme", "sobject": "Account", "Account.fields": "Id,Name"},
    )
    assert [(r["Id"], r["Name"]) for r in got["searchRecords"]] == [
        (people["acme"], "Acme Widgets")
    ]
    posted = sf.restful(
        "parameterizedSearch",
        method="POST",
        json={
            "q": "Jo*",
            "in": "NAME",
            "fields": ["Id", "Name"],
            "sobjects": [{"name": "Contact", "where": "LastName = 'Smith'", "limit": 5}],
        },
    )
    assert [r["Name"] for r in posted["searchRecords"]] == ["John Smith"]


# ---- FOR VIEW / FOR REFERENCE, recent --------------------------------------------------


def test_for_view_and_for_reference_feed_recent(
    emulator: EmulatorHandle, people: dict[str, str]
) -> None:
    sf = emulator.salesforce()
    before = sf.Account.get(people["acme"])
    assert sf.restful("recent") is None  # nothing viewed yet: simple-salesforce maps [] to None
    sf.query(f"SELECT Id, Name FROM Account WHERE Id = '{people['acme']}' FOR VIEW")
    time.sleep(0.01)
    sf.query(f"SELECT Id FROM Contact WHERE Id = '{people['smith']}' FOR REFERENCE")
    recent = sf.restful("recent")
    assert [(r["attributes"]["type"], r["Id"]) for r in recent] == [
        ("Contact", people["smith"]),
        ("Account", people["acme"]),
    ]
    assert recent[1]["Name"] == "Acme Widgets" and recent[0]["Name"] == "John Smith"
    after = sf.Account.get(people["acme"])
    assert after["LastViewedDate"] and before["LastViewedDate"] is None
    assert after["LastModifiedDate"] == before["LastModifiedDate"]  # viewing is no change
    assert sf.Contact.get(people["smith"])["LastReferencedDate"]
    assert len(sf.restful("recent", params={"limit": 1})) == 1
    with pytest.raises(SalesforceMalformedRequest):
        sf.query("SELECT Id FROM Account FOR UPDATE")


# ---- replication: updated / deleted ----------------------------------------------------


def test_updated_and_deleted_through_simple_salesforce(
    emulator: EmulatorHandle, people: dict[str, str]
) -> None:
    sf = emulator.salesforce()
    sf.Account.delete(people["globex"])
    start = datetime.now(UTC) - timedelta(minutes=5)
    end = datetime.now(UTC) + timedelta(minutes=2)
    updated = sf.Account.updated(start, end)
    assert set(updated["ids"]) == {people["acme"]}  # the deleted one is no longer "updated"
    assert updated["latestDateCovered"].endswith("+0000")
    deleted = sf.Account.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [people["globex"]]
    assert deleted["deletedRecords"][0]["deletedDate"] <= deleted["latestDateCovered"]
    assert deleted["earliestDateAvailable"] <= deleted["deletedRecords"][0]["deletedDate"]
    # A window that ended before the changes reports nothing.
    assert sf.Account.updated(start - timedelta(hours=1), start)["ids"] == []
    with pytest.raises(SalesforceMalformedRequest) as too_old:
        sf.Account.updated(start - timedelta(days=31), end)
    assert too_old.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    with pytest.raises(SalesforceMalformedRequest):
        sf.Account.deleted(end, start)


# ---- tabs, theme, list views -----------------------------------------------------------


def test_tabs_theme_and_list_views(emulator: EmulatorHandle, people: dict[str, str]) -> None:
    sf = emulator.salesforce()
    tabs = {t["name"]: t for t in sf.restful("tabs")}
    assert tabs["standard-Account"]["sobjectName"] == "Account"
    assert tabs["standard-Account"]["url"] == f"{emulator.instance_url}/001/o"
    assert {"standard-Contact", "standard-Task", "standard-Event"} <= set(tabs)
    themes = {t["name"] for t in sf.restful("theme")["themeItems"]}
    assert {"Account", "Contact"} <= themes

    views = sf.restful("sobjects/Account/listviews")
    assert views["sobjectType"] == "Account" and views["size"] == len(views["listviews"])
    by_name = {v["developerName"]: v for v in views["listviews"]}
    every = by_name["AllAccounts"]
    assert every["label"] == "All Accounts" and every["id"].startswith("00B")
    described = sf.restful(f"sobjects/Account/listviews/{every['id']}/describe")
    assert described["query"].startswith("SELECT Name,") and "FROM Account" in described["query"]
    results = sf.restful(f"sobjects/Account/listviews/{every['id']}/results")
    rows = [{c["fieldNameOrPath"]: c["value"] for c in r["columns"]} for r in results["records"]]
    assert [row["Name"] for row in rows] == ["Acme Widgets", "Globex Corporation"]
    assert {row["Id"] for row in rows} == {people["acme"], people["globex"]}
    assert (
        sf.restful(f"sobjects/Account/listviews/{every['id']}/results", params={"limit": 1})["size"]
        == 1
    )
    assert "RecentlyViewedAccounts" in by_name and "MyAccounts" in by_name


# ---- query plans ------------------------------------------------------------------------


def test_query_explain(emulator: EmulatorHandle, people: dict[str, str]) -> None:
    sf = emulator.salesforce()
    plan = sf.restful(
        "query",
        params={
            "explain": f"SELECT Id FROM Contact WHERE AccountId = '{people['acme']}' AND Title = 'x'"
        },
    )
    kinds = {p["leadingOperationType"]: p for p in plan["plans"]}
    assert kinds["Index"]["fields"] == ["AccountId"] and kinds["Index"]["sobjectType"] == "Contact"
    assert kinds["TableScan"]["sobjectCardinality"] == 2
    assert plan["plans"][0]["relativeCost"] <= plan["plans"][-1]["relativeCost"]
    notes = [n for p in plan["plans"] for n in p["notes"]]
    assert any("Title" in n["fields"] for n in notes)
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("query", params={"explain": "SELECT FROM"})


# ---- quick actions ----------------------------------------------------------------------


def test_quick_actions_create_records(emulator: EmulatorHandle, people: dict[str, str]) -> None:
    sf = emulator.salesforce()
    actions = {a["name"]: a for a in sf.restful("sobjects/Account/quickActions")}
    assert {"NewContact", "NewOpportunity", "NewCase", "LogACall", "NewTask"} <= set(actions)
    described = sf.restful("sobjects/Account/quickActions/NewContact/describe")
    assert (described["targetSobjectType"], described["targetParentField"]) == (
        "Contact",
        "AccountId",
    )
    made = sf.restful(
        "sobjects/Account/quickActions/NewContact",
        method="POST",
        json={"contextId": people["acme"], "record": {"LastName": "Brown"}},
    )
    assert made["success"] and made["created"] and made["contextId"] == people["acme"]
    assert sf.Contact.get(made["id"])["AccountId"] == people["acme"]

    call = sf.restful(
        "sobjects/Account/quickActions/LogACall",
        method="POST",
        json={"contextId": people["acme"], "record": {"Subject": "Called about renewal"}},
    )
    task = sf.Task.get(call["id"])
    assert (task["WhatId"], task["AccountId"], task["Status"], task["IsClosed"]) == (
        people["acme"],
        people["acme"],
        "Completed",
        True,
    )
    assert task["TaskSubtype"] == "Call" and task["CompletedDateTime"]

    global_names = {a["name"] for a in sf.restful("quickActions")}
    assert {"NewAccount", "NewLead", "LogACall"} <= global_names
    lead = sf.restful(
        "quickActions/NewLead",
        method="POST",
        json={"record": {"LastName": "Lee", "Company": "Initech"}},
    )
    assert sf.Lead.get(lead["id"])["Company"] == "Initech"
    with pytest.raises(SalesforceMalformedRequest) as missing:
        sf.restful("quickActions/NewLead", method="POST", json={"record": {"LastName": "Lee"}})
    assert missing.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("sobjects/Account/quickActions/Nope")


# ---- Task, Event, describes --------------------------------------------------------------


def test_tasks_and_events_are_built_in(emulator: EmulatorHandle, people: dict[str, str]) -> None:
    sf = emulator.salesforce()
    task = sf.Task.create({"Subject": "Follow up", "WhoId": people["smith"]})
    saved = sf.Task.get(task["id"])
    # Defaults and what the org derives: AccountId from the Contact in WhoId.
    assert (saved["Status"], saved["Priority"], saved["IsClosed"]) == (
        "Not Started",
        "Normal",
        False,
    )
    assert saved["AccountId"] == people["acme"] and saved["OwnerId"].startswith("005")
    with pytest.raises(SalesforceMalformedRequest) as wrong_who:
        sf.Task.create({"Subject": "x", "WhoId": people["acme"]})  # an Account is no Who
    assert wrong_who.value.content[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"

    with pytest.raises(SalesforceMalformedRequest) as no_time:
        sf.Event.create({"Subject": "Meeting", "WhatId": people["globex"]})
    assert no_time.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    event = sf.Event.create(
        {
            "Subject": "Meeting",
            "WhatId": people["globex"],
            "ActivityDateTime": "2030-01-02T10:00:00Z",
            "DurationInMinutes": 90,
        }
    )
    saved_event = sf.Event.get(event["id"])
    assert saved_event["EndDateTime"] == "2030-01-02T11:30:00.000+0000"
    assert (saved_event["ActivityDate"], saved_event["AccountId"]) == (
        "2030-01-02",
        people["globex"],
    )
    children = sf.query(
        f"SELECT Id, (SELECT Subject FROM Tasks), (SELECT Subject FROM Events) FROM Account "
        f"WHERE Id = '{people['globex']}'"
    )["records"][0]
    assert children["Tasks"] is None and children["Events"]["records"][0]["Subject"] == "Meeting"


def test_account_describe_has_recorded_fields_and_child_relationships(
    emulator: EmulatorHandle,
) -> None:
    describe = emulator.salesforce().Account.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    for name in (
        "Jigsaw",
        "SicDesc",
        "DunsNumber",
        "NaicsCode",
        "Tradestyle",
        "BillingGeocodeAccuracy",
    ):
        assert fields[name]["createable"], name
    assert not fields["JigsawCompanyId"]["createable"]
    children = {(c["childSObject"], c["field"]): c for c in describe["childRelationships"]}
    assert children[("Contact", "AccountId")]["relationshipName"] == "Contacts"
    assert children[("Contact", "AccountId")]["cascadeDelete"] is True
    assert children[("Task", "WhatId")]["relationshipName"] == "Tasks"
    assert children[("Event", "WhatId")]["relationshipName"] == "Events"
    assert children[("Account", "ParentId")]["relationshipName"] == "ChildAccounts"
    assert children[("Case", "AccountId")]["relationshipName"] == "Cases"
    task = {f["name"]: f for f in emulator.salesforce().Task.describe()["fields"]}
    assert (
        task["WhoId"]["referenceTo"] == ["Contact", "Lead"]
        and task["WhoId"]["polymorphicForeignKey"]
    )
    assert "Opportunity" in task["WhatId"]["referenceTo"]


# ---- fixes: Bulk empty uploads, upsert on Id, rollback `created`, limits ----------------


def _bulk(emulator: EmulatorHandle, body: dict[str, Any], csv: bytes | None) -> dict[str, Any]:
    base = data_url(emulator, "jobs/ingest")
    job = emulator.http.post(base, json=body, timeout=10).json()
    if csv is not None:
        r = emulator.http.put(
            f"{base}/{job['id']}/batches",
            data=csv,
            headers={"Content-Type": "text/csv"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
    emulator.http.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, timeout=10)
    deadline = time.monotonic() + 20
    while True:
        info = emulator.http.get(f"{base}/{job['id']}", timeout=10).json()
        if info["state"] in ("JobComplete", "Failed", "Aborted") or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


@pytest.mark.parametrize("csv", [None, b"", b"Name\n"], ids=["no-upload", "empty", "header-only"])
def test_empty_bulk_upload_completes_with_nothing_processed(
    emulator: EmulatorHandle, csv: bytes | None
) -> None:
    info = _bulk(emulator, {"object": "Account", "operation": "insert"}, csv)
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (
        "JobComplete",
        0,
        0,
    )
    assert "errorMessage" not in info


def test_bulk_upsert_on_id_without_an_id_column_inserts(emulator: EmulatorHandle) -> None:
    body = {"object": "Account", "operation": "upsert", "externalIdFieldName": "Id"}
    info = _bulk(emulator, body, b"Name\nFirst\nSecond\n")
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (
        "JobComplete",
        2,
        0,
    )
    r = emulator.http.get(data_url(emulator, f"jobs/ingest/{info['id']}/successfulResults"))
    assert r.text.count('"true"') == 2  # sf__Created
    assert sorted(a["Name"] for a in emulator.records("Account")) == ["First", "Second"]


def test_rolled_back_upsert_items_carry_created(emulator: EmulatorHandle) -> None:
    r = emulator.http.patch(
        data_url(emulator, "composite/sobjects/Account/External_Id__c"),
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Account"}, "External_Id__c": "A-1", "Name": "Fine"},
                {"attributes": {"type": "Account"}, "External_Id__c": "A-2"},  # no Name
            ],
        },
        timeout=10,
    )
    first, second = r.json()
    assert first["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert first["created"] is False and first["success"] is False
    assert second["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert emulator.records("Account") == []


def test_limits_never_report_negative_storage(emulator: EmulatorHandle) -> None:
    records = [{"attributes": {"type": "Account"}, "Name": f"A{i}"} for i in range(200)]
    for _ in range(20):  # 4,000 records: ~8 MB at 2 KB each, over a Developer org's 5 MB
        r = emulator.http.post(
            data_url(emulator, "composite/sobjects"), json={"records": records}, timeout=30
        )
        assert r.status_code == 200
    storage = emulator.salesforce().limits()["DataStorageMB"]
    assert storage["Max"] == 5 and storage["Remaining"] == 0
