"""The emulator's SOQL: grammar and evaluation directly, then over HTTP like real clients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from sf_activation.emulator.builtin_objects import builtin_describes
from sf_activation.emulator.soql import SoqlError, column_metadata, run_query

V = "62.0"


class FakeOrg:
    """A small in-memory stand-in for the emulator's Org: describes plus records."""

    def __init__(self) -> None:
        self.describes = {name.lower(): d for name, d in builtin_describes(V).items()}
        self.data: dict[str, dict[str, dict[str, Any]]] = {}

    def describe(self, name: str) -> dict[str, Any] | None:
        return self.describes.get(name.lower())

    def records(self, name: str) -> Iterable[dict[str, Any]]:
        return list(self.data.get(self.describes[name.lower()]["name"], {}).values())

    def get(self, name: str, record_id: str) -> dict[str, Any] | None:
        return self.data.get(self.describes[name.lower()]["name"], {}).get(record_id)

    def add(self, name: str, record_id: str, **values: Any) -> None:
        self.data.setdefault(name, {})[record_id] = {"Id": record_id, **values}


def acc(n: int) -> str:
    return f"001000000000{n:03d}AAA"


@pytest.fixture
def org() -> FakeOrg:
    o = FakeOrg()
    o.add("Account", acc(1), Name="Acme", Industry="Energy", AnnualRevenue=100.0,
          NumberOfEmployees=10, External_Id__c="A-1", ParentId=None,
          CreatedDate="2024-01-01T10:00:00.000+0000")  # fmt: skip
    o.add("Account", acc(2), Name="Globex", Industry=None, AnnualRevenue=250.5,
          NumberOfEmployees=None, External_Id__c="A-2", ParentId=acc(1),
          CreatedDate="2024-03-01T10:00:00.000+0000")  # fmt: skip
    o.add("Account", acc(3), Name="it's 50% off_", Industry="Retail", AnnualRevenue=None,
          NumberOfEmployees=3, External_Id__c="A-3", ParentId=acc(1),
          CreatedDate="2024-06-01T10:00:00.000+0000")  # fmt: skip
    o.add("Contact", "003000000000001AAA", LastName="Lee", AccountId=acc(2),
          Birthdate="1990-05-17", HasOptedOutOfEmail=True, Email="lee@example.com")  # fmt: skip
    o.add("Contact", "003000000000002AAA", LastName="Kim", AccountId=None,
          Birthdate=None, HasOptedOutOfEmail=False, Email=None)  # fmt: skip
    return o


def names(result: Any) -> list[str]:
    return [r["Name"] for r in result.records]


def test_select_shapes_records_like_the_api(org: FakeOrg) -> None:
    result = run_query("select id, NAME from account where Name = 'Acme'", org, V)
    assert result.object_name == "Account" and not result.aggregate
    assert result.records == [
        {
            "attributes": {
                "type": "Account",
                "url": f"/services/data/v62.0/sobjects/Account/{acc(1)}",
            },
            "Id": acc(1),
            "Name": "Acme",
        }
    ]
    assert result.total_size == 1


def test_parent_relationship_fields_nest_or_are_null(org: FakeOrg) -> None:
    result = run_query(
        "SELECT Name, Parent.Name, Parent.External_Id__c FROM Account ORDER BY Name", org, V
    )
    by_name = {r["Name"]: r for r in result.records}
    assert by_name["Acme"]["Parent"] is None
    assert by_name["Globex"]["Parent"] == {
        "attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{acc(1)}"},
        "Name": "Acme",
        "External_Id__c": "A-1",
    }
    contacts = run_query(
        "SELECT LastName, Account.Name FROM Contact WHERE Account.Name = 'globex'", org, V
    )
    assert [(c["LastName"], c["Account"]["Name"]) for c in contacts.records] == [("Lee", "Globex")]


