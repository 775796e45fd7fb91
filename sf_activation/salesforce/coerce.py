"""One canonical payload for both transports, computed column-wise with pyarrow.compute.

`coerce_batch` turns a warehouse batch into the values Salesforce will store, typed per
describe (see docs/internals.md for the output contract). Rows with a value that cannot
be coerced get `__error_code`/`__error_message` in Salesforce's own shapes and are never
sent. Python runs per row only to format messages for those rare rows.

Both transports serialise from these canonical columns (`record_json.RecordEncoder`
and `bulk.csv_cells`), so the same row becomes the same record either way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from decimal import ROUND_HALF_UP, Context, Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.salesforce.describe import FieldDescribe, ObjectDescribe

PK_COLUMN = "__pk"
ERROR_CODE_COLUMN = "__error_code"
ERROR_MESSAGE_COLUMN = "__error_message"

INVALID_TYPE = "INVALID_TYPE_ON_FIELD_IN_RECORD"
STRING_TOO_LONG = "STRING_TOO_LONG"
RESTRICTED_PICKLIST = "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
OUT_OF_RANGE = "NUMBER_OUTSIDE_VALID_RANGE"
MALFORMED_ID = "MALFORMED_ID"

INT_TYPES = {"int"}
# Canonical decimals are decimal128(38, scale): any Salesforce precision (at most 18) fits.
DECIMAL_PRECISION = 38
# The scale values are parsed at before rounding to the field's: room for 20 integer digits
# (more is outside every field's range) and 18 decimals.
_WORK_SCALE = 18
_WORK_TYPE = pa.decimal128(DECIMAL_PRECISION, _WORK_SCALE)
FLOAT_TYPES = {"double", "currency", "percent"}
ID_TYPES = {"id", "reference"}

_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ID_RE = r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_DATETIME_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
_ZONE_RE = r"(Z|[+-]\d{2}:?\d{2})$"
# The years a Salesforce date or datetime field holds.
MIN_YEAR, MAX_YEAR = 1700, 4000
_TRUE = ["true", "1", "yes", "y", "t"]
_FALSE = ["false", "0", "no", "n", "f"]


def exact_scale(field: FieldDescribe | None) -> int | None:
    """The scale a Number, Currency or Percent field's values are kept at exactly, or None
    when describe gives no precision (then they are float64)."""
    if field is None or field.type not in FLOAT_TYPES or field.precision <= 0:
        return None
    return max(field.scale, 0)


def canonical_type(field: FieldDescribe | None) -> pa.DataType:
    """Arrow type of a field's canonical column (lookups and unknown types are strings)."""
    if field is None:
        return pa.string()
    if field.type in INT_TYPES:
        return pa.int64()
    if field.type in FLOAT_TYPES:
        scale = exact_scale(field)
        # Salesforce keeps up to 18 digits; float64 keeps 15 to 17, so `...456.78` would be
        # sent as `...456.8`. A decimal at the field's scale keeps every digit.
        return pa.float64() if scale is None else pa.decimal128(DECIMAL_PRECISION, scale)
    if field.type == "boolean":
        return pa.bool_()
    return pa.string()


class _Bad:
    """Rows of one column that failed, with how to describe them."""

    def __init__(self, mask: pa.Array, code: str, message: Callable[[object], str]) -> None:
        self.mask = mask
        self.code = code
        self.message = message


