"""Numbers keep every digit Salesforce keeps.

Number, Currency and Percent fields hold up to 18 digits exactly; a float64 keeps 15 to
17, so `1234567890123456.78` used to be sent as `...456.8` and a change in the last digit
was never seen. Values are now exact decimals at the field's scale through the diff and
both transports, and one beyond the field's precision is refused before it is sent.
Real command, emulator over HTTPS, DuckDB warehouse.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sf_activation.diff import payload_sql
from sf_activation.salesforce.coerce import coerce_batch
from sf_activation.salesforce.describe import FieldDescribe, ObjectDescribe
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

MODEL = """
object: Account
operation: upsert
primary_key: account_id
external_id: External_Id__c
query: SELECT account_id, name, revenue, latitude FROM accounts
transport: {transport}
fields:
  account_id: External_Id__c
  name: Name
  revenue: AnnualRevenue
  latitude: BillingLatitude
"""

# AnnualRevenue is Currency(18, 0) and BillingLatitude Number(18, 15) in Salesforce.
REVENUES = ["123456789012345678", "9007199254740993", "1234567.5"]
LATITUDES = ["12.123456789012345", "-89.999999999999999", "0.1"]


def _exact_records(emulator: EmulatorHandle) -> dict[str, dict]:
    """Accounts as SOQL returns them, numbers parsed as exact decimals."""
    response = emulator.http.get(
        emulator.url("/services/data/v62.0/query"),
        params={"q": "SELECT External_Id__c, AnnualRevenue, BillingLatitude FROM Account"},
        timeout=30,
    )
    response.raise_for_status()
    body = json.loads(response.text, parse_float=Decimal, parse_int=Decimal)
    return {r["External_Id__c"]: r for r in body["records"]}


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_eighteen_digit_values_are_sent_and_stored_exactly(
    tmp_path: Path, emulator: EmulatorHandle, transport: str
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts (account_id VARCHAR, name VARCHAR, revenue DECIMAL(19, 1), latitude DECIMAL(18, 15))"
    )
    for i, (revenue, latitude) in enumerate(zip(REVENUES, LATITUDES, strict=True)):
        ws.sql(
            "INSERT INTO accounts VALUES (?, ?, ?::DECIMAL(19, 1), ?::DECIMAL(18, 15))",
            [f"N-{i}", f"Numbers {i}", revenue, latitude],
        )
    ws.model("m", MODEL.format(transport=transport))
    first = ws.sync("m")
    assert first["succeeded"] == 3, first
    held = _exact_records(emulator)
    # 1234567.5 rounds half away from zero at scale 0, as Salesforce does on save.
    assert [held[f"N-{i}"]["AnnualRevenue"] for i in range(3)] == [
        Decimal("123456789012345678"), Decimal("9007199254740993"), Decimal("1234568"),
    ]  # fmt: skip
    assert [held[f"N-{i}"]["BillingLatitude"] for i in range(3)] == [Decimal(v) for v in LATITUDES]

    # A change in the 18th digit is a change: float64 saw the same number both times.
    ws.sql(
        "UPDATE accounts SET revenue = 123456789012345679, "
        "latitude = 12.123456789012346 WHERE account_id = 'N-0'"
    )
    second = ws.sync("m")
    assert second["changed"] == 1 and second["sent"] == 1, second
    held = _exact_records(emulator)
    assert held["N-0"]["AnnualRevenue"] == Decimal("123456789012345679")
    assert held["N-0"]["BillingLatitude"] == Decimal("12.123456789012346")
    assert ws.sync("m")["sent"] == 0  # and stays settled


def test_a_value_beyond_the_field_precision_is_refused_before_sending(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT * FROM (VALUES "
        "('ok', 'Fits', 999999999999999999::DECIMAL(20, 0), 1.5), "
        "('big', 'Too big', 1000000000000000000::DECIMAL(20, 0), 1.5), "
        "('lat', 'Too far', 1::DECIMAL(20, 0), 1000.0)"
        ") t(account_id, name, revenue, latitude)"
    )
    ws.model("m", MODEL.format(transport="composite"))
    calls = ws.write_calls()
    summary = ws.sync("m")
    assert summary["succeeded"] == 1 and summary["invalid"] == 2, summary
    rejects = {r["primary_key"]: r for r in ws.rejects(summary)}
    assert rejects["big"]["error_code"] == "NUMBER_OUTSIDE_VALID_RANGE"
    assert "Annual Revenue" in rejects["big"]["message"]
    assert "at most 18 digits before the decimal point" in rejects["big"]["message"]
    assert "at most 3 digits before the decimal point" in rejects["lat"]["message"]
    assert ws.write_calls() == calls + 1  # the refused rows were never sent
    assert set(ws.records_by("Account")) == {"ok"}


def _old_float_hash(values: list[float | None]) -> list[str]:
    """The hash a float64 column had before numbers were exact."""
    con = duckdb.connect()
    con.register("t", pa.table({"Amount": pa.array(values, pa.float64())}))
    rows = con.sql("SELECT md5(json_object('Amount', \"Amount\")::VARCHAR) FROM t").fetchall()
    return [r[0] for r in rows]


def test_a_model_synced_with_float_numbers_hashes_the_same_now() -> None:
    """State written before numbers were exact holds hashes of float64 payloads: every value
    a float kept exactly must hash the same now, or an unchanged model re-sends every row.
    Only values a float had corrupted hash differently (and are sent once, correctly)."""
    amount = FieldDescribe(name="Amount", type="currency", precision=18, scale=2, label="Amount")
    describe = ObjectDescribe(name="Opportunity", fields=[amount])
    kept = [0.1, 1.5, 100.0, 2.25, -7.01, 0.0, 1234567890123.45, 99999999.99, None, 1e15, 5e-2]
    lost = [Decimal("1234567890123456.78"), Decimal("99999999999999.99")]
    source = pa.array([None if v is None else Decimal(repr(v)) for v in kept] + lost)
    batch = pa.RecordBatch.from_pydict({"pk": list(range(len(source))), "amount": source})
    canon = coerce_batch(batch, primary_key="pk", field_map={"amount": "Amount"}, describe=describe)
    con = duckdb.connect()
    con.register("c", pa.Table.from_batches([canon]))
    new = [
        r[0]
        for r in con.sql(
            f"SELECT md5({payload_sql(['Amount'], decimals={'Amount': 2})}) FROM c"
        ).fetchall()
    ]
    assert new[: len(kept)] == _old_float_hash(kept)
    old_lost = _old_float_hash([float(v) for v in lost])
    assert all(n != o for n, o in zip(new[len(kept) :], old_lost, strict=True))
    texts = [
        r[0]
        for r in con.sql(
            f"SELECT {payload_sql(['Amount'], decimals={'Amount': 2})} FROM c"
        ).fetchall()
    ]
    assert texts[len(kept) :] == ['{"Amount":1234567890123456.78}', '{"Amount":99999999999999.99}']
    assert new[len(kept)] == hashlib.md5(texts[len(kept)].encode()).hexdigest()


# The canonical payloads of these rows, byte for byte, as state written by earlier
# versions holds their md5: a change to how payloads are built must leave every one as
# it is, or every unchanged row of a synced model would be sent again.
_PINNED_ROWS = pa.table(
    {
        "Name": pa.array(['q"uote', "back\\slash", "é🎉\u2028", None, "\x01tab\t"]),
        "NumberOfEmployees": pa.array([2**63 - 1, -(2**63), 2**53 + 1, None, 0], pa.int64()),
        "Ratio__c": pa.array([0.1, -0.0, 1e21, None, 5e-324]),
        "Active__c": pa.array([True, False, None, True, False]),
        "Amount": pa.array(
            [Decimal("1.50"), Decimal("9999999999999.99"), Decimal("10000000000000.00"), None,
             Decimal("1234567890123456.78")],
            pa.decimal128(38, 2),
        ),
        "AnnualRevenue": pa.array(
            [Decimal("5"), Decimal("999999999999999"), Decimal("1000000000000000"),
             Decimal("-999999999999999"), None],
            pa.decimal128(38, 0),
        ),
        "Tiny__c": pa.array(
            [Decimal("0.0000000000000001"), None, Decimal("12.5"), Decimal("0"),
             Decimal("-1.0000000000000001")],
            pa.decimal128(38, 16),
        ),
    }
)  # fmt: skip
_PINNED = {
    "every field": (
        {"Amount": 2, "AnnualRevenue": 0, "Tiny__c": 16},
        (),
        [
            '{"Active__c":true,"Amount":1.5,"AnnualRevenue":5.0,"Name":"q\\"uote",'
            '"NumberOfEmployees":9223372036854775807,"Ratio__c":0.1,"Tiny__c":1e-16}',
            '{"Active__c":false,"Amount":9999999999999.99,"AnnualRevenue":999999999999999.0,'
            '"Name":"back\\\\slash","NumberOfEmployees":-9223372036854775808,"Ratio__c":-0.0,'
            '"Tiny__c":null}',
            '{"Active__c":null,"Amount":10000000000000.0,"AnnualRevenue":1000000000000000.0,'
            '"Name":"é🎉\u2028","NumberOfEmployees":9007199254740993,"Ratio__c":1e21,'
            '"Tiny__c":12.5}',
            '{"Active__c":true,"Amount":null,"AnnualRevenue":-999999999999999.0,"Name":null,'
            '"NumberOfEmployees":null,"Ratio__c":null,"Tiny__c":0.0}',
            '{"Active__c":false,"Amount":1234567890123456.78,"AnnualRevenue":null,'
            '"Name":"\\u0001tab\\t","NumberOfEmployees":0,"Ratio__c":5e-324,'
            '"Tiny__c":-1.0000000000000001}',
        ],
    ),
    "scales a float keeps": (
        {"Amount": 2, "AnnualRevenue": 0},
        (),
        [
            '{"Active__c":true,"Amount":1.5,"AnnualRevenue":5.0,"Name":"q\\"uote",'
            '"NumberOfEmployees":9223372036854775807,"Ratio__c":0.1}',
            '{"Active__c":false,"Amount":9999999999999.99,"AnnualRevenue":999999999999999.0,'
            '"Name":"back\\\\slash","NumberOfEmployees":-9223372036854775808,"Ratio__c":-0.0}',
            '{"Active__c":null,"Amount":10000000000000.0,"AnnualRevenue":1000000000000000.0,'
            '"Name":"é🎉\u2028","NumberOfEmployees":9007199254740993,"Ratio__c":1e21}',
            '{"Active__c":true,"Amount":null,"AnnualRevenue":-999999999999999.0,"Name":null,'
            '"NumberOfEmployees":null,"Ratio__c":null}',
            '{"Active__c":false,"Amount":1234567890123456.78,"AnnualRevenue":null,'
            '"Name":"\\u0001tab\\t","NumberOfEmployees":0,"Ratio__c":5e-324}',
        ],
    ),
    "a redacted decimal": (
        {"Amount": 2, "AnnualRevenue": 0},
        ("Amount",),
        [
            '{"Amount":"***REDACTED***","AnnualRevenue":5.0,"Name":"q\\"uote"}',
            '{"Amount":"***REDACTED***","AnnualRevenue":999999999999999.0,"Name":"back\\\\slash"}',
            '{"Amount":"***REDACTED***","AnnualRevenue":1000000000000000.0,"Name":"é🎉\u2028"}',
            '{"Amount":null,"AnnualRevenue":-999999999999999.0,"Name":null}',
            '{"Amount":"***REDACTED***","AnnualRevenue":null,"Name":"\\u0001tab\\t"}',
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(_PINNED))
def test_canonical_payloads_are_byte_for_byte_what_state_was_hashed_from(case: str) -> None:
    decimals, redact, expected = _PINNED[case]
    fields = sorted({"Name", "NumberOfEmployees", "Ratio__c", "Active__c", *decimals} - (
        {"NumberOfEmployees", "Ratio__c", "Active__c"} if redact else set()
    ))  # fmt: skip
    con = duckdb.connect()
    con.register("t", _PINNED_ROWS)
    sql = payload_sql(fields, redact=redact, decimals=decimals)
    texts = [r[0] for r in con.sql(f"SELECT {sql} FROM t").fetchall()]
    assert texts == expected
    hashes = [r[0] for r in con.sql(f"SELECT md5({sql}) FROM t").fetchall()]
    assert hashes == [hashlib.md5(t.encode()).hexdigest() for t in expected]