def test_child_subquery(org: FakeOrg) -> None:
    result = run_query(
        "SELECT Name, (SELECT LastName FROM Contacts) FROM Account WHERE Name IN ('Acme','Globex') ORDER BY Name",
        org,
        V,
    )
    assert result.records[0]["Contacts"] is None
    assert result.records[1]["Contacts"]["totalSize"] == 1
    assert result.records[1]["Contacts"]["records"][0]["LastName"] == "Lee"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Name = 'ACME'", ["Acme"]),
        ("Name != 'Acme'", ["Globex", "it's 50% off_"]),
        ("Name <> 'Acme'", ["Globex", "it's 50% off_"]),
        ("AnnualRevenue > 100", ["Globex"]),
        ("AnnualRevenue >= 100", ["Acme", "Globex"]),
        ("AnnualRevenue < 200.0", ["Acme"]),
        ("AnnualRevenue <= 250.5", ["Acme", "Globex"]),
        ("AnnualRevenue = null", ["it's 50% off_"]),
        ("Industry != null", ["Acme", "it's 50% off_"]),
        ("Industry != 'Energy'", ["Globex", "it's 50% off_"]),
        ("Industry IN ('energy', 'Retail')", ["Acme", "it's 50% off_"]),
        ("Industry NOT IN ('Energy')", ["Globex", "it's 50% off_"]),
        ("Name LIKE 'a%'", ["Acme"]),
        ("Name LIKE '%OB%'", ["Globex"]),
        ("Name LIKE 'Acm_'", ["Acme"]),
        ("Name LIKE '%50\\% off\\_'", ["it's 50% off_"]),
        ("Name LIKE '%0\\%'", []),
        ("Name = 'it\\'s 50% off_'", ["it's 50% off_"]),
        ("NumberOfEmployees > 5 AND Industry = 'Energy'", ["Acme"]),
        ("NumberOfEmployees > 5 OR Industry = 'Retail'", ["Acme", "it's 50% off_"]),
        ("NOT Name = 'Acme'", ["Globex", "it's 50% off_"]),
        ("(Name = 'Acme' OR Name = 'Globex') AND NOT (AnnualRevenue > 200)", ["Acme"]),
        ("CreatedDate > 2024-02-01T00:00:00Z", ["Globex", "it's 50% off_"]),
        ("CreatedDate < 2024-03-01T10:00:00.000+00:00", ["Acme"]),
        ("CreatedDate >= 2024-03-01", ["Globex", "it's 50% off_"]),
        ("Parent.Name = 'Acme'", ["Globex", "it's 50% off_"]),
        ("ParentId = '001000000000001'", ["Globex", "it's 50% off_"]),
        ("External_Id__c = 'a-2'", ["Globex"]),
        ("CreatedDate < TODAY", ["Acme", "Globex", "it's 50% off_"]),
    ],
)
def test_where(org: FakeOrg, where: str, expected: list[str]) -> None:
    assert sorted(names(run_query(f"SELECT Name FROM Account WHERE {where}", org, V))) == expected


def test_where_on_dates_and_booleans(org: FakeOrg) -> None:
    rows = run_query("SELECT LastName FROM Contact WHERE Birthdate = 1990-05-17", org, V).records
    assert [r["LastName"] for r in rows] == ["Lee"]
    rows = run_query(
        "SELECT LastName FROM Contact WHERE HasOptedOutOfEmail = false", org, V
    ).records
    assert [r["LastName"] for r in rows] == ["Kim"]


def test_order_by_limit_offset(org: FakeOrg) -> None:
    q = "SELECT Name FROM Account ORDER BY NumberOfEmployees DESC NULLS FIRST, Name"
    assert names(run_query(q, org, V)) == ["Globex", "Acme", "it's 50% off_"]
    q = "SELECT Name FROM Account ORDER BY NumberOfEmployees"  # ASC defaults to NULLS FIRST
    assert names(run_query(q, org, V)) == ["Globex", "it's 50% off_", "Acme"]
    q = "SELECT Name FROM Account ORDER BY Industry DESC, Name ASC LIMIT 2 OFFSET 1"
    assert names(run_query(q, org, V)) == ["Acme"] + ["Globex"]
    q = "SELECT Name FROM Account ORDER BY Parent.Name ASC NULLS LAST, Name DESC LIMIT 1"
    assert names(run_query(q, org, V)) == ["it's 50% off_"]


