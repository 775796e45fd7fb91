"""Bulk 2.0 results are matched to the rows uploaded even when Salesforce echoes them
otherwise than they were sent.

Update, delete and upsert rows are identified by their record identity (Id, or the
upsert's External ID) compared as Salesforce compares it; insert rows by the whole row,
with result headers compared case-insensitively, NUL characters dropped and numbers
compared by value. Over HTTPS against the emulator, whose result files are rewritten on
their way to the client the ways an org may echo them (header case, NULs stripped,
numbers re-rendered, Ids in their other form, rows in another order); and unit tests of
the matching functions.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sf_activation.salesforce import RecordOutcome, SalesforceClient, SendReport, SendRequest
from sf_activation.salesforce.bulk import (
    BOOL,
    DECIMAL,
    FLOAT,
    ID,
    INT,
    TEXT,
    TEXT_CI,
    cell_rule,
    csv_header,
    identity_rule,
    match_rows,
    normalise_cells,
    result_column,
    row_rules,
)
from sf_activation.salesforce.describe import FieldDescribe, ObjectDescribe
from sf_activation.salesforce.payload import PayloadLayout
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.salesforce_fixtures import fast_client

RESULT_KINDS = ("successfulResults", "failedResults", "unprocessedrecords")
Rewrite = Callable[[str, list[str], list[list[str]]], tuple[list[str], list[list[str]]]]


# -- over HTTPS --------------------------------------------------------------------------


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[SalesforceClient]:
    c = fast_client(emulator)
    yield c
    c.close()


class _Body:
    """A downloaded result file as the client reads it (`iter_content`, `with`)."""

    def __init__(self, data: bytes, status_code: int, headers: Any) -> None:
        self.content = data
        self.status_code = status_code
        self.headers = headers

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        for start in range(0, len(self.content), chunk_size):
            yield self.content[start : start + chunk_size]

    def close(self) -> None:
        pass

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def rewrite_results(client: SalesforceClient, rewrite: Rewrite) -> list[str]:
    """Rewrite every Bulk result file the client downloads: `rewrite(kind, header, rows)`
    gives the header and rows the client sees, written with a plain (unquoted) header
    as Salesforce writes it. Returns the kinds rewritten, in order."""
    seen: list[str] = []
    session = client.session
    original = session.request

    def request(method: str, path: str, **kwargs: Any) -> Any:
        response = original(method, path, **kwargs)
        parts = path.strip("/").split("/")
        if method != "GET" or len(parts) != 4 or parts[3] not in RESULT_KINDS:
            return response
        with response:
            text = response.content.decode("utf-8")
        table = list(csv.reader(io.StringIO(text, newline="")))
        out = io.StringIO()
        if table:
            header, rows = rewrite(parts[3], table[0], table[1:])
            out.write(",".join(header) + "\n")
            csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
        seen.append(parts[3])
        return _Body(out.getvalue().encode("utf-8"), response.status_code, response.headers)

    session.request = request  # type: ignore[method-assign]
    return seen


def send(
    client: SalesforceClient, batch: pa.RecordBatch, **request: Any
) -> tuple[SendReport, dict[str, RecordOutcome]]:
    outcomes: list[RecordOutcome] = []
    report = client.send(SendRequest(transport="bulk", **request), [batch], outcomes.extend)
    by_key = {o.key: o for o in outcomes}
    assert len(by_key) == len(outcomes) == report.sent, "exactly one outcome per record"
    return report, by_key


def rows_by_column(
    header: list[str], rows: list[list[str]], column: str, change: Callable[[str], str]
) -> list[list[str]]:
    i = [h.lower() for h in header].index(column.lower())
    return [[change(c) if j == i else c for j, c in enumerate(row)] for row in rows]


def field_headers(header: list[str], change: Callable[[str], str] | None) -> list[str]:
    """Change the case of the echoed field names (sf__ columns stay as they are)."""
    if change is None:
        return header
    return [h if h.startswith("sf__") else change(h) for h in header]


# The echoed field names as sent, or in another case (Salesforce's own spelling).
recased = pytest.mark.parametrize(
    "recase", [None, str.upper, str.lower], ids=["headers-as-sent", "upper", "lower"]
)


def rerendered(text: str) -> str:
    """The same number written otherwise: `1.5` → `1.50`, `1.50` → `1.5`, `2` → `2.00`."""
    if text in ("", "#N/A"):
        return text
    if "." in text and text.endswith("0"):
        return f"{Decimal(text).normalize():f}"
    return f"{Decimal(text):.2f}"


def as_float_text(text: str) -> str:
    return f"{int(text)}.0" if text not in ("", "#N/A") else text


@recased
@pytest.mark.parametrize(
    "revenue", [pa.float64(), pa.decimal128(18, 2)], ids=["float64", "decimal"]
)  # the canonical type of a Currency field: float64, or an exact decimal at its scale
def test_insert_rows_match_when_headers_nuls_and_numbers_are_echoed_otherwise(
    client, emulator, recase, revenue
):
    n = 40
    names = [f"Account\x00 {i}" if i % 3 == 0 else f"Account {i}" for i in range(n)]
    names[7] = None  # Name is required: this row fails
    batch = pa.RecordBatch.from_pydict(
        {
            "__key": [f"k{i}" for i in range(n)],
            "Name": pa.array(names, pa.string()),
            "Site": pa.array([f"site-{i}" for i in range(n)], pa.string()),
            "AnnualRevenue": pa.array(
                [Decimal(i) + Decimal("0.5") if i % 4 else None for i in range(n)],
                pa.decimal128(18, 2),
            ).cast(revenue),
            "NumberOfEmployees": pa.array([i * 10 for i in range(n)], pa.int64()),
        }
    )

    def rewrite(kind: str, header: list[str], rows: list[list[str]]):
        rows = [[c.replace("\x00", "") for c in row] for row in rows]
        rows = rows_by_column(header, rows, "AnnualRevenue", rerendered)
        rows = rows_by_column(header, rows, "NumberOfEmployees", as_float_text)
        return field_headers(header, recase), rows[::-1]

    rewritten = rewrite_results(client, rewrite)
    report, outcomes = send(client, batch, object="Account", operation="insert", nulls="keep")
    assert "successfulResults" in rewritten and "failedResults" in rewritten
    assert report.succeeded == n - 1 and report.failed == 1 and report.retryable == 0
    bad = outcomes["k7"]
    assert not bad.success and not bad.retryable and bad.error_code == "REQUIRED_FIELD_MISSING"
    site_of = {r["Id"]: r["Site"] for r in emulator.records("Account")}
    assert len(site_of) == n - 1
    for i in range(n):
        if i != 7:
            outcome = outcomes[f"k{i}"]
            assert outcome.success and outcome.created, outcome
            assert site_of[outcome.sf_id] == f"site-{i}", (i, outcome)


def _insert_accounts(client: SalesforceClient, n: int) -> list[str]:
    batch = pa.RecordBatch.from_pydict(
        {"__key": [f"k{i}" for i in range(n)], "Name": [f"Account {i}" for i in range(n)]}
    )
    report, outcomes = send(client, batch, object="Account", operation="insert")
    assert report.succeeded == n
    return [outcomes[f"k{i}"].sf_id for i in range(n)]


@recased
def test_update_by_15_character_id_matches_an_18_character_echo_and_duplicates(
    client, emulator, recase
):
    ids = _insert_accounts(client, 20)
    assert all(len(i) == 18 for i in ids)
    full = {i[:15]: i for i in ids}
    # Rows 20 and 21 update records 3 and 4 a second time in the same job.
    targets = [i[:15] for i in ids] + [ids[3][:15], ids[4][:15]]
    batch = pa.RecordBatch.from_pydict(
        {
            "__key": [f"u{i}" for i in range(len(targets))],
            "Id": pa.array(targets, pa.string()),
            "NumberOfEmployees": pa.array([7] * len(targets), pa.int64()),
        }
    )

    def rewrite(kind: str, header: list[str], rows: list[list[str]]):
        rows = rows_by_column(header, rows, "Id", lambda v: full.get(v, v))
        rows = rows_by_column(header, rows, "NumberOfEmployees", lambda v: "7E0")
        return field_headers(header, recase), rows[::-1]

    rewrite_results(client, rewrite)
    report, outcomes = send(client, batch, object="Account", operation="update")
    assert report.succeeded == len(targets) and report.retryable == 0, report
    for i, target in enumerate(targets):
        assert outcomes[f"u{i}"].sf_id == full[target]
    assert {r["NumberOfEmployees"] for r in emulator.records("Account")} == {7}


@recased
def test_delete_by_18_character_id_matches_a_15_character_echo(client, emulator, recase):
    ids = _insert_accounts(client, 15)
    batch = pa.RecordBatch.from_pydict(
        {"__key": [f"d{i}" for i in range(len(ids))], "Id": pa.array(ids, pa.string())}
    )

    def rewrite(kind: str, header: list[str], rows: list[list[str]]):
        rows = rows_by_column(header, rows, "Id", lambda v: v[:15])
        return field_headers(header, recase), rows[::-1]

    rewrite_results(client, rewrite)
    report, outcomes = send(client, batch, object="Account", operation="delete")
    assert report.succeeded == len(ids) and report.retryable == 0, report
    assert {outcomes[f"d{i}"].sf_id for i in range(len(ids))} <= set(ids) | {None}
    assert emulator.records("Account") == []


@recased
def test_upsert_matches_by_external_id_compared_case_insensitively(client, emulator, recase):
    n = 30
    names = [f"Name {i}\x00" for i in range(n)]
    names[11] = "x" * 300  # longer than Name's 255: this row fails in Salesforce
    batch = pa.RecordBatch.from_pydict(
        {
            "__key": [f"k{i}" for i in range(n)],
            "External_Id__c": pa.array([f"acme-{i}" for i in range(n)], pa.string()),
            "Name": pa.array(names, pa.string()),
            "AnnualRevenue": pa.array([i / 4 for i in range(n)], pa.float64()),
        }
    )

    def rewrite(kind: str, header: list[str], rows: list[list[str]]):
        rows = rows_by_column(header, rows, "External_Id__c", str.upper)
        rows = rows_by_column(header, rows, "AnnualRevenue", rerendered)
        rows = [[c.replace("\x00", "") for c in row] for row in rows]
        return field_headers(header, recase), rows[::-1]

    rewritten = rewrite_results(client, rewrite)
    report, outcomes = send(
        client, batch, object="Account", operation="upsert", external_id="External_Id__c"
    )
    assert "failedResults" in rewritten
    assert report.succeeded == n - 1 and report.failed == 1 and report.retryable == 0, report
    assert outcomes["k11"].error_code == "STRING_TOO_LONG" and not outcomes["k11"].retryable
    stored = {r["External_Id__c"]: r["Id"] for r in emulator.records("Account")}
    for i in range(n):
        if i != 11:
            assert outcomes[f"k{i}"].sf_id == stored[f"acme-{i}"], i


def test_a_faithful_echo_in_any_order_still_matches_every_row(client, emulator):
    """The first pass (cells as uploaded) alone: results reversed, headers as sent."""
    n = 25
    batch = pa.RecordBatch.from_pydict(
        {
            "__key": [f"k{i}" for i in range(n)],
            "Name": [f"Same \x00name {i % 2}" for i in range(n)],  # many identical rows
            "Site": [f"s{i}" for i in range(n)],
        }
    )
    rewrite_results(client, lambda kind, header, rows: (header, rows[::-1]))
    report, outcomes = send(client, batch, object="Account", operation="insert")
    assert report.succeeded == n
    site_of = {r["Id"]: r["Site"] for r in emulator.records("Account")}
    assert all(site_of[outcomes[f"k{i}"].sf_id] == f"s{i}" for i in range(n))


# -- unit tests of the matching functions ------------------------------------------------


def strings(values: list[str | None]) -> pa.Array:
    return pa.array(values, pa.string())


def layout(operation: str, identity: str | None, fields: tuple[str, ...]) -> PayloadLayout:
    return PayloadLayout("Account", operation, identity, fields, (), True)


def describe_with(*fields: FieldDescribe) -> ObjectDescribe:
    return ObjectDescribe(name="Thing__c", fields=list(fields))


def test_result_columns_are_found_whatever_the_header_case():
    table = pa.table({"sf__Id": ["a"], "NAME": ["x"], "External_Id__C": ["e"]})
    assert result_column(table, "Name").to_pylist() == ["x"]
    assert result_column(table, "external_id__c").to_pylist() == ["e"]
    assert result_column(table, "SF__ID").to_pylist() == ["a"]
    assert result_column(table, "Site") is None
    both = pa.table({"name": ["lower"], "Name": ["exact"]})
    assert result_column(both, "Name").to_pylist() == ["exact"]  # the exact spelling first


@pytest.mark.parametrize(
    ("rule", "uploaded", "echoed"),
    [
        (TEXT, "a\x00b", "ab"),
        (TEXT_CI, "Acme-7", "ACME-7"),
        (TEXT_CI, "ac\x00me", "ACME"),
        (BOOL, "true", "TRUE"),
        (ID, "001000000000001", "001000000000001AAA"),
        (ID, "001000000000001AAA", "001000000000001"),
        (FLOAT, "1.5", "1.50"),
        (FLOAT, "1.5", "15E-1"),
        (FLOAT, "1.5", " +1.5 "),
        (FLOAT, "1e+20", "100000000000000000000"),
        (FLOAT, "1e-07", "0.0000001"),
        (FLOAT, "0.1", "0.10"),
        (FLOAT, "-0", "0.00"),
        (FLOAT, "#N/A", "#N/A"),
        (FLOAT, "", ""),
        (INT, "7", "7.0"),
        (INT, "7", "+7"),
        (INT, "7", "7E0"),
        (INT, "-12", "-12.000"),
        (INT, "9007199254740993", "9007199254740993.0"),
        (INT, "#N/A", "#N/A"),
        (DECIMAL, "1.50", "1.5"),
        (DECIMAL, "1234567890123456.78", "+1234567890123456.780"),
        (DECIMAL, "0.50", ".5"),
        (DECIMAL, "100.00", "100"),
        (DECIMAL, "-0.00", "0"),
        (DECIMAL, "-7.10", "-007.1"),
        (DECIMAL, "", ""),
        (DECIMAL, "#N/A", "#N/A"),
    ],
)
def test_an_echo_salesforce_may_render_normalises_like_the_upload(rule, uploaded, echoed):
    assert normalise_cells(strings([uploaded]), rule) == normalise_cells(strings([echoed]), rule)


@pytest.mark.parametrize(
    ("rule", "one", "other"),
    [
        (TEXT, "Acme", "ACME"),  # only External IDs fold case
        (ID, "001000000000abc", "001000000000ABC"),  # Ids are case-sensitive
        (ID, "001000000000001AAA", "001000000000002AAA"),
        (FLOAT, "1.5", "1.51"),
        (FLOAT, "1", "#N/A"),
        (INT, "9007199254740993", "9007199254740992"),  # exact beyond 2**53
        (INT, "7", "7.5"),
        (INT, "0", ""),
        (DECIMAL, "1234567890123456.78", "1234567890123456.79"),  # every digit counts
        (DECIMAL, "100", "1"),
        (DECIMAL, "-1.5", "1.5"),
        (DECIMAL, "10.5", "1.05"),
        (DECIMAL, "0", ""),
    ],
)
def test_different_values_stay_different(rule, one, other):
    assert normalise_cells(strings([one]), rule) != normalise_cells(strings([other]), rule)


def test_header_case_nul_and_numbers_in_a_whole_row_match():
    """Insert: the whole row compared; each column normalised by its type."""
    schema = pa.schema(
        [("Name", pa.string()), ("AnnualRevenue", pa.float64()), ("NumberOfEmployees", pa.int64())]
    )
    insert = layout("insert", None, tuple(schema.names))
    rules = row_rules(insert, schema, header=csv_header(insert))
    assert rules == [TEXT, FLOAT, INT]
    inputs = [strings(["A\x00", "B", "C"]), strings(["1.5", "#N/A", "2"]), strings(["3", "4", "5"])]
    results = [
        strings(["C", "A", "B"]),
        strings(["2.00", "1.50", "#N/A"]),
        strings(["5", "3", "4.0"]),
    ]
    assert match_rows(inputs, results, rules).tolist() == [2, 0, 1]
    # A value that really differs matches nothing.
    results[1] = strings(["2.01", "1.50", "#N/A"])
    assert match_rows(inputs, results, rules).tolist() == [-1, 0, 1]


def test_a_missing_result_column_matches_no_row():
    inputs = [strings(["a", "b"])]
    assert match_rows(inputs, [pa.nulls(2, pa.string())], [TEXT]).tolist() == [-1, -1]


def test_duplicate_ids_are_paired_in_turn():
    """Two updates of one record in a job: the k-th result of an Id goes to the k-th row."""
    a15, b15 = "001000000000001", "001000000000002"
    a18, b18 = a15 + "AAA", b15 + "AAA"
    inputs = [strings([a15, b15, a15, a15])]
    matched = match_rows(inputs, [strings([a18, a18, b18, a18])], [ID])
    assert matched.tolist() == [0, 2, 1, 3]
    # Fewer results than rows: the rows left over have none (they become retryable).
    matched = match_rows(inputs, [strings([b18, a18])], [ID])
    assert matched.tolist() == [1, 0]


def test_an_exact_echo_is_matched_before_an_equivalent_one():
    """Rows 0 and 1 are one record (15 and 18 characters); each result echoes its row."""
    a15 = "001000000000001"
    a18 = a15 + "AAA"
    inputs = [strings([a15, a18])]
    assert match_rows(inputs, [strings([a18, a15])], [ID]).tolist() == [1, 0]


def test_fifteen_and_eighteen_character_ids_compare_case_sensitively():
    inputs = [strings(["001000000000abc", "001000000000ABC"])]
    results = [strings(["001000000000ABCxxx", "001000000000abcyyy"])]
    assert match_rows(inputs, results, [ID]).tolist() == [1, 0]


def test_identity_rules_follow_the_describe():
    text = pa.string()
    assert identity_rule(layout("update", "Id", ("Id",)), text) == ID
    assert identity_rule(layout("delete", "id", ("id",)), text) == ID
    upsert = layout("upsert", "Key__c", ("Key__c", "Name"))
    assert identity_rule(upsert, text) == TEXT_CI  # Salesforce's default without a describe
    insensitive = describe_with(FieldDescribe(name="Key__c", type="string", externalId=True))
    assert identity_rule(upsert, text, insensitive) == TEXT_CI
    sensitive = describe_with(
        FieldDescribe(name="Key__c", type="string", externalId=True, caseSensitive=True)
    )
    assert identity_rule(upsert, text, sensitive) == TEXT
    assert identity_rule(upsert, pa.float64()) == FLOAT  # a Number External ID
    assert identity_rule(upsert, pa.int64()) == INT
    assert identity_rule(upsert, pa.decimal128(18, 0)) == DECIMAL
    assert [cell_rule(t) for t in (pa.bool_(), pa.string(), pa.decimal128(10, 2))] == [
        BOOL,
        TEXT,
        DECIMAL,
    ]


def test_external_ids_differing_in_case_only_stay_apart_when_case_sensitive():
    """Two records whose keys differ in case only, echoed without their NULs: a
    case-sensitive External ID keeps them apart, a case-insensitive one is one key, its
    results handed out in turn."""
    inputs = [strings(["ab\x00c", "AB\x00C"])]
    results = [strings(["ABC", "abc"])]
    assert match_rows(inputs, results, [TEXT]).tolist() == [1, 0]
    assert match_rows(inputs, results, [TEXT_CI]).tolist() == [0, 1]


def test_matching_stays_columnar_on_a_large_job():
    """150,000 rows whose every echo differs: both passes, still arrays only."""
    n = 150_000
    ids = [f"001{i:012d}" for i in range(n)]
    inputs = [strings(ids)]
    results = [strings([i + "AAA" for i in reversed(ids)])]
    matched = match_rows(inputs, results, [ID])
    assert np.array_equal(matched, np.arange(n)[::-1])
