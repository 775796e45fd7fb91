"""Mapping validation against describe, and the pure pieces both transports share."""

from __future__ import annotations

import io
import json

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from sf_activation.diff import payload_sql
from sf_activation.salesforce.bulk import (
    csv_cells,
    csv_header,
    match_keys,
    match_results,
    parse_bulk_error,
)
from sf_activation.salesforce.describe import ObjectDescribe, validate_mapping
from sf_activation.salesforce.errors import (
    ApiLimitError,
    AuthenticationError,
    MappingError,
    RequestError,
    SessionExpiredError,
    TransientError,
    error_from_response,
    is_retryable_record_error,
    redact,
)
from sf_activation.salesforce.outcomes import FIELDS_JSON_COLUMN, SendRequest, choose_transport
from sf_activation.salesforce.payload import PayloadLayout
from sf_activation.salesforce.record_json import RecordEncoder, collection_body
from sf_activation_tests.support.salesforce_fixtures import account_describe, widget_describe

ACCOUNT = ObjectDescribe.model_validate(account_describe())
WIDGET = ObjectDescribe.model_validate(widget_describe())
PARENTS = {"Account": ACCOUNT, "Widget__c": WIDGET}


def check(operation: str, field_map: dict[str, str], external_id: str | None = "Ext__c") -> None:
    validate_mapping(
        model="widgets",
        describe=WIDGET,
        operation=operation,
        field_map=field_map,
        external_id=external_id,
        parent_describe=PARENTS.__getitem__,
    )


def test_describe_parses_real_shapes_and_looks_up_names_case_insensitively():
    assert ACCOUNT.field("name").label == "Account Name"
    assert ACCOUNT.relationship("parent").name == "ParentId"
    assert WIDGET.target_field("Account__r.External_Id__c").name == "Account__c"
    assert [p for p in WIDGET.field("Tier__c").active_picklist_values] == [
        "Gold",
        "Silver",
        "Bronze",
    ]


def test_a_mapping_that_fits_passes():
    check(
        "upsert",
        {"key": "Ext__c", "name": "Name", "count": "Count__c", "acct": "Account__r.External_Id__c"},
    )
    check("update", {"sf_id": "Id", "name": "Name"}, external_id=None)
    check("delete", {"sf_id": "Id", "anything": "Formula__c"}, external_id=None)


@pytest.mark.parametrize(
    ("operation", "field_map", "expected"),
    [
        ("upsert", {"key": "Ext__c", "colour": "Colour__c"}, "column 'colour' → Widget__c.Colour__c: no such field"),
        ("insert", {"f": "Formula__c"}, "column 'f' → Widget__c.Formula__c: field is not createable"),
        ("update", {"i": "Id", "o": "Once__c"}, "column 'o' → Widget__c.Once__c: field is not updateable"),
        ("upsert", {"key": "Ext__c", "o": "Once__c"}, "Once__c: field is not updateable"),
        ("upsert", {"key": "Code__c"}, "Widget__c.Code__c: external_id field is not marked External ID"),
        ("upsert", {"name": "Name"}, "Widget__c.Ext__c: external_id field is not mapped"),
        ("upsert", {"key": "Ext__c", "p": "Acct__r.External_Id__c"}, "no lookup relationship named 'Acct__r'"),
        ("upsert", {"key": "Ext__c", "p": "Account__r.Nope__c"}, "no field 'Nope__c' on the parent object Account"),
        ("upsert", {"key": "Ext__c", "p": "Account__r.AccountNumber"}, "Account.AccountNumber is not an External ID field"),
        ("insert", {"i": "Id"}, "Id cannot be written by insert"),
        ("update", {"n": "Name"}, "update needs a column mapped to Id or to external_id"),
        ("upsert", {"key": "Ext__c", "a": "Name", "b": "name"}, "already mapped from column 'a'"),
        # Names as describe spells them: Bulk result headers and payload keys are Salesforce's.
        ("upsert", {"key": "Ext__c", "n": "name"}, "Widget__c.name: field names are case-sensitive here: use Name"),
        ("upsert", {"key": "Ext__c", "p": "account__r.External_Id__c"}, "use Account__r"),
        ("upsert", {"key": "Ext__c", "p": "Account__r.external_id__c"}, "use External_Id__c"),
    ],
)  # fmt: skip
def test_a_mapping_that_cannot_work_names_model_column_and_field(operation, field_map, expected):
    external_id = "Code__c" if "Code__c" in field_map.values() else "Ext__c"
    with pytest.raises(MappingError) as info:
        check(operation, field_map, external_id=external_id)
    assert expected in str(info.value)
    assert "model 'widgets'" in str(info.value)


def test_an_external_id_spelled_unlike_describe_is_refused():
    with pytest.raises(MappingError) as info:
        check("upsert", {"key": "Ext__c"}, external_id="ext__c")
    assert "Widget__c.ext__c: field names are case-sensitive here: use Ext__c" in str(info.value)


def test_every_problem_is_listed_in_one_error():
    with pytest.raises(MappingError) as info:
        check("insert", {"a": "Nope__c", "b": "Formula__c"})
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and all(line.startswith("model 'widgets'") for line in lines)