def test_counts(org: FakeOrg) -> None:
    plain = run_query("SELECT COUNT() FROM Account WHERE AnnualRevenue != null", org, V)
    assert (plain.total_size, plain.records) == (2, [])
    agg = run_query("select count(Id) from Account", org, V)
    assert agg.aggregate
    assert agg.records == [{"attributes": {"type": "AggregateResult"}, "expr0": 3}]
    aliased = run_query("SELECT COUNT(Industry) n FROM Account", org, V)
    assert aliased.records[0]["n"] == 2


@pytest.mark.parametrize(
    ("soql", "code", "fragment"),
    [
        ("SELECT Id FROM Nope__c", "INVALID_TYPE", "sObject type 'Nope__c' is not supported."),
        (
            "SELECT Id, Foo FROM Account",
            "INVALID_FIELD",
            "No such column 'Foo' on entity 'Account'",
        ),
        ("SELECT Id FROM Account WHERE Bar = 1", "INVALID_FIELD", "No such column 'Bar'"),
        ("SELECT Nope.Name FROM Contact", "INVALID_FIELD", "Didn't understand relationship 'Nope'"),
        (
            "SELECT Account.Nope FROM Contact",
            "INVALID_FIELD",
            "No such column 'Nope' on entity 'Account'",
        ),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD", "must be of type string"),
        (
            "SELECT Id FROM Account WHERE CreatedDate > '2024-01-01'",
            "INVALID_FIELD",
            "must be of type datetime",
        ),
        ("SELECT FROM Account", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
        ("SELECT Id Account", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", "<EOF>"),
        ("SELECT Id FROM Account WHERE Name = 'x", "MALFORMED_QUERY", ""),
        ("SELECT Id FROM Account LIMIT x", "MALFORMED_QUERY", "unexpected token: 'x'"),
        ("", "MALFORMED_QUERY", ""),
    ],
)
def test_errors(org: FakeOrg, soql: str, code: str, fragment: str) -> None:
    with pytest.raises(SoqlError) as info:
        run_query(soql, org, V)
    assert info.value.error_code == code
    assert fragment in info.value.message


def test_error_message_points_at_the_column(org: FakeOrg) -> None:
    with pytest.raises(SoqlError) as info:
        run_query("SELECT Id, Foo FROM Account", org, V)
    assert "ERROR at Row:1:Column:12" in info.value.message


def test_column_metadata(org: FakeOrg) -> None:
    meta = column_metadata("SELECT Id, Name, Parent.Name, Parent.Id FROM Account", org)
    assert (meta["entityName"], meta["idSelected"], meta["keyPrefix"], meta["groupBy"]) == (
        "Account",
        True,
        "001",
        False,
    )
    cols = meta["columnMetadata"]
    assert [c["columnName"] for c in cols] == ["Id", "Name", "Parent"]
    assert cols[1]["textType"] and cols[1]["apexType"] == "String" and cols[1]["updatable"]
    assert [j["displayName"] for j in cols[2]["joinColumns"]] == ["Parent.Name", "Parent.Id"]
    keys = {"aggregate", "apexType", "booleanType", "columnName", "custom", "displayName",
            "foreignKeyName", "insertable", "joinColumns", "numberType", "textType", "updatable"}  # fmt: skip
    assert all(set(c) == keys for c in cols)
    count = column_metadata("SELECT COUNT(Id) FROM Account", org)["columnMetadata"][0]
    assert (
        count["aggregate"]
        and count["columnName"] == "expr0"
        and count["displayName"] == "COUNT(Id)"
    )
