"""Value rules of a real org, on the emulator over real HTTPS.

Numbers keep 18 digits exactly and round half up at the field's scale; NUL characters
are dropped from saved text; a 15-character Id works wherever an Id does and comes back
in its 18-character form; dates outside 1700-4000 are refused.
"""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from sf_activation.emulator import ids
from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

V = "62.0"
TERMINAL = ("JobComplete", "Failed", "Aborted")


def url(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def post_raw(http: requests.Session, target: str, body: str, method: str = "POST") -> Any:
    """Send a JSON body as written (so a literal's every digit reaches the server)."""
    r = http.request(
        method, target, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code in (200, 201, 204), r.text
    return r.json() if r.content else None


def exact(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def query(http: requests.Session, emu: EmulatorHandle, soql: str) -> tuple[str, list[dict]]:
    """The raw response text and its records, numbers parsed as exact decimals."""
    r = http.get(url(emu, "query"), params={"q": soql})
    assert r.status_code == 200, r.text
    return r.text, exact(r.text)["records"]


def create(http: requests.Session, emu: EmulatorHandle, *rows: dict[str, Any]) -> list[dict]:
    r = http.post(url(emu, "composite/sobjects"), json={"allOrNone": False, "records": rows})
    assert r.status_code == 200, r.text
    return r.json()


def only_error(result: dict[str, Any]) -> dict[str, Any]:
    assert result["success"] is False, result
    assert len(result["errors"]) == 1, result
    return result["errors"][0]


def widget(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "attributes": {"type": "Widget__c"},
        "Name": f"Widget {key}",
        "Widget_Key__c": key,
        **extra,
    }


def bulk(
    http: requests.Session, emu: EmulatorHandle, data: str, **job: Any
) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    """Run one Bulk API 2.0 ingest job: (final info, successful rows, failed rows)."""
    base = url(emu, "jobs/ingest")
    r = http.post(base, json={"object": "Account", "operation": "insert", **job})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    r = http.put(
        f"{base}/{job_id}/batches", data=data.encode(), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 201, r.text
    r = http.patch(f"{base}/{job_id}", json={"state": "UploadComplete"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while True:
        info = http.get(f"{base}/{job_id}").json()
        if info["state"] in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert info["state"] == "JobComplete", info

    def rows(kind: str) -> list[dict[str, str]]:
        r = http.get(f"{base}/{job_id}/{kind}/")
        assert r.status_code == 200, r.text
        return list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))

    return info, rows("successfulResults"), rows("failedResults")


# ---- exact numbers ---------------------------------------------------------------------

# AnnualRevenue is Currency(18, 0), Amount Currency(18, 2), BillingLatitude Number(18, 15).
BIG = "123456789012345678"
PAST_FLOAT = "9007199254740993"  # 2**53 + 1: a float64 reads it as ...992
CENTS = "1234567890123456.78"  # a float64 reads it as ...456.8
LATITUDE = "12.123456789012345"


def test_eighteen_digits_through_collections_are_stored_and_queried_exactly(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    body = (
        '{"allOrNone":false,"records":['
        f'{{"attributes":{{"type":"Account"}},"Name":"Big","AnnualRevenue":{BIG},'
        f'"BillingLatitude":{LATITUDE}}},'
        f'{{"attributes":{{"type":"Account"}},"Name":"Past float","AnnualRevenue":{PAST_FLOAT}}}'
        "]}"
    )
    results = post_raw(http, url(emu, "composite/sobjects"), body)
    assert [r["success"] for r in results] == [True, True], results
    account_id = results[0]["id"]
    opp = (
        '{"allOrNone":false,"records":[{"attributes":{"type":"Opportunity"},"Name":"Deal",'
        f'"StageName":"Prospecting","CloseDate":"2030-01-01","AccountId":"{account_id}",'
        f'"Amount":{CENTS}}}]}}'
    )
    assert post_raw(http, url(emu, "composite/sobjects"), opp)[0]["success"]

    text, records = query(
        http, emu, "SELECT Name, AnnualRevenue, BillingLatitude FROM Account ORDER BY Name"
    )
    # JSON number literals, every digit: not strings, not rounded floats.
    assert f'"AnnualRevenue":{BIG}' in text
    assert f'"AnnualRevenue":{PAST_FLOAT}' in text
    assert f'"BillingLatitude":{LATITUDE}' in text
    assert [r["AnnualRevenue"] for r in records] == [Decimal(BIG), Decimal(PAST_FLOAT)]
    assert records[0]["BillingLatitude"] == Decimal(LATITUDE)

    text, records = query(http, emu, "SELECT Amount FROM Opportunity")
    assert f'"Amount":{CENTS}' in text
    assert records[0]["Amount"] == Decimal(CENTS)

    # The single-record read and the Collections retrieve say the same.
    r = http.get(url(emu, f"sobjects/Account/{account_id}"))
    assert exact(r.text)["AnnualRevenue"] == Decimal(BIG)
    r = http.get(
        url(emu, "composite/sobjects/Account"),
        params={"ids": account_id, "fields": "AnnualRevenue"},
    )
    assert exact(r.text)[0]["AnnualRevenue"] == Decimal(BIG)


def test_eighteen_digits_through_single_record_calls_and_collection_updates(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    created = post_raw(
        http, url(emu, "sobjects/Account"), f'{{"Name":"One","AnnualRevenue":{PAST_FLOAT}}}'
    )
    rid = created["id"]
    _, records = query(http, emu, "SELECT AnnualRevenue FROM Account")
    assert records[0]["AnnualRevenue"] == Decimal(PAST_FLOAT)

    post_raw(
        http,
        url(emu, f"sobjects/Account/{rid}"),
        '{"AnnualRevenue":123456789012345679}',
        method="PATCH",
    )
    _, records = query(http, emu, "SELECT AnnualRevenue FROM Account")
    assert records[0]["AnnualRevenue"] == Decimal("123456789012345679")

    # The last digit changes: a float64 could not tell these apart.
    body = (
        '{"allOrNone":false,"records":[{"attributes":{"type":"Account"},'
        f'"Id":"{rid}","AnnualRevenue":9007199254740995}}]}}'
    )
    assert post_raw(http, url(emu, "composite/sobjects"), body, method="PATCH")[0]["success"]
    body = (
        '{"allOrNone":false,"records":[{"attributes":{"type":"Widget__c"},"Name":"W",'
        '"Widget_Key__c":"W-1","Quantity__c":999999999999999999}]}'
    )
    assert post_raw(
        http, url(emu, "composite/sobjects/Widget__c/Widget_Key__c"), body, method="PATCH"
    )[0]["success"]
    text, records = query(http, emu, "SELECT AnnualRevenue FROM Account")
    assert records[0]["AnnualRevenue"] == Decimal("9007199254740995")
    text, records = query(http, emu, "SELECT Quantity__c FROM Widget__c")
    assert '"Quantity__c":999999999999999999' in text


def test_eighteen_digits_through_bulk_are_stored_and_queried_exactly(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    data = (
        "Name,AnnualRevenue,BillingLatitude\n"
        f"Big,{BIG},{LATITUDE}\n"
        f"Past float,{PAST_FLOAT},-89.999999999999999\n"
    )
    info, ok, failed = bulk(http, emu, data)
    assert info["numberRecordsFailed"] == 0 and not failed, failed
    # The results echo the row as uploaded.
    assert [(r["AnnualRevenue"], r["BillingLatitude"]) for r in ok] == [
        (BIG, LATITUDE),
        (PAST_FLOAT, "-89.999999999999999"),
    ]
    text, records = query(
        http, emu, "SELECT Name, AnnualRevenue, BillingLatitude FROM Account ORDER BY Name"
    )
    assert f'"AnnualRevenue":{BIG}' in text and f'"AnnualRevenue":{PAST_FLOAT}' in text
    assert [r["BillingLatitude"] for r in records] == [
        Decimal(LATITUDE),
        Decimal("-89.999999999999999"),
    ]

    account_id = records[0]["attributes"]["url"].rsplit("/", 1)[1]
    data = f"Name,StageName,CloseDate,AccountId,Amount\nDeal,Prospecting,2030-01-01,{account_id},{CENTS}\n"
    _, ok, failed = bulk(http, emu, data, object="Opportunity")
    assert not failed, failed
    text, records = query(http, emu, "SELECT Amount FROM Opportunity")
    assert f'"Amount":{CENTS}' in text


def test_ordinary_numbers_look_as_they_always_did(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    create(
        http,
        emu,
        widget("W-1", Quantity__c=3, Price__c=12.5, Discount__c=0.25, Units__c=7),
        {"attributes": {"type": "Account"}, "Name": "Acme", "AnnualRevenue": 1500},
    )
    text, _ = query(http, emu, "SELECT Quantity__c, Price__c, Discount__c, Units__c FROM Widget__c")
    assert '"Quantity__c":3.0,"Price__c":12.5,"Discount__c":0.25,"Units__c":7' in text
    text, _ = query(http, emu, "SELECT AnnualRevenue FROM Account")
    assert '"AnnualRevenue":1500.0' in text


def test_soql_compares_numbers_exactly(emu: EmulatorHandle, http: requests.Session) -> None:
    body = (
        '{"allOrNone":false,"records":['
        '{"attributes":{"type":"Account"},"Name":"A","AnnualRevenue":9007199254740992},'
        '{"attributes":{"type":"Account"},"Name":"B","AnnualRevenue":9007199254740993}]}'
    )
    post_raw(http, url(emu, "composite/sobjects"), body)

    def names(where: str) -> list[str]:
        return [r["Name"] for r in query(http, emu, f"SELECT Name FROM Account WHERE {where}")[1]]

    assert names("AnnualRevenue = 9007199254740993") == ["B"]
    assert names("AnnualRevenue > 9007199254740992") == ["B"]
    assert names("AnnualRevenue < 9007199254740992.5") == ["A"]
    assert names("AnnualRevenue IN (9007199254740992.0)") == ["A"]


@pytest.mark.parametrize(
    ("row", "field", "label", "shown"),
    [
        ({"Price__c": 1000000}, "Price__c", "Price", "1000000"),  # Currency(8, 2): 6 digits
        ({"Price__c": 999999.995}, "Price__c", "Price", "999999.995"),  # rounds to 1000000.00
        ({"Discount__c": -1000}, "Discount__c", "Discount", "-1000"),  # Percent(5, 2)
        ({"Quantity__c": 1e18}, "Quantity__c", "Quantity", "1e+18"),  # Number(18, 0)
    ],
)
def test_a_number_beyond_the_field_precision_is_refused(
    emu: EmulatorHandle,
    http: requests.Session,
    row: dict[str, Any],
    field: str,
    label: str,
    shown: str,
) -> None:
    error = only_error(create(http, emu, widget("W-1", **row))[0])
    assert error["statusCode"] == "NUMBER_OUTSIDE_VALID_RANGE"
    assert error["message"] == f"{label}: value outside of valid range on numeric field: {shown}"
    assert error["fields"] == [field]


def test_nineteen_digits_are_refused_through_json_and_csv(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    body = (
        '{"allOrNone":false,"records":[{"attributes":{"type":"Account"},"Name":"Too big",'
        '"AnnualRevenue":1234567890123456789}]}'
    )
    error = only_error(post_raw(http, url(emu, "composite/sobjects"), body)[0])
    assert error["statusCode"] == "NUMBER_OUTSIDE_VALID_RANGE"
    assert error["message"] == (
        "Annual Revenue: value outside of valid range on numeric field: 1234567890123456789"
    )
    _, ok, failed = bulk(http, emu, "Name,AnnualRevenue\nToo big,1234567890123456789\nFits,1\n")
    assert [r["Name"] for r in ok] == ["Fits"]
    assert failed[0]["sf__Error"] == (
        "NUMBER_OUTSIDE_VALID_RANGE:Annual Revenue: value outside of valid range on numeric "
        "field: 1234567890123456789:AnnualRevenue --"
    )


def test_numbers_round_half_up_at_the_field_scale(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    # Half away from zero (BigDecimal HALF_UP), not half to even, on the decimal as sent:
    # the float 2.355 is 2.35499..., yet 2.355 was sent and 2.36 is kept.
    body = (
        '{"allOrNone":false,"records":['
        '{"attributes":{"type":"Widget__c"},"Name":"a","Widget_Key__c":"a","Price__c":2.345,'
        '"Quantity__c":0.5,"Discount__c":-1.005},'
        '{"attributes":{"type":"Widget__c"},"Name":"b","Widget_Key__c":"b","Price__c":2.355,'
        '"Quantity__c":2.5,"Discount__c":12.344},'
        '{"attributes":{"type":"Widget__c"},"Name":"c","Widget_Key__c":"c","Price__c":-0.125,'
        '"Quantity__c":-2.5,"Discount__c":999.995}]}'
    )
    results = post_raw(http, url(emu, "composite/sobjects"), body)
    assert [r["success"] for r in results] == [True, True, False], results
    # 999.995 at Percent(5, 2) rounds to 1000.00, one digit too many.
    assert only_error(results[2])["statusCode"] == "NUMBER_OUTSIDE_VALID_RANGE"
    body = body.replace("999.995", "999.994")
    post_raw(
        http,
        url(emu, "composite/sobjects/Widget__c/Widget_Key__c"),
        body.replace('"attributes":{"type":"Widget__c"},', ""),
        method="PATCH",
    )
    _, records = query(
        http, emu, "SELECT Price__c, Quantity__c, Discount__c FROM Widget__c ORDER BY Name"
    )
    assert [(r["Price__c"], r["Quantity__c"], r["Discount__c"]) for r in records] == [
        (Decimal("2.35"), Decimal("1.0"), Decimal("-1.01")),
        (Decimal("2.36"), Decimal("3.0"), Decimal("12.34")),
        (Decimal("-0.13"), Decimal("-3.0"), Decimal("999.99")),
    ]
    # Bulk CSV text rounds the same way.
    _, _, failed = bulk(
        http, emu, "Name,AnnualRevenue\nHalf,2.5\nMinus half,-2.5\n", operation="insert"
    )
    assert not failed
    _, records = query(http, emu, "SELECT Name, AnnualRevenue FROM Account ORDER BY Name")
    assert [(r["Name"], r["AnnualRevenue"]) for r in records] == [
        ("Half", Decimal("3.0")),
        ("Minus half", Decimal("-3.0")),
    ]


def test_exact_numbers_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.pickle"
    with start_emulator(tmp_path / "one", "--state", str(state)) as handle:
        http = handle.session()
        post_raw(
            http,
            url(handle, "sobjects/Account"),
            f'{{"Name":"Kept","AnnualRevenue":{BIG},"BillingLatitude":{LATITUDE}}}',
        )
    with start_emulator(tmp_path / "two", "--state", str(state)) as handle:
        http = handle.session()
        text, records = query(http, handle, "SELECT AnnualRevenue, BillingLatitude FROM Account")
        assert f'"AnnualRevenue":{BIG}' in text
        assert records[0]["BillingLatitude"] == Decimal(LATITUDE)


# ---- NUL characters --------------------------------------------------------------------


def test_nul_characters_are_stripped_from_saved_text(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    # 20 characters once the NULs are gone: Widget_Key__c holds 20.
    key = "K" + "\u0000" * 5 + "0123456789ABCDEFGHI"
    results = create(
        http,
        emu,
        widget(key, Name="Ac\u0000me", Notes__c="line\u0000one", Color__c="Re\u0000d"),
    )
    assert results[0]["success"], results
    _, records = query(http, emu, "SELECT Name, Widget_Key__c, Notes__c, Color__c FROM Widget__c")
    assert records[0]["Name"] == "Acme"
    assert records[0]["Widget_Key__c"] == "K0123456789ABCDEFGHI"
    assert records[0]["Notes__c"] == "lineone"
    assert records[0]["Color__c"] == "Red"  # a restricted picklist sees the stripped value

    # An upsert keyed on the NUL-laden value finds the record saved without them.
    r = http.patch(
        url(emu, "composite/sobjects/Widget__c/Widget_Key__c"),
        json={"records": [{"attributes": {"type": "Widget__c"}, "Widget_Key__c": key}]},
    )
    assert r.json()[0]["created"] is False, r.text

    rid = results[0]["id"]
    r = http.patch(url(emu, f"sobjects/Widget__c/{rid}"), json={"Name": "\u0000Renamed\u0000"})
    assert r.status_code == 204, r.text
    assert http.get(url(emu, f"sobjects/Widget__c/{rid}")).json()["Name"] == "Renamed"


def test_nul_characters_are_stripped_from_bulk_csv(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    data = 'Name,Description\n"Glo\u0000bex","two\u0000 words"\n'
    _, ok, failed = bulk(http, emu, data)
    assert not failed
    # The results give the row as uploaded (the docs: "field data for the row that was
    # provided in the original job data upload request"), NULs and all.
    assert ok[0]["Name"] == "Glo\u0000bex"
    _, records = query(http, emu, "SELECT Name, Description FROM Account")
    assert (records[0]["Name"], records[0]["Description"]) == ("Globex", "two words")


# ---- 15-character Ids ------------------------------------------------------------------


def test_the_id_checksum_matches_ids_from_a_real_org() -> None:
    # 18-character ids recorded from real orgs (CumulusCI cassettes), suffix and all.
    for real in (
        "0012300000bVTphAAG",
        "0015500001QdRaYAAV",
        "0015500001QdZPKAA3",
        "0019H00000H1RMDQA3",
        "0019H00000H1UzyQAF",
        "001Da00000xnAhlIAE",
        "0035500001H9dAeAAJ",
    ):
        assert ids.normalize(real[:15]) == real
        assert ids.normalize(real) == real
    assert ids.normalize("001Da00000xnAhl") != ids.normalize("001Da00000xnAhL")


def test_fifteen_character_ids_in_collections_resolve_and_come_back_as_eighteen(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    acme, globex = (
        r["id"]
        for r in create(
            http,
            emu,
            {"attributes": {"type": "Account"}, "Name": "Acme"},
            {"attributes": {"type": "Account"}, "Name": "Globex"},
        )
    )
    short = acme[:15]
    # Update by a 15-character Id: the result carries the 18-character one.
    r = http.patch(
        url(emu, "composite/sobjects"),
        json={"records": [{"attributes": {"type": "Account"}, "Id": short, "Name": "Acme 2"}]},
    )
    assert r.json() == [{"id": acme, "success": True, "errors": []}], r.text
    # Reference fields take one too, and store the 18-character form.
    results = create(
        http,
        emu,
        {"attributes": {"type": "Contact"}, "LastName": "Smith", "AccountId": short},
        {"attributes": {"type": "Account"}, "Name": "Child", "ParentId": globex[:15]},
    )
    assert all(r["success"] for r in results), results
    _, contacts = query(http, emu, "SELECT AccountId, Account.Name FROM Contact")
    assert contacts[0]["AccountId"] == acme and contacts[0]["Account"]["Name"] == "Acme 2"
    _, children = query(
        http, emu, f"SELECT Name, ParentId FROM Account WHERE ParentId = '{globex[:15]}'"
    )
    assert [(c["Name"], c["ParentId"]) for c in children] == [("Child", globex)]

    # SOQL: = and IN with 15-character literals; Ids come back in 18 characters.
    _, rows = query(http, emu, f"SELECT Id, Name FROM Account WHERE Id = '{short}'")
    assert [(r["Id"], r["Name"]) for r in rows] == [(acme, "Acme 2")]
    _, rows = query(
        http, emu, f"SELECT Id FROM Account WHERE Id IN ('{short}', '{globex[:15]}') ORDER BY Name"
    )
    assert [r["Id"] for r in rows] == [acme, globex]
    # Case matters in a 15-character Id.
    _, rows = query(http, emu, f"SELECT Id FROM Account WHERE Id = '{short.swapcase()}'")
    assert rows == []

    # The URL and the Collections retrieve take it.
    assert http.get(url(emu, f"sobjects/Account/{short}")).json()["Id"] == acme
    r = http.get(url(emu, "composite/sobjects/Account"), params={"ids": short, "fields": "Id"})
    assert r.json()[0]["Id"] == acme

    # Delete by ?ids= with a 15-character Id.
    contact_id = results[0]["id"]
    r = http.delete(url(emu, "composite/sobjects"), params={"ids": f"{contact_id[:15]}"})
    assert r.json() == [{"id": contact_id, "success": True, "errors": []}], r.text
    assert [c["Id"] for c in emu.records("Contact")] == []


def test_fifteen_character_ids_in_bulk_csv(emu: EmulatorHandle, http: requests.Session) -> None:
    acme, globex = (
        r["id"]
        for r in create(
            http,
            emu,
            {"attributes": {"type": "Account"}, "Name": "Acme"},
            {"attributes": {"type": "Account"}, "Name": "Globex"},
        )
    )
    _, ok, failed = bulk(http, emu, f"LastName,AccountId\nSmith,{acme[:15]}\n", object="Contact")
    assert not failed, failed
    contact_id = ok[0]["sf__Id"]
    assert len(contact_id) == 18
    _, ok, failed = bulk(
        http, emu, f"Id,Name,ParentId\n{acme[:15]},Acme 2,{globex[:15]}\n", operation="update"
    )
    assert not failed, failed
    assert ok[0]["sf__Id"] == acme
    _, rows = query(http, emu, "SELECT Name, ParentId FROM Account WHERE Id = '" + acme + "'")
    assert (rows[0]["Name"], rows[0]["ParentId"]) == ("Acme 2", globex)
    _, rows = query(http, emu, "SELECT AccountId FROM Contact")
    assert rows[0]["AccountId"] == acme

    _, ok, failed = bulk(
        http, emu, f"Id\n{contact_id[:15]}\n", object="Contact", operation="delete"
    )
    assert not failed and ok[0]["sf__Id"] == contact_id
    assert emu.records("Contact") == []


# ---- dates out of range ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "label", "value"),
    [
        ("Ship_Date__c", "Ship Date", "1699-12-31"),
        ("Ship_Date__c", "Ship Date", "4001-01-01"),
        ("Ship_Date__c", "Ship Date", "0001-01-01"),
        ("Ship_Date__c", "Ship Date", "9999-12-31T00:00:00Z"),
        ("Shipped_At__c", "Shipped At", "1699-12-31T23:59:59Z"),
        ("Shipped_At__c", "Shipped At", "4001-01-01T00:00:00.000+0000"),
        ("Shipped_At__c", "Shipped At", "4000-12-31T22:00:00-05:00"),  # 4001 in GMT
        ("Shipped_At__c", "Shipped At", "0001-01-01T00:00:00+05:00"),
    ],
)
def test_a_date_outside_1700_to_4000_is_refused(
    emu: EmulatorHandle, http: requests.Session, field: str, label: str, value: str
) -> None:
    error = only_error(create(http, emu, widget("W-1", **{field: value}))[0])
    assert error == {
        "statusCode": "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "message": f"{label}: value not of required type: {value}",
        "fields": [field],
    }


def test_dates_at_the_edges_of_the_range_are_kept(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    results = create(
        http,
        emu,
        widget("a", Ship_Date__c="1700-01-01", Shipped_At__c="1699-12-31T20:00:00-05:00"),
        widget("b", Ship_Date__c="4000-12-31", Shipped_At__c="4000-12-31T23:59:59Z"),
    )
    assert all(r["success"] for r in results), results
    _, rows = query(http, emu, "SELECT Ship_Date__c, Shipped_At__c FROM Widget__c ORDER BY Name")
    assert [(r["Ship_Date__c"], r["Shipped_At__c"]) for r in rows] == [
        ("1700-01-01", "1700-01-01T01:00:00.000+0000"),
        ("4000-12-31", "4000-12-31T23:59:59.000+0000"),
    ]


def test_a_date_out_of_range_is_refused_in_bulk(
    emu: EmulatorHandle, http: requests.Session
) -> None:
    data = (
        "Name,StageName,CloseDate\n"
        "Old,Prospecting,1699-12-31\nFine,Prospecting,2030-01-01\nLate,Prospecting,4001-01-01\n"
    )
    _, ok, failed = bulk(http, emu, data, object="Opportunity")
    assert [r["Name"] for r in ok] == ["Fine"]
    assert [r["sf__Error"] for r in failed] == [
        "INVALID_TYPE_ON_FIELD_IN_RECORD:Close Date: value not of required type: "
        f"{day}:CloseDate --"
        for day in ("1699-12-31", "4001-01-01")
    ]