def test_errors_are_classified_by_what_the_caller_must_do():
    url = "https://x/services/data/v62.0/composite/sobjects"
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert isinstance(error_from_response(401, expired, url), SessionExpiredError)
    assert isinstance(error_from_response(503, None, url), TransientError)
    assert isinstance(
        error_from_response(500, [{"errorCode": "UNKNOWN_EXCEPTION", "message": "x"}], url),
        TransientError,
    )
    daily = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    assert isinstance(error_from_response(403, daily, url), ApiLimitError)
    concurrent = [
        {
            "errorCode": "REQUEST_LIMIT_EXCEEDED",
            "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
        }
    ]
    assert isinstance(error_from_response(403, concurrent, url), TransientError)
    bad = error_from_response(
        400, [{"errorCode": "JSON_PARSER_ERROR", "message": "Unexpected"}], url
    )
    assert isinstance(bad, RequestError) and bad.error_code == "JSON_PARSER_ERROR"
    assert isinstance(error_from_response(401, [{"errorCode": "X"}], url), AuthenticationError)
    assert is_retryable_record_error("UNABLE_TO_LOCK_ROW")
    assert is_retryable_record_error("TooManyLockFailure")
    assert not is_retryable_record_error("REQUIRED_FIELD_MISSING")  # fmt: skip


def test_tokens_are_redacted_from_messages():
    token = "00D5g000004SRh2!AQ4AQFmAx.9Yq_VyBfxv0K3r"
    text = f"failed for Bearer {token} with secret s3cr3t-value"
    cleaned = redact(text, ["s3cr3t-value"])
    assert token not in cleaned and "s3cr3t-value" not in cleaned
    error = error_from_response(400, [{"errorCode": "X", "message": f"bad {token}"}], "u")
    assert token not in str(error)


def test_transport_choice():
    assert choose_transport(9_999, "auto", 10_000) == "composite"
    assert choose_transport(10_000, "auto", 10_000) == "bulk"
    assert choose_transport(5, "bulk", 10_000) == "bulk"
    assert choose_transport(10**6, "composite", 10_000) == "composite"
    with pytest.raises(ValueError):
        choose_transport(1, "fast", 10)


def test_bulk_error_text_is_split_into_code_message_and_fields():
    assert parse_bulk_error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record:--") == (
        "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", []
    )  # fmt: skip
    code, message, fields = parse_bulk_error(
        "STRING_TOO_LONG:Widget Name: data value too large: xx (max length=80):Name --"
    )
    assert (code, fields) == ("STRING_TOO_LONG", ["Name"])
    assert message == "Widget Name: data value too large: xx (max length=80)"
    assert parse_bulk_error("Timeout") == ("Timeout", "", [])


def layout(nulls: str, operation: str = "upsert") -> tuple[PayloadLayout, pa.RecordBatch]:
    batch = pa.RecordBatch.from_pydict(
        {
            "__key": ["1", "2", "3"],
            "Ext__c": ["w1", "w,2", 'w"3'],
            "Name": ["Comma, inc", None, "line\nbreak ünï"],
            "Count__c": pa.array([1, None, 3], pa.int64()),
            "Active__c": [True, False, None],
            "Account__r.External_Id__c": ["A-1", None, "A-3"],
        }
    )
    request = SendRequest(
        object="Widget__c", operation=operation, external_id="Ext__c", nulls=nulls
    )
    return PayloadLayout.build(request, WIDGET, batch.schema), batch


def records_of(layout: PayloadLayout, batch: pa.RecordBatch) -> list[dict]:
    with RecordEncoder(layout) as encoder:
        texts = encoder.encode(batch)
    # What goes on the wire must be JSON any parser accepts, not only Python's.
    body = json.loads(collection_body(texts), parse_constant=_no_constants)
    assert body["allOrNone"] is False
    return body["records"]


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def test_composite_records_clear_or_keep_nulls_and_nest_lookups():
    cleared, batch = layout("clear")
    records = records_of(cleared, batch)
    assert records[1] == {
        "attributes": {"type": "Widget__c"},
        "Ext__c": "w,2", "Name": None, "Count__c": None, "Active__c": False,
        "Account__c": None,  # clearing a lookup nulls its reference field
    }  # fmt: skip
    assert records[0]["Account__r"] == {"External_Id__c": "A-1"}
    assert records[2]["Ext__c"] == 'w"3' and records[2]["Name"] == "line\nbreak ünï"
    assert records[2]["Active__c"] is None and records[2]["Count__c"] == 3
    kept, _ = layout("keep")
    assert records_of(kept, batch)[1] == {
        "attributes": {"type": "Widget__c"}, "Ext__c": "w,2", "Active__c": False,
    }  # fmt: skip