def _plain(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _datetime_text(ts: pa.Array) -> pa.Array:
    """Timestamps as `YYYY-MM-DDTHH:MM:SS.sssZ` in UTC (naive values are taken as UTC)."""
    utc = pc.cast(ts, pa.timestamp(ts.type.unit, tz="UTC"))
    return pc.strftime(
        pc.cast(utc, pa.timestamp("ms", tz="UTC"), safe=False), format="%Y-%m-%dT%H:%M:%SZ"
    )


def to_text(arr: pa.Array) -> pa.Array:
    """Any Arrow column as strings, with dates and datetimes in Salesforce's formats."""
    arr = _plain(arr)
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_timestamp(t):
        return _datetime_text(arr)
    if pa.types.is_date(t):
        return pc.strftime(pc.cast(arr, pa.date32()), format="%Y-%m-%d")
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pc.binary_join(pc.cast(arr, pa.list_(pa.string())), ";")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pc.cast(pc.cast(arr, pa.binary()), pa.string())
    return pc.cast(arr, pa.string())


def _empty_to_null(text: pa.Array) -> pa.Array:
    # An empty string means "no value" in both transports (Bulk ignores empty cells), so
    # it is made null here and follows the model's `nulls` setting like any null.
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _not(mask: pa.Array) -> pa.Array:
    return pc.fill_null(pc.invert(mask), False)


def _length_bad(name: str, text: pa.Array, length: int) -> _Bad | None:
    if length <= 0:
        return None
    return _Bad(
        pc.fill_null(pc.greater(pc.utf8_length(text), length), False),
        STRING_TOO_LONG,
        lambda v: f"{name}: data value too large: {_shorten(v)} (max length={length})",
    )


def _shorten(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _type_bad(name: str, mask: pa.Array) -> _Bad:
    return _Bad(
        pc.fill_null(mask, False),
        INVALID_TYPE,
        lambda v: f"{name}: value not of required type: {_shorten(v)}",
    )


def _numbers(arr: pa.Array, name: str) -> tuple[pa.Array, list[_Bad]]:
    """float64 values of a numeric, decimal or text column; text that is not a number is bad."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = pc.cast(arr, pa.float64(), safe=False)
        bad = pc.invert(pc.is_finite(values))
        return pc.if_else(bad, pa.scalar(None, pa.float64()), values), [_type_bad(name, bad)]
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.float64()), []
    text = _empty_to_null(pc.utf8_trim_whitespace(to_text(arr)))
    ok = pc.match_substring_regex(text, _NUMBER_RE)
    values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())
    bad = pc.or_(_not(ok), pc.fill_null(pc.invert(pc.is_finite(values)), False))
    bad = pc.and_(bad, pc.is_valid(text))
    return pc.if_else(bad, pa.scalar(None, pa.float64()), values), [_type_bad(name, bad)]


def _range_bad(name: str, values: pa.Array, integer_digits: int) -> _Bad | None:
    if integer_digits <= 0:
        return None
    limit = 10.0**integer_digits
    return _Bad(
        pc.fill_null(pc.greater_equal(pc.abs(values), limit), False),
        OUT_OF_RANGE,
        lambda v: f"{name}: value outside of valid range on numeric field: {_shorten(v)}",
    )


def _coerce_int(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    name = field.name
    if pa.types.is_integer(arr.type):
        values = pc.cast(arr, pa.int64(), safe=False)
        bads: list[_Bad] = []
        if pa.types.is_uint64(arr.type):
            bads.append(
                _Bad(
                    pc.fill_null(pc.less(values, 0), False),
                    OUT_OF_RANGE,
                    lambda v: f"{name}: value outside of valid range on numeric field: {v}",
                )
            )
    elif pa.types.is_boolean(arr.type):
        return pa.nulls(len(arr), pa.int64()), [_type_bad(name, pc.is_valid(arr))]
    else:
        floats, bads = _numbers(arr, name)
        fractional = pc.fill_null(pc.not_equal(floats, pc.floor(floats)), False)
        too_big = pc.fill_null(pc.greater_equal(pc.abs(floats), 2.0**63), False)
        bad = pc.or_(fractional, too_big)
        bads.append(_type_bad(name, bad))
        values = pc.cast(
            pc.if_else(bad, pa.scalar(None, pa.float64()), floats), pa.int64(), safe=False
        )
    digits = field.digits or field.precision
    range_bad = _range_bad(name, pc.cast(values, pa.float64()), digits)
    if range_bad:
        bads.append(range_bad)
    return values, bads


def _coerce_float(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    name = field.name
    if pa.types.is_boolean(arr.type):
        return pa.nulls(len(arr), canonical_type(field)), [_type_bad(name, pc.is_valid(arr))]
    scale = exact_scale(field)
    if scale is not None:
        return _coerce_decimal(arr, field, scale)
    values, bads = _numbers(arr, name)
    if field.precision > 0:
        range_bad = _range_bad(name, values, field.precision - field.scale)
        if range_bad:
            bads.append(range_bad)
    return values, bads


def _coerce_decimal(arr: pa.Array, field: FieldDescribe, scale: int) -> tuple[pa.Array, list[_Bad]]:
    """Exact values at the field's scale: decimals and integers as they are, text parsed
    exactly, floats by their shortest text (0.1 is 0.1, not 0.1000000000000000055)."""
    name = field.name
    integer_digits = field.precision - scale
    t = arr.type
    bads: list[_Bad] = []
    none = pa.scalar(None, _WORK_TYPE)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), canonical_type(field)), []
    if pa.types.is_floating(t):
        floats = pc.cast(arr, pa.float64())
        bad = pc.fill_null(pc.invert(pc.is_finite(floats)), False)
        bads.append(_type_bad(name, bad))
        # From 20 integer digits on, a value is outside every field's range; keeping it out of
        # the parse keeps the parse vectorised.
        huge = pc.fill_null(pc.greater_equal(pc.abs(floats), 1e19), False)
        keep = pc.and_(pc.invert(bad), pc.invert(huge))
        work = _parse_decimals(pc.if_else(keep, pc.cast(floats, pa.string()), None))
        work = pc.if_else(huge, pa.scalar(Decimal(10) ** 19, _WORK_TYPE), work)
    elif pa.types.is_integer(t) or (
        pa.types.is_decimal(t) and t.scale <= _WORK_SCALE and t.precision - t.scale <= 20
    ):
        work = pc.cast(arr, _WORK_TYPE)
    elif pa.types.is_decimal(t):
        work = _parse_decimals(pc.cast(arr, pa.string()))
    else:
        text = _empty_to_null(pc.utf8_trim_whitespace(to_text(arr)))
        ok = pc.fill_null(pc.match_substring_regex(text, _NUMBER_RE), False)
        bad = pc.and_(pc.is_valid(text), pc.invert(ok))
        bads.append(_type_bad(name, bad))
        work = _parse_decimals(pc.if_else(ok, text, pa.scalar(None, pa.string())))
    # Salesforce rounds to the field's scale on save, half away from zero; doing it here
    # keeps the diff from seeing 1.234 vs a stored 1.23 as a change every run.
    work = pc.round(work, ndigits=scale, round_mode="half_towards_infinity")
    if integer_digits > 0:
        limit = pa.scalar(Decimal(10) ** integer_digits, _WORK_TYPE)
        out = pc.fill_null(pc.greater_equal(pc.abs(work), limit), False)
        bads.append(
            _Bad(
                out,
                OUT_OF_RANGE,
                lambda v: (
                    f"{name}: value outside of valid range on numeric field: {_shorten(v)} "
                    f"(at most {integer_digits} digits before the decimal point and {scale} "
                    "after)"
                ),
            )
        )
        work = pc.if_else(out, none, work)
    return pc.cast(work, canonical_type(field)), bads


_EXACT = Context(prec=DECIMAL_PRECISION + 2)


def _parse_decimals(text: pa.Array) -> pa.Array:
    """Number text (already checked to be numbers) as exact `_WORK_TYPE` decimals; a value
    with more digits than that holds is parsed per value and rounded (rare)."""
    try:
        return pc.cast(text, _WORK_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    quantum = Decimal(1).scaleb(-_WORK_SCALE)
    cap = Decimal(10) ** 19  # beyond every range: reported as out of range, not parsed
    out: list[Decimal | None] = []
    for value in text.to_pylist():
        if value is None:
            out.append(None)
            continue
        number = Decimal(value)
        if abs(number) >= cap:
            out.append(cap)
        else:
            out.append(number.quantize(quantum, rounding=ROUND_HALF_UP, context=_EXACT))
    return pa.array(out, _WORK_TYPE)


def _coerce_bool(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    t = arr.type
    if pa.types.is_boolean(t):
        return arr, []
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.bool_()), []
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        num = pc.cast(arr, pa.float64(), safe=False)
        bad = pc.invert(pc.is_in(num, value_set=pa.array([0.0, 1.0])))
        values = pc.if_else(bad, pa.scalar(None, pa.bool_()), pc.equal(num, 1.0))
        return values, [_type_bad(field.name, pc.and_(bad, pc.is_valid(arr)))]
    text = _empty_to_null(pc.utf8_lower(pc.utf8_trim_whitespace(to_text(arr))))
    is_true = pc.is_in(text, value_set=pa.array(_TRUE))
    is_false = pc.is_in(text, value_set=pa.array(_FALSE))
    bad = pc.and_(pc.is_valid(text), pc.invert(pc.or_(is_true, is_false)))
    values = pc.if_else(bad, pa.scalar(None, pa.bool_()), is_true)
    values = pc.if_else(pc.is_valid(text), values, pa.scalar(None, pa.bool_()))
    return values, [_type_bad(field.name, bad)]


def _year_bad(name: str, text: pa.Array) -> _Bad:
    """Dates and datetimes Salesforce cannot hold: it keeps years 1700 to 4000 only."""
    year = pc.cast(pc.utf8_slice_codeunits(text, 0, 4), pa.int32(), safe=False)
    outside = pc.or_(pc.less(year, MIN_YEAR), pc.greater(year, MAX_YEAR))
    return _Bad(
        pc.fill_null(outside, False),
        INVALID_TYPE,
        lambda v: (
            f"{name}: value not of required type: {_shorten(v)} "
            f"(Salesforce holds years {MIN_YEAR} to {MAX_YEAR})"
        ),
    )


def _coerce_date(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    values, bads = _parse_date(arr, field)
    return values, [*bads, _year_bad(field.name, values)]


def _parse_date(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    t = arr.type
    if pa.types.is_date(t):
        return to_text(arr), []
    if pa.types.is_timestamp(t):
        return pc.strftime(pc.cast(arr, pa.date32()), format="%Y-%m-%d"), []
    text = _empty_to_null(pc.utf8_trim_whitespace(to_text(arr)))
    # Accept a datetime's date part, as Salesforce does for date fields.
    head = pc.utf8_slice_codeunits(text, 0, 10)
    parsed = pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime is lenient (2024-02-30 → 2024-03-01): the round trip must give the input back.
    canonical = pc.strftime(parsed, format="%Y-%m-%d")
    shaped = pc.match_substring_regex(text, r"^\d{4}-\d{2}-\d{2}([T ].*)?$")
    ok = pc.and_(pc.fill_null(pc.equal(canonical, head), False), pc.fill_null(shaped, False))
    bad = pc.and_(pc.is_valid(text), pc.invert(ok))
    return pc.if_else(ok, canonical, pa.scalar(None, pa.string())), [_type_bad(field.name, bad)]


def _coerce_datetime(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    values, bads = _parse_datetime(arr, field)
    return values, [*bads, _year_bad(field.name, values)]


def _parse_datetime(arr: pa.Array, field: FieldDescribe) -> tuple[pa.Array, list[_Bad]]:
    t = arr.type
    if pa.types.is_timestamp(t):
        return _datetime_text(arr), []
    if pa.types.is_date(t):
        return _datetime_text(pc.cast(pc.cast(arr, pa.date32()), pa.timestamp("s"))), []
    text = _empty_to_null(pc.utf8_trim_whitespace(to_text(arr)))
    shaped = pc.fill_null(pc.match_substring_regex(text, _DATETIME_RE), False)
    zoned = pc.and_(shaped, pc.fill_null(pc.match_substring_regex(text, _ZONE_RE), False))
    naive = pc.and_(shaped, pc.invert(zoned))
    none = pa.scalar(None, pa.string())
    try:
        with_zone = pc.cast(pc.if_else(zoned, text, none), pa.timestamp("us", tz="UTC"))
        without = pc.cast(
            pc.cast(pc.if_else(naive, text, none), pa.timestamp("us")), pa.timestamp("us", tz="UTC")
        )
        parsed = pc.coalesce(with_zone, without)
    except pa.ArrowInvalid:
        parsed = _parse_datetimes_slowly(pc.if_else(shaped, text, none))
    values = _datetime_text(parsed)
    bad = pc.and_(pc.is_valid(text), pc.is_null(values))
    return values, [_type_bad(field.name, bad)]


def _parse_datetimes_slowly(text: pa.Array) -> pa.Array:
    """Per-value parse, only reached when a well-shaped value is still impossible (month 13)."""
    from datetime import datetime

    out: list[datetime | None] = []
    for value in text.to_pylist():
        if value is None:
            out.append(None)
            continue
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            out.append(None)
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        out.append(parsed.astimezone(UTC))
    return pa.array(out, pa.timestamp("us", tz="UTC"))


def _strip_nul(text: pa.Array) -> pa.Array:
    # Salesforce drops NUL characters from what it saves; sending them would make the
    # record differ from the payload the diff hashed (and the Bulk echo from the upload).
    if not _may_hold_nul(text):
        return text  # the common case: one pass over the bytes, no copy of the column
    return pc.replace_substring(text, "\x00", "")


def _may_hold_nul(text: pa.Array) -> bool:
    """False only when no value of `text` can hold a NUL: its value bytes have none (a
    sliced array's buffer may hold bytes of other rows; those can only say True)."""
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return True
    data = text.buffers()[2]
    return data is not None and data.size > 0 and not np.frombuffer(data, np.uint8).all()


def canonical_multi_select(arr: pa.Array) -> pa.Array:
    """A multi-select picklist's values as one `;`-joined text in one order: sorted, each
    value once, empty and null elements dropped (a list holding a null clears nothing).
    A warehouse's unordered `array_agg` then hashes the same every run, and Salesforce,
    which keeps the set, holds what was sent."""
    arr = _plain(arr)
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lists = pc.cast(arr, pa.list_(pa.string()))
    else:
        lists = pc.split_pattern(to_text(arr), ";")
    n = len(lists)
    parents = pc.list_parent_indices(lists)
    values = _strip_nul(pc.list_flatten(lists))
    keep = pc.fill_null(pc.not_equal(values, ""), False)
    pairs = pa.table({"p": parents, "v": values}).filter(keep)
    pairs = (
        pairs.group_by(["p", "v"]).aggregate([]).sort_by([("p", "ascending"), ("v", "ascending")])
    )
    counts = np.bincount(pairs.column("p").to_numpy(), minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    joined = pc.binary_join(
        pa.ListArray.from_arrays(pa.array(offsets), pairs.column("v").combine_chunks()), ";"
    )
    return pc.if_else(pa.array(counts > 0), joined, pa.scalar(None, pa.string()))


_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def id18(value: str) -> str:
    """The 18-character form of a 15-character Id: three checksum characters, one per
    block of five, whose bits say which characters are upper case (Salesforce's rule)."""
    if len(value) != 15:
        return value
    suffix = ""
    for block in range(3):
        bits = sum(
            1 << i for i, c in enumerate(value[block * 5 : block * 5 + 5]) if "A" <= c <= "Z"
        )
        suffix += _ID_SUFFIX[bits]
    return value + suffix


def canonical_ids(text: pa.Array) -> pa.Array:
    """Ids in their 18-character form (Salesforce accepts 15, case-sensitive, and answers
    18; one record's two spellings are then one key)."""
    short = pc.fill_null(pc.equal(pc.utf8_length(text), 15), False)
    if not pc.any(short).as_py():
        return text
    rows = np.flatnonzero(short.to_numpy(zero_copy_only=False))
    values = text.to_pylist()
    for row in rows:
        values[row] = id18(values[row])
    return pa.array(values, pa.string())


def _coerce_text(
    arr: pa.Array, field: FieldDescribe | None, name: str
) -> tuple[pa.Array, list[_Bad]]:
    if field is not None and field.type == "multipicklist":
        text = canonical_multi_select(arr)
    else:
        text = _empty_to_null(_strip_nul(to_text(arr)))
    bads: list[_Bad] = []
    if field is None:
        return text, bads
    if field.type in ID_TYPES:
        text = pc.utf8_trim_whitespace(text)
        well_formed = pc.match_substring_regex(text, _ID_RE)
        malformed = pc.and_(pc.is_valid(text), _not(well_formed))
        bads.append(
            _Bad(
                malformed,
                MALFORMED_ID,
                lambda v: f"{name}: id value of incorrect type: {_shorten(v)}",
            )
        )
        return canonical_ids(pc.if_else(malformed, pa.scalar(None, pa.string()), text)), bads
    if field.type in ("picklist", "multipicklist") and field.restrictedPicklist:
        allowed = pa.array(field.active_picklist_values, pa.string())
        if field.type == "picklist":
            wrong = pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=allowed)))
        else:
            parts = pc.split_pattern(text, ";")
            flat_bad = pc.invert(pc.is_in(pc.list_flatten(parts), value_set=allowed))
            rows = pc.filter(pc.list_parent_indices(parts), flat_bad).to_numpy(zero_copy_only=False)
            mask = np.zeros(len(text), dtype=bool)
            mask[rows] = True
            wrong = pa.array(mask)
        bads.append(
            _Bad(
                wrong,
                RESTRICTED_PICKLIST,
                lambda v: f"{name}: bad value for restricted picklist field: {_shorten(v)}",
            )
        )
    length_bad = _length_bad(name, text, field.length)
    if length_bad:
        bads.append(length_bad)
    return text, bads


def _label(field: FieldDescribe) -> str:
    # Salesforce's messages name the field by its label ("Account Name: data value too large").
    return field.label or field.name


def coerce_column(
    arr: pa.Array, field: FieldDescribe | None, sf_field: str
) -> tuple[pa.Array, list[_Bad]]:
    """Canonical values of one column for `field` (None: a lookup, kept as text)."""
    arr = _plain(arr)
    if field is None:
        return _coerce_text(arr, None, sf_field)
    kind = field.type
    field = field.model_copy(update={"name": _label(field)})
    if kind in INT_TYPES:
        return _coerce_int(arr, field)
    if kind in FLOAT_TYPES:
        return _coerce_float(arr, field)
    if kind == "boolean":
        return _coerce_bool(arr, field)
    if kind == "date":
        return _coerce_date(arr, field)
    if kind == "datetime":
        return _coerce_datetime(arr, field)
    return _coerce_text(arr, field, field.name)


def coerce_batch(
    batch: pa.RecordBatch,
    *,
    primary_key: str,
    field_map: dict[str, str],
    describe: ObjectDescribe,
) -> pa.RecordBatch:
    """Canonical payload of `batch`: `__pk`, `__error_code`, `__error_message`, then one column
    per mapped Salesforce field (named by its API name, in mapping order)."""
    n = batch.num_rows
    columns: dict[str, pa.Array] = {}
    codes: dict[int, tuple[str, str]] = {}
    failed = np.zeros(n, dtype=bool)
    for column, sf_field in field_map.items():
        field = None if "." in sf_field else describe.field(sf_field)
        original = _plain(batch.column(column))
        values, bads = coerce_column(original, field, sf_field)
        for bad in bads:
            mask = bad.mask.to_numpy(zero_copy_only=False)
            new = mask & ~failed
            if not new.any():
                continue
            # The rare path: format Salesforce-like messages for the rows that failed.
            for index in np.flatnonzero(new):
                codes[int(index)] = (bad.code, bad.message(original[int(index)].as_py()))
            failed |= new
            values = pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)
        columns[sf_field] = values.cast(canonical_type(field))
    if codes:
        code_list: list[str | None] = [None] * n
        message_list: list[str | None] = [None] * n
        for index, (code, message) in codes.items():
            code_list[index] = code
            message_list[index] = message
        error_codes = pa.array(code_list, pa.string())
        error_messages = pa.array(message_list, pa.string())
    else:
        error_codes = error_messages = pa.nulls(n, pa.string())
    arrays = [to_text(batch.column(primary_key)), error_codes, error_messages, *columns.values()]
    names = [PK_COLUMN, ERROR_CODE_COLUMN, ERROR_MESSAGE_COLUMN, *columns.keys()]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def output_schema(field_map: dict[str, str], describe: ObjectDescribe) -> pa.Schema:
    """The schema `coerce_batch` returns for this mapping (for empty results and the diff)."""
    fields = [
        pa.field(PK_COLUMN, pa.string()),
        pa.field(ERROR_CODE_COLUMN, pa.string()),
        pa.field(ERROR_MESSAGE_COLUMN, pa.string()),
    ]
    for sf_field in field_map.values():
        target = None if "." in sf_field else describe.field(sf_field)
        fields.append(pa.field(sf_field, canonical_type(target)))
    return pa.schema(fields)
