"""sObject Collections on the emulator over real HTTPS: what a client sees, item by item."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from sf_activation_tests.support.emulator import EmulatorHandle

V = "62.0"


def url(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def records(type_: str, *rows: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"attributes": {"type": type_}, **row} for row in rows]


def create(
    http: requests.Session,
    emu: EmulatorHandle,
    rows: list[dict[str, Any]],
    all_or_none: bool = False,
) -> list[dict[str, Any]]:
    r = http.post(url(emu, "composite/sobjects"), json={"allOrNone": all_or_none, "records": rows})
    assert r.status_code == 200, r.text
    return r.json()


def upsert(
    http: requests.Session,
    emu: EmulatorHandle,
    obj: str,
    field: str,
    rows: list[dict[str, Any]],
    all_or_none: bool = False,
) -> list[dict[str, Any]]:
    r = http.patch(
        url(emu, f"composite/sobjects/{obj}/{field}"),
        json={"allOrNone": all_or_none, "records": records(obj, *rows)},
    )
    assert r.status_code == 200, r.text
    return r.json()


def only_error(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"] is False and "id" not in result, result
    assert len(result["errors"]) == 1
    return result["errors"][0]


def widget(key: str, **extra: Any) -> dict[str, Any]:
    return {"Name": f"Widget {key}", "Widget_Key__c": key, **extra}


# ---- create / update / upsert / delete --------------------------------------------------


def test_create_mixed_types_in_request_order_with_real_ids(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    rows = records("Account", {"Name": "Acme"}, {"Name": "Globex"})
    rows += records("Contact", {"LastName": "Smith"})
    rows += records("Widget__c", widget("W-1"))
    results = create(http, emu, rows)
    assert [r["success"] for r in results] == [True] * 4
    assert all(r["errors"] == [] for r in results)
    prefixes = [r["id"][:3] for r in results]
    assert prefixes == ["001", "001", "003", "a01"]
    assert all(len(r["id"]) == 18 for r in results)
    stored = emu.records("Account")
    assert sorted(a["Name"] for a in stored) == ["Acme", "Globex"]
    for record in stored:
        assert record["IsDeleted"] is False
        assert record["CreatedDate"].endswith("+0000")
        assert record["OwnerId"].startswith("005")
        assert record["SystemModstamp"] == record["LastModifiedDate"]


def test_update_changes_fields_and_keeps_the_rest(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    ids = [r["id"] for r in create(http, emu, records("Account", {"Name": "A", "Phone": "1"}))]
    r = http.patch(
        url(emu, "composite/sobjects"),
        json={"allOrNone": False, "records": records("Account", {"id": ids[0], "Name": "B"})},
    )
    assert r.status_code == 200
    assert r.json() == [{"id": ids[0], "success": True, "errors": []}]
    (stored,) = emu.records("Account")
    assert (stored["Name"], stored["Phone"]) == ("B", "1")


def test_update_id_errors(emu: EmulatorHandle, http: requests.Session) -> None:
    (contact,) = create(http, emu, records("Contact", {"LastName": "C"}))
    (account,) = create(http, emu, records("Account", {"Name": "A"}))
    http.delete(url(emu, f"composite/sobjects?ids={account['id']}"))
    rows = records(
        "Account",
        {"Name": "no id"},
        {"Id": "not-an-id", "Name": "x"},
        {"Id": contact["id"], "Name": "wrong object"},
        {"Id": account["id"], "Name": "deleted"},
        {"Id": "001000000000001AAA", "Name": "never existed"},
    )
    r = http.patch(url(emu, "composite/sobjects"), json={"records": rows})
    errors = [only_error(item) for item in r.json()]
    assert errors[0] == {
        "statusCode": "MISSING_ARGUMENT",
        "message": "Id not specified in an update call",
        "fields": [],
    }
    assert errors[1]["statusCode"] == "MALFORMED_ID"
    assert errors[1]["message"] == "Account ID: id value of incorrect type: not-an-id"
    assert errors[1]["fields"] == ["Id"]
    assert errors[2]["statusCode"] == "MALFORMED_ID"
    assert errors[3] == {
        "statusCode": "ENTITY_IS_DELETED",
        "message": "entity is deleted",
        "fields": [],
    }
    assert errors[4]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_upsert_creates_then_updates_case_insensitively(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    first = upsert(
        http, emu, "Account", "External_Id__c", [{"Name": "A", "External_Id__c": "ext-1"}]
    )
    assert first[0]["success"] and first[0]["created"] is True
    again = upsert(
        http, emu, "Account", "External_Id__c", [{"Name": "B", "External_Id__c": "EXT-1"}]
    )
    assert again == [{"id": first[0]["id"], "success": True, "errors": [], "created": False}]
    (stored,) = emu.records("Account")
    assert stored["Name"] == "B"


def test_upsert_duplicates(emu: EmulatorHandle, http: requests.Session) -> None:
    # Twice the same key in one request: both refused, as Salesforce does.
    results = upsert(
        http, emu, "Widget__c", "Widget_Key__c", [widget("K-1"), widget("k-1"), widget("K-2")]
    )
    for item in results[:2]:
        error = only_error(item)
        assert error["statusCode"] == "DUPLICATE_EXTERNAL_ID"
        assert error["message"].startswith("Duplicate external id specified: ")
    assert results[2]["created"] is True
    # A non-unique external id held by two records: the upsert cannot choose.
    create(
        http,
        emu,
        records("Widget__c", widget("A", Legacy_Code__c="L"), widget("B", Legacy_Code__c="L")),
    )
    (item,) = upsert(
        http, emu, "Widget__c", "Legacy_Code__c", [{"Name": "x", "Legacy_Code__c": "L"}]
    )
    error = only_error(item)
    assert error["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    assert "more than one record found for external id field" in error["message"]


def test_upsert_by_id_and_bad_external_id_fields(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    (created,) = upsert(http, emu, "Account", "Id", [{"Name": "new"}])
    assert created["created"] is True
    (updated,) = upsert(http, emu, "Account", "Id", [{"Id": created["id"], "Name": "renamed"}])
    assert updated == {"id": created["id"], "success": True, "errors": [], "created": False}
    r = http.patch(url(emu, "composite/sobjects/Account/Nope__c"), json={"records": []})
    assert r.status_code == 404
    assert r.json()[0]["errorCode"] == "NOT_FOUND"
    r = http.patch(url(emu, "composite/sobjects/Account/Phone"), json={"records": []})
    assert r.status_code == 400
    assert r.json()[0]["errorCode"] == "INVALID_FIELD"
    (missing,) = upsert(http, emu, "Account", "External_Id__c", [{"Name": "no key"}])
    assert only_error(missing)["statusCode"] == "MISSING_ARGUMENT"


def test_delete_soft_then_entity_is_deleted(emu: EmulatorHandle, http: requests.Session) -> None:
    a, c = create(
        http, emu, records("Account", {"Name": "A"}) + records("Contact", {"LastName": "L"})
    )
    r = http.delete(url(emu, f"composite/sobjects?ids={a['id']},{c['id']},bogus&allOrNone=false"))
    assert r.status_code == 200
    first, second, third = r.json()
    assert first == {"id": a["id"], "success": True, "errors": []}
    assert second == {"id": c["id"], "success": True, "errors": []}
    assert only_error(third) == {
        "statusCode": "MALFORMED_ID",
        "message": "malformed id bogus",
        "fields": [],
    }
    assert emu.records("Account") == [] and emu.records("Contact") == []
    (again,) = http.delete(url(emu, f"composite/sobjects?ids={a['id']}")).json()
    assert only_error(again)["statusCode"] == "ENTITY_IS_DELETED"


def test_all_or_none_rolls_back_everything(emu: EmulatorHandle, http: requests.Session) -> None:
    rows = records("Account", {"Name": "ok 1"}, {"Phone": "no name"}, {"Name": "ok 2"})
    results = create(http, emu, rows, all_or_none=True)
    assert only_error(results[1])["statusCode"] == "REQUIRED_FIELD_MISSING"
    for item in (results[0], results[2]):
        assert only_error(item) == {
            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "message": "Record rolled back because not all records were valid and the request "
            "was using AllOrNone header",
            "fields": [],
        }
    assert emu.records("Account") == []
    # Without allOrNone the good ones stay.
    results = create(http, emu, rows, all_or_none=False)
    assert [r["success"] for r in results] == [True, False, True]
    assert len(emu.records("Account")) == 2


def test_all_or_none_rolls_back_updates_upserts_and_deletes(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    (kept,) = create(http, emu, records("Widget__c", widget("KEEP", Units__c=1)))
    results = upsert(
        http,
        emu,
        "Widget__c",
        "Widget_Key__c",
        [widget("KEEP", Units__c=2), widget("NEW"), widget("BAD", Units__c="many")],
        all_or_none=True,
    )
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
    ]
    (stored,) = emu.records("Widget__c")
    assert stored["Units__c"] == 1 and stored["Id"] == kept["id"]
    r = http.delete(
        url(emu, f"composite/sobjects?ids={kept['id']},001000000000001AAA&allOrNone=true")
    )
    first, second = r.json()
    assert only_error(first)["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert only_error(second)["statusCode"] == "ENTITY_IS_DELETED"
    assert len(emu.records("Widget__c")) == 1


def test_more_than_200_records_is_refused_whole(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    rows = records("Account", *({"Name": f"A{i}"} for i in range(201)))
    for method, path in (
        ("post", "composite/sobjects"),
        ("patch", "composite/sobjects/Account/Id"),
    ):
        r = getattr(http, method)(url(emu, path), json={"records": rows})
        assert r.status_code == 400
        assert r.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    ids = ",".join(["001000000000001AAA"] * 201)
    r = http.delete(url(emu, f"composite/sobjects?ids={ids}"))
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert emu.records("Account") == []
    assert len(create(http, emu, rows[:200])) == 200


def test_lookups_by_parent_external_id(emu: EmulatorHandle, http: requests.Session) -> None:
    (parent,) = upsert(
        http, emu, "Account", "External_Id__c", [{"Name": "P", "External_Id__c": "A-17"}]
    )
    results = create(
        http,
        emu,
        records(
            "Contact",
            {"LastName": "child", "Account": {"External_Id__c": "a-17"}},
            {"LastName": "orphan", "Account": {"External_Id__c": "A-404"}},
            {
                "LastName": "typed",
                "Account": {"attributes": {"type": "Account"}, "External_Id__c": "A-17"},
            },
        ),
    )
    assert results[0]["success"] and results[2]["success"]
    assert only_error(results[1]) == {
        "statusCode": "INVALID_FIELD",
        "message": "Foreign key external ID: A-404 not found for field External_Id__c in entity Account",
        "fields": [],
    }
    contacts = {c["LastName"]: c for c in emu.records("Contact")}
    assert contacts["child"]["AccountId"] == parent["id"]
    # A custom relationship (`__r`) in an upsert, and a lookup that clears the field.
    (w,) = upsert(
        http,
        emu,
        "Widget__c",
        "Widget_Key__c",
        [widget("W", Account__r={"External_Id__c": "A-17"})],
    )
    assert w["success"], w
    (stored,) = emu.records("Widget__c")
    assert stored["Account__c"] == parent["id"]


def test_reference_fields_by_id(emu: EmulatorHandle, http: requests.Session) -> None:
    (account,) = create(http, emu, records("Account", {"Name": "A"}))
    (contact,) = create(http, emu, records("Contact", {"LastName": "C"}))
    rows = records(
        "Contact",
        {"LastName": "ok", "AccountId": account["id"][:15]},
        {"LastName": "bad", "AccountId": "xyz"},
        {"LastName": "wrong type", "AccountId": contact["id"]},
        {"LastName": "missing", "AccountId": "001000000000001AAA"},
    )
    ok, bad, wrong, missing = create(http, emu, rows)
    assert ok["success"]
    stored = [c for c in emu.records("Contact") if c["LastName"] == "ok"][0]
    assert stored["AccountId"] == account["id"]  # 15-character ids come back as 18
    assert only_error(bad) == {
        "statusCode": "MALFORMED_ID",
        "message": "Account ID: id value of incorrect type: xyz",
        "fields": ["AccountId"],
    }
    assert only_error(wrong)["statusCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert only_error(missing) == {
        "statusCode": "INVALID_CROSS_REFERENCE_KEY",
        "message": "invalid cross reference id",
        "fields": ["AccountId"],
    }


# ---- validation from describe --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "code", "message", "fields"),
    [
        (
            {"Units__c": "abc"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Units: value not of required type: abc",
            ["Units__c"],
        ),
        (
            {"Units__c": 1.5},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Units: value not of required type: 1.5",
            ["Units__c"],
        ),
        (
            {"Units__c": 12345},
            "NUMBER_OUTSIDE_VALID_RANGE",
            "Units: value outside of valid range on numeric field: 12345",
            ["Units__c"],
        ),
        (
            {"Quantity__c": "lots"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Quantity: value not of required type: lots",
            ["Quantity__c"],
        ),
        (
            {"Price__c": "1,5"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Price: value not of required type: 1,5",
            ["Price__c"],
        ),
        (
            {"Price__c": 1234567.0},
            "NUMBER_OUTSIDE_VALID_RANGE",
            "Price: value outside of valid range on numeric field: 1234567.0",
            ["Price__c"],
        ),
        (
            {"Discount__c": True},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Discount: value not of required type: True",
            ["Discount__c"],
        ),
        (
            {"Active__c": "yes"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Active: value not of required type: yes",
            ["Active__c"],
        ),
        (
            {"Ship_Date__c": "2024-13-01"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Ship Date: value not of required type: 2024-13-01",
            ["Ship_Date__c"],
        ),
        (
            {"Shipped_At__c": "yesterday"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "Shipped At: value not of required type: yesterday",
            ["Shipped_At__c"],
        ),
        (
            {"Contact_Email__c": "nobody"},
            "INVALID_EMAIL_ADDRESS",
            "Contact Email: invalid email address: nobody",
            ["Contact_Email__c"],
        ),
        (
            {"Account__c": "0011"},
            "MALFORMED_ID",
            "Account: id value of incorrect type: 0011",
            ["Account__c"],
        ),
        (
            {"Name": "x" * 81},
            "STRING_TOO_LONG",
            f"Widget Name: data value too large: {'x' * 81} (max length=80)",
            ["Name"],
        ),
        (
            {"Color__c": "Purple"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "Color: bad value for restricted picklist field: Purple",
            ["Color__c"],
        ),
        (
            {"Tags__c": "new;old"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "Tags: bad value for restricted picklist field: old",
            ["Tags__c"],
        ),
        ({"Computed__c": "x"}, "INVALID_FIELD_FOR_INSERT_UPDATE", None, ["Computed__c"]),
        (
            {"CreatedDate": "2024-01-01T00:00:00Z"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            None,
            ["CreatedDate"],
        ),
        ({"Name": None}, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"]),
        (
            {"Id": "a01000000000001AAA"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "cannot specify Id in an insert call",
            [],
        ),
        (
            {"Parent_Widget__r": {"Name": "x"}},
            "INVALID_FIELD",
            "Field Name is not an External ID or indexed field for Widget__c",
            ["Parent_Widget__c"],
        ),
    ],
)
def test_create_validation_errors(
    emu: EmulatorHandle,
    http: requests.Session,
    values: dict[str, Any],
    code: str,
    message: str | None,
    fields: list[str],
) -> None:
    (item,) = create(http, emu, records("Widget__c", {"Name": "W", **values}))
    error = only_error(item)
    assert error["statusCode"] == code
    if message is not None:
        assert error["message"] == message
    else:
        assert error["message"].startswith("Unable to create/update fields: ")
    assert error["fields"] == fields
    assert emu.records("Widget__c") == []


def test_accepted_values_are_stored_canonically(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    row = widget(
        "CANON",
        Units__c="12",
        Quantity__c=3,
        Price__c="19.999",
        Discount__c=12.5,
        Active__c="true",
        Ship_Date__c="2024-02-29",
        Shipped_At__c="2024-02-29T23:30:00+02:00",
        Contact_Email__c="a.b@example.com",
        Color__c="Red",
        Size__c="XL",  # unrestricted picklist: any value
        Tags__c="new;sale",
    )
    (item,) = create(http, emu, records("Widget__c", row))
    assert item["success"], item
    (stored,) = emu.records("Widget__c")
    assert stored["Units__c"] == 12
    assert stored["Quantity__c"] == 3.0
    assert stored["Price__c"] == 20.0
    assert stored["Active__c"] is True
    assert stored["Ship_Date__c"] == "2024-02-29"
    assert stored["Shipped_At__c"] == "2024-02-29T21:30:00.000+0000"
    assert stored["Size__c"] == "XL"


def test_required_fields_and_update_rules(emu: EmulatorHandle, http: requests.Session) -> None:
    (item,) = create(http, emu, records("Opportunity", {"Amount": 5}))
    error = only_error(item)
    assert error["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert error["fields"] == ["Name", "StageName", "CloseDate"]
    assert error["message"] == "Required fields are missing: [Name, StageName, CloseDate]"
    (w,) = create(http, emu, records("Widget__c", widget("U", Locked_On_Update__c="set once")))
    rows = records(
        "Widget__c",
        {"Id": w["id"], "Locked_On_Update__c": "changed"},
        {"Id": w["id"], "Name": None},
        {"Id": w["id"], "Size__c": None, "Active__c": None},
    )
    locked, cleared, nulls = http.patch(
        url(emu, "composite/sobjects"), json={"records": rows}
    ).json()
    assert only_error(locked)["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert only_error(cleared)["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert nulls["success"]
    (stored,) = emu.records("Widget__c")
    assert stored["Size__c"] is None and stored["Active__c"] is False


def test_duplicate_value_on_unique_fields(emu: EmulatorHandle, http: requests.Session) -> None:
    first, second = create(
        http,
        emu,
        records("Widget__c", widget("D-1", Serial__c="SN"), widget("D-2", Serial__c="sn")),
    )
    assert first["success"] and second["success"]  # Serial__c is case-sensitive
    (dup,) = create(http, emu, records("Widget__c", widget("d-1")))
    error = only_error(dup)
    assert error["statusCode"] == "DUPLICATE_VALUE"
    assert error["message"] == (
        f"duplicate value found: Widget_Key__c duplicates value on record with id: {first['id']}"
    )
    (dup,) = create(http, emu, records("Widget__c", widget("D-3", Serial__c="SN")))
    assert only_error(dup)["statusCode"] == "DUPLICATE_VALUE"


# ---- whole-request errors ---------------------------------------------------------------------


def test_whole_request_errors(emu: EmulatorHandle, http: requests.Session) -> None:
    cases = [
        (records("Nope__c", {"Name": "x"}), 400, "INVALID_TYPE"),
        ([{"Name": "no attributes"}], 400, "INVALID_TYPE"),
        (records("Account", {"Name": "x", "Bogus__c": 1}), 400, "INVALID_FIELD"),
    ]
    for rows, status, code in cases:
        r = http.post(url(emu, "composite/sobjects"), json={"records": rows})
        assert (r.status_code, r.json()[0]["errorCode"]) == (status, code), r.text
    r = http.post(
        url(emu, "composite/sobjects"),
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    r = http.post(
        url(emu, "composite/sobjects"),
        data=b"<records/>",
        headers={"Content-Type": "application/xml"},
    )
    assert r.status_code == 415 and r.json()[0]["errorCode"] == "UNSUPPORTED_MEDIA_TYPE"
    r = http.post(url(emu, "composite/sobjects"), json=[1, 2])
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    r = http.post(url(emu, "composite/sobjects"), json={"records": "nope"})
    assert r.status_code == 400
    r = http.patch(url(emu, "composite/sobjects/Nope__c/Id"), json={"records": []})
    assert r.status_code == 404 and r.json()[0]["errorCode"] == "NOT_FOUND"
    assert emu.records("Account") == []
    # Still serving.
    assert create(http, emu, records("Account", {"Name": "after"}))[0]["success"]


def test_retrieve_by_ids(emu: EmulatorHandle, http: requests.Session) -> None:
    a, b = create(http, emu, records("Account", {"Name": "A"}, {"Name": "B"}))
    r = http.get(
        url(emu, "composite/sobjects/Account"),
        params={"ids": f"{a['id']},{b['id']},001000000000001AAA", "fields": "Id,Name"},
    )
    assert r.status_code == 200
    first, second, third = r.json()
    assert (first["Name"], second["Name"], third) == ("A", "B", None)
    assert first["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v{V}/sobjects/Account/{a['id']}",
    }


def test_simple_salesforce_restful_collections(emu: EmulatorHandle) -> None:
    sf = emu.salesforce(V)
    body = {"allOrNone": False, "records": records("Account", {"Name": "via simple-salesforce"})}
    (result,) = sf.restful("composite/sobjects", method="POST", json=body)
    assert result["success"] is True
    assert (
        emu.stats()["requests_by_route"]["POST /services/data/v{version}/composite/sobjects"] == 1
    )