def test_composite_records_are_valid_json_for_awkward_values():
    batch = pa.RecordBatch.from_pydict(
        {
            "Ext__c": ["a\\b", "tab\there", "nul\x00 \x1f bell\x07", "é😀'\"}{", "x"],
            "Amount__c": pa.array([float("nan"), float("inf"), -0.0, 1e20, None]),
            "Count__c": pa.array([2**53, -1, 0, None, 7], pa.int64()),
        }
    )
    request = SendRequest(object="Widget__c", operation="upsert", external_id="Ext__c")
    records = records_of(PayloadLayout.build(request, WIDGET, batch.schema), batch)
    assert [r["Ext__c"] for r in records] == batch.column("Ext__c").to_pylist()
    # JSON has no NaN or Infinity: they go as null (coercion rejects them before this).
    assert [r["Amount__c"] for r in records] == [None, None, -0.0, 1e20, None]
    assert [r["Count__c"] for r in records] == [2**53, -1, 0, None, 7]


@pytest.mark.parametrize("nulls", ["clear", "keep"])
def test_composite_records_from_the_canonical_payload_equal_the_encoded_columns(nulls):
    # The sync hands its canonical payload (diff.payload_sql) along; with nothing to nest
    # or omit it is sent as is, and must say exactly what encoding the columns says.
    cleared, full = layout(nulls)
    batch = full.drop_columns(["Account__r.External_Id__c"])
    fields = [n for n in batch.schema.names if not n.startswith("__")]
    con = duckdb.connect()
    con.register("b", pa.Table.from_batches([batch]))
    payload = con.sql(f"SELECT {payload_sql(fields)} FROM b").to_arrow_table().column(0)
    request = SendRequest(object="Widget__c", operation="upsert", external_id="Ext__c", nulls=nulls)
    plain = PayloadLayout.build(request, WIDGET, batch.schema)
    with_json = batch.append_column(FIELDS_JSON_COLUMN, payload.combine_chunks())
    assert records_of(plain, with_json) == records_of(plain, batch)
    with RecordEncoder(plain) as encoder:
        first = encoder.encode(with_json)[0]
    if nulls == "clear":  # the payload's text itself went out (its keys are sorted)
        assert first == '{"attributes":{"type":"Widget__c"},' + payload[0].as_py()[1:]
        assert records_of(plain, with_json)[1]["Name"] is None
    else:  # `keep` omits nulls, which the payload holds: the columns were encoded
        assert first.startswith('{"attributes":{"type":"Widget__c"},"Ext__c":"w1"')
    # With a lookup to nest, the payload (which holds it flat) is not used.
    lookup_json = full.append_column(FIELDS_JSON_COLUMN, pa.array(["{}", "{}", "{}"]))
    lookup_layout = PayloadLayout.build(request, WIDGET, full.schema)
    assert records_of(lookup_layout, lookup_json) == records_of(lookup_layout, full)


def test_composite_delete_sends_ids():
    batch = pa.RecordBatch.from_pydict({"Id": ["001A", "001B"], "__key": [1, 2]})
    request = SendRequest(object="Widget__c", operation="delete")
    with RecordEncoder(PayloadLayout.build(request, WIDGET, batch.schema)) as encoder:
        assert encoder.encode(batch) == ["001A", "001B"]


def test_bulk_results_match_identical_rows_one_each():
    inputs = pa.array(["a", "b", "a", "c", "a"])
    results = pa.array(["c", "a", "a", "zz", "b", "a", "a"])
    matched = match_results(inputs, results).tolist()
    assert matched[0] == 3 and matched[4] == 1 and matched[3] == -1
    # Three "a" inputs take three "a" results, each once; the fourth "a" result is extra.
    a_rows = [matched[j] for j in (1, 2, 5, 6)]
    assert sorted(a_rows) == [-1, 0, 2, 4]


def test_bulk_csv_quotes_everything_that_needs_it_and_marks_cleared_nulls():
    cleared, batch = layout("clear")
    header = csv_header(cleared)
    assert header == [
        "Ext__c",
        "Name",
        "Count__c",
        "Active__c",
        "Account__r.External_Id__c",
        "Account__c",
    ]
    cells = csv_cells(cleared, batch)
    sink = io.BytesIO()
    pcsv.write_csv(pa.table(cells, names=header), sink)
    back = pcsv.read_csv(
        io.BytesIO(sink.getvalue()),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, strings_can_be_null=False
        ),
    )
    assert back.to_pylist() == [
        {"Ext__c": "w1", "Name": "Comma, inc", "Count__c": "1", "Active__c": "true",
         "Account__r.External_Id__c": "A-1", "Account__c": ""},
        {"Ext__c": "w,2", "Name": "#N/A", "Count__c": "#N/A", "Active__c": "false",
         "Account__r.External_Id__c": "", "Account__c": "#N/A"},
        {"Ext__c": 'w"3', "Name": "line\nbreak ünï", "Count__c": "3", "Active__c": "#N/A",
         "Account__r.External_Id__c": "A-3", "Account__c": ""},
    ]  # fmt: skip
    # Result rows are matched back by the same cells, read back from CSV.
    assert match_keys(cells).equals(match_keys([back.column(h).combine_chunks() for h in header]))
    kept, _ = layout("keep")
    assert csv_header(kept)[-1] == "Account__r.External_Id__c"
    assert csv_cells(kept, batch)[1].to_pylist() == ["Comma, inc", "", "line\nbreak ünï"]
