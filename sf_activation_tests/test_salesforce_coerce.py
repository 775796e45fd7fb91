"""Coercion to the canonical payload: Salesforce's formats, and rows rejected before sending."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from sf_activation.salesforce.coerce import coerce_batch, output_schema
from sf_activation.salesforce.describe import ObjectDescribe
from sf_activation_tests.support.salesforce_fixtures import widget_describe

WIDGET = ObjectDescribe.model_validate(widget_describe())


def coerce(column: str, values: list, sf_field: str) -> tuple[list, list, list]:
    batch = pa.RecordBatch.from_pydict({"pk": list(range(len(values))), column: pa.array(values)})
    out = coerce_batch(batch, primary_key="pk", field_map={column: sf_field}, describe=WIDGET)
    return (
        out.column(sf_field).to_pylist(),
        out.column("__error_code").to_pylist(),
        out.column("__error_message").to_pylist(),
    )


def test_integers_from_numbers_and_text_are_the_same_canonical_value():
    for values in ([1, 2, None], [1.0, 2.0, None], ["1", " 2 ", None]):
        out, codes, _ = coerce("n", values, "Count__c")
        assert out == [1, 2, None]
        assert codes == [None, None, None]


def test_integer_with_a_fraction_or_text_is_rejected_like_salesforce():
    out, codes, messages = coerce("n", ["1.5", "abc", "7"], "Count__c")
    assert out == [None, None, 7]
    assert codes == ["INVALID_TYPE_ON_FIELD_IN_RECORD"] * 2 + [None]
    assert messages[0] == "Count: value not of required type: 1.5"


def test_integer_beyond_the_fields_digits_is_out_of_range():
    _, codes, messages = coerce("n", [10**9, 10**9 - 1], "Count__c")
    assert codes == ["NUMBER_OUTSIDE_VALID_RANGE", None]
    assert "valid range" in messages[0]


def test_currency_is_rounded_to_scale_and_checked_against_precision():
    values = [1.234, decimal.Decimal("2.5"), "3.999", 10.0**14, float("nan")]
    batch = pa.RecordBatch.from_pydict(
        {"pk": [1, 2, 3, 4, 5], "p": pa.array([1.234, 2.5, 3.999, 1e14, float("nan")])}
    )
    out = coerce_batch(batch, primary_key="pk", field_map={"p": "Price__c"}, describe=WIDGET)
    D = decimal.Decimal
    assert out.column("Price__c").to_pylist() == [D("1.23"), D("2.50"), D("4.00"), None, None]
    assert out.column("__error_code").to_pylist() == [
        None, None, None, "NUMBER_OUTSIDE_VALID_RANGE", "INVALID_TYPE_ON_FIELD_IN_RECORD",
    ]  # fmt: skip
    text, codes, _ = coerce("p", [str(v) for v in values[:3]] + ["1e3", "12,5"], "Price__c")
    assert text == [D("1.23"), D("2.50"), D("4.00"), D("1000.00"), None]
    assert codes[-1] == "INVALID_TYPE_ON_FIELD_IN_RECORD"


def test_decimal_columns_keep_every_digit_at_the_field_scale():
    arr = pa.array([decimal.Decimal("12.3400"), None], pa.decimal128(10, 4))
    out, codes, _ = coerce("w", arr, "Weight__c")
    assert out == [decimal.Decimal("12.3400"), None] and codes == [None, None]


def test_booleans_from_bools_numbers_and_words():
    assert coerce("b", [True, False, None], "Active__c")[0] == [True, False, None]
    assert coerce("b", [1, 0], "Active__c")[0] == [True, False]
    out, codes, _ = coerce("b", ["TRUE", "false", " yes", "0", "maybe", ""], "Active__c")
    assert out == [True, False, True, False, None, None]
    assert codes == [None] * 4 + ["INVALID_TYPE_ON_FIELD_IN_RECORD", None]
    assert coerce("b", [2, 1], "Active__c")[1] == ["INVALID_TYPE_ON_FIELD_IN_RECORD", None]


def test_dates_in_salesforce_format_and_impossible_dates_rejected():
    out, codes, messages = coerce(
        "d", ["2024-01-31", "2024-02-30", "2024-03-04T10:00:00Z", "31/01/2024", None], "Launch__c"
    )
    assert out == ["2024-01-31", None, "2024-03-04", None, None]
    assert codes == [None, "INVALID_TYPE_ON_FIELD_IN_RECORD", None,
                     "INVALID_TYPE_ON_FIELD_IN_RECORD", None]  # fmt: skip
    assert messages[1] == "Launch: value not of required type: 2024-02-30"
    native = coerce("d", [dt.date(2024, 5, 6), None], "Launch__c")[0]
    assert native == ["2024-05-06", None]


def test_datetimes_become_utc_with_milliseconds_and_z():
    texts = [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05.123+01:00",
        "2024-01-02 03:04",
        "2024-01-02",
        "2024-13-01T00:00:00",
        "yesterday",
    ]
    out, codes, _ = coerce("s", texts, "Seen__c")
    assert out == [
        "2024-01-02T03:04:05.000Z",
        "2024-01-02T02:04:05.123Z",
        "2024-01-02T03:04:00.000Z",
        "2024-01-02T00:00:00.000Z",
        None,
        None,
    ]
    assert codes[4:] == ["INVALID_TYPE_ON_FIELD_IN_RECORD"] * 2
    aware = pa.array(
        [dt.datetime(2024, 6, 1, 12, 0, 0, 250_000, tzinfo=dt.timezone(dt.timedelta(hours=-5)))]
    )
    assert coerce("s", aware, "Seen__c")[0] == ["2024-06-01T17:00:00.250Z"]
    naive = pa.array([dt.datetime(2024, 6, 1, 12, 0, 0, 999_999)], pa.timestamp("us"))
    assert coerce("s", naive, "Seen__c")[0] == ["2024-06-01T12:00:00.999Z"]


def test_restricted_picklists_reject_unknown_values():
    out, codes, messages = coerce("t", ["Gold", "Platinum", None], "Tier__c")
    assert out == ["Gold", None, None]
    assert codes == [None, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", None]
    assert messages[1] == "Tier: bad value for restricted picklist field: Platinum"


def test_multi_select_picklists_are_semicolon_joined_and_each_value_checked():
    lists = pa.array([["EU", "US"], ["APAC"], ["EU", "Mars"], None])
    out, codes, _ = coerce("r", lists, "Regions__c")
    assert out == ["EU;US", "APAC", None, None]
    assert codes == [None, None, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", None]
    assert coerce("r", ["EU;US", "XX"], "Regions__c")[1] == [
        None,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    ]


def test_strings_checked_against_length_and_empty_means_null():
    out, codes, messages = coerce("c", ["short", "much too long", "", "ünïcødé"], "Code__c")
    assert out == ["short", None, None, "ünïcødé"]
    assert codes == [None, "STRING_TOO_LONG", None, None]
    assert messages[1] == "Code: data value too large: much too long (max length=10)"
    # numbers written to a text field: integral floats do not grow a ".0"
    assert coerce("c", [42, 3.5], "Code__c")[0] == ["42", "3.5"]


def test_reference_fields_must_look_like_ids():
    out, codes, _ = coerce("a", ["001000000000001AAA", "001000000000001", "nope"], "Account__c")
    # A 15-character Id is the same record as its 18-character form, which it becomes.
    assert out[:2] == ["001000000000001AAA", "001000000000001AAA"]
    assert codes == [None, None, "MALFORMED_ID"]


def test_lookup_by_external_id_stays_text_under_its_dotted_name():
    out, codes, _ = coerce("parent", ["A-1", None, "17"], "Account__r.External_Id__c")
    assert out == ["A-1", None, "17"] and codes == [None, None, None]
    assert coerce("parent", [17, None], "Account__r.External_Id__c")[0] == ["17", None]


def test_first_error_of_a_row_wins_and_good_rows_are_untouched():
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["k1", "k2", None],
            "name": ["ok", "x" * 81, "ok"],
            "count": ["1", "bad", "3"],
        }
    )
    mapping = {"id": "Ext__c", "name": "Name", "count": "Count__c"}
    out = coerce_batch(batch, primary_key="id", field_map=mapping, describe=WIDGET)
    assert out.schema == output_schema(mapping, WIDGET)
    rows = out.to_pylist()
    assert rows[0] == {
        "__pk": "k1", "__error_code": None, "__error_message": None,
        "Ext__c": "k1", "Name": "ok", "Count__c": 1,
    }  # fmt: skip
    assert rows[1]["__error_code"] == "STRING_TOO_LONG"
    assert rows[1]["__error_message"].startswith("Widget Name: data value too large")
    assert rows[2]["__pk"] is None  # a null key stays null: the diff marks it invalid


@pytest.mark.parametrize("kind", [pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
def test_other_string_encodings_are_accepted(kind):
    arr = pa.array(["Gold", "Silver"]).cast(kind)
    assert coerce("t", arr, "Tier__c")[0] == ["Gold", "Silver"]


def test_eighteen_digits_are_kept_exactly_from_decimals_text_and_integers():
    D = decimal.Decimal
    out, codes, _ = coerce(
        "w",
        pa.array([D("12345678901234.5678"), D("-0.00005")], pa.decimal128(20, 5)),
        "Weight__c",
    )
    assert out == [D("12345678901234.5678"), D("-0.0001")] and codes == [None, None]
    out, codes, _ = coerce("w", ["12345678901234.56789", "1e-4", " 7 "], "Weight__c")
    assert out == [D("12345678901234.5679"), D("0.0001"), D("7.0000")]
    out, codes, _ = coerce("p", [9007199254740993, 10**14], "Price__c")
    assert out == [None, None] and codes == ["NUMBER_OUTSIDE_VALID_RANGE"] * 2  # 14 digits max
    out, codes, _ = coerce("p", [99999999999999, None], "Price__c")
    assert out == [D("99999999999999.00"), None] and codes == [None, None]


def test_a_number_beyond_the_precision_names_the_field_and_the_limit():
    out, codes, messages = coerce("p", ["123456789012345.5", "1" + "0" * 40], "Price__c")
    assert codes == ["NUMBER_OUTSIDE_VALID_RANGE"] * 2
    assert messages[0] == (
        "Price: value outside of valid range on numeric field: 123456789012345.5 "
        "(at most 14 digits before the decimal point and 2 after)"
    )
    assert out == [None, None]


def test_multi_select_values_are_sorted_once_each_and_null_elements_dropped():
    out, codes, _ = coerce(
        "r", [["US", "EU"], ["EU", None], ["US", "US"], [None], None], "Regions__c"
    )
    assert out == ["EU;US", "EU", "US", None, None] and codes == [None] * 5
    out, _, _ = coerce("r", ["US;EU", "APAC;;EU", ""], "Regions__c")
    assert out == ["EU;US", "APAC;EU", None]


def test_nul_characters_are_dropped_as_salesforce_drops_them():
    out, codes, _ = coerce("n", ["a\x00b", "\x00", "plain"], "Notes__c")
    assert out == ["ab", None, "plain"] and codes == [None] * 3


def test_dates_outside_the_years_salesforce_holds_are_refused():
    out, codes, messages = coerce(
        "d",
        [dt.date(1699, 12, 31), dt.date(1700, 1, 1), dt.date(4000, 12, 31), dt.date(4001, 1, 1)],
        "Launch__c",
    )
    assert out == [None, "1700-01-01", "4000-12-31", None]
    assert codes == [
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        None,
        None,
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
    ]
    assert "years 1700 to 4000" in messages[0]
    out, codes, _ = coerce("s", ["0001-01-01T00:00:00Z", "2024-05-01T10:00:00Z"], "Seen__c")
    assert (
        out == [None, "2024-05-01T10:00:00.000Z"] and codes[0] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    )
