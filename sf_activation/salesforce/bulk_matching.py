"""Which uploaded row each Bulk result row is: by identity where there is one.

Bulk API 2.0 answers a job with result files that echo each row's cells, without the row's
position. Update and delete rows are matched by their `Id`, upsert rows by the External ID
(compared as Salesforce compares it: case-insensitively unless the field is case
sensitive); insert rows have no identity before the result and are matched by every
cell. An echo is first matched byte for byte as uploaded, and what is left after
normalising both sides the way Salesforce may re-render a value (NUL characters dropped,
numbers by value, header names in any case). All in Arrow: matching was once the larger
part of a Bulk send's CPU.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.salesforce.describe import ObjectDescribe
from sf_activation.salesforce.payload import PayloadLayout

_SEP = "\x1f"


def match_keys(cells: list[pa.Array]) -> pa.Array:
    """One string per row identifying it by all of its CSV cells."""
    if len(cells) == 1:
        return cells[0]
    return pc.binary_join_element_wise(*cells, _SEP)


def _occurrences(keys: pa.Array) -> np.ndarray:
    """For each row, how many earlier rows have the same key (0 for the first)."""
    n = len(keys)
    order = pc.sort_indices(keys).to_numpy()  # stable: equal keys keep row order
    ordered = keys.take(pa.array(order))
    starts = np.ones(n, dtype=bool)
    if n > 1:
        same = pc.equal(ordered.slice(1), ordered.slice(0, n - 1))
        starts[1:] = ~np.asarray(pc.fill_null(same, False))
    position = np.arange(n)
    group_start = np.maximum.accumulate(np.where(starts, position, 0))
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[order] = position - group_start
    return occurrence


def match_results(input_keys: pa.Array, result_keys: pa.Array) -> np.ndarray:
    """The input row of each result row, or -1 when it matches none.

    Rows whose keys are identical are paired in turn (the k-th result with a key to the k-th
    input row with it), a hash join on (key, occurrence) in Arrow rather than a dict in
    Python: matching was the larger part of a Bulk send's CPU.
    """
    m = len(result_keys)
    matched = np.full(m, -1, dtype=np.int64)
    if m == 0 or len(input_keys) == 0:
        return matched
    inputs = pa.table(
        {
            "k": input_keys,
            "o": _occurrences(input_keys),
            "i": np.arange(len(input_keys), dtype=np.int64),
        }
    )
    results = pa.table(
        {"k": result_keys, "o": _occurrences(result_keys), "j": np.arange(m, dtype=np.int64)}
    )
    joined = results.join(inputs, keys=["k", "o"], join_type="inner")
    matched[joined.column("j").to_numpy()] = joined.column("i").to_numpy()
    return matched


# How the cells of a compared column are normalised for the second pass of matching
# (`normalise_cells`): the ways Salesforce may echo a value otherwise than it was uploaded.
TEXT = "text"  # NUL characters dropped, case kept
TEXT_CI = "text_ci"  # NUL characters dropped, case folded (External IDs, unless case sensitive)
ID = "id"  # a record Id: the 18-character form is the 15-character one (case-sensitive)
INT = "int"  # a whole number, by value: `7`, `7.0`, `+7`, `7E0` are one
FLOAT = "float"  # a double, by value: `1.5`, `1.50`, `15E-1` are one
DECIMAL = "decimal"  # an exact decimal, by value and every digit: `1.50`, `+01.5` are one
BOOL = "bool"  # `true` / `TRUE`
_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_WHOLE_NUMBER_RE = r"^[+-]?\d{1,18}(\.0*)?$"  # exactly an int64, no float in between
_PLAIN_DECIMAL_RE = r"^[+-]?(\d+\.?\d*|\.\d+)$"
# Not pa.scalar(None, ...): pyarrow's scalar() and array() first ask whether their argument
# is a pandas object, and asking imports pandas (0.5 s), here at import time.
_NULL_TEXT = pa.nulls(1, pa.string())[0]


def _number_values(text: pa.Array) -> pa.Array:
    """float64 of each cell that is a number (surrounding blanks allowed), else null."""
    trimmed = pc.utf8_trim_whitespace(text)
    number = pc.match_substring_regex(trimmed, _NUMBER_RE)
    return pc.cast(pc.if_else(number, trimmed, _NULL_TEXT), pa.float64())


def _decimal_text(text: pa.Array) -> pa.Array:
    """A plain decimal's shortest text, digit for digit (no sign on zero, no leading or
    trailing zeros: `+007.50` → `7.5`, `-0.00` → `0`); other cells null. Exact at any
    length, where a double would merge the last digits of an 18-digit value."""
    trimmed = pc.utf8_trim_whitespace(text)
    plain = pc.match_substring_regex(trimmed, _PLAIN_DECIMAL_RE)
    body = pc.replace_substring_regex(trimmed, r"^[+-]", "")
    body = pc.replace_substring_regex(body, r"^(\d*\.\d*?)0+$", r"\1")
    body = pc.replace_substring_regex(body, r"\.$", "")
    body = pc.replace_substring_regex(body, r"^0+", "")
    body = pc.if_else(
        pc.or_(pc.equal(body, ""), pc.starts_with(body, ".")),
        pc.utf8_replace_slice(body, start=0, stop=0, replacement="0"),
        body,
    )
    signed = pc.and_(pc.starts_with(trimmed, "-"), pc.not_equal(body, "0"))
    key = pc.if_else(signed, pc.utf8_replace_slice(body, start=0, stop=0, replacement="-"), body)
    return pc.if_else(plain, key, _NULL_TEXT)


def normalise_cells(text: pa.Array, rule: str) -> pa.Array:
    """Cells of one column as Salesforce compares them, so that a value echoed otherwise
    than uploaded still finds its row. A number column compares by value; a cell that is
    not a number there (`#N/A`, empty) compares as text. Vectorised: no Python per row."""
    text = pc.replace_substring(text, "\x00", "")
    if rule in (TEXT_CI, BOOL):
        return pc.utf8_lower(text)
    if rule == ID:
        short = pc.utf8_slice_codeunits(text, 0, 15)
        return pc.if_else(pc.equal(pc.binary_length(text), 18), short, text)
    if rule == FLOAT:
        # The shortest text that reads back as the same double: equal values, equal keys
        # (adding 0.0 makes -0 into 0). An upload renders a double as that shortest text,
        # so any decimal rendering of the same value reads back as the same double.
        key = pc.cast(pc.add(_number_values(text), 0.0), pa.string())
        return pc.coalesce(key, text)
    if rule == DECIMAL:
        # An exponent form (`1.5E+2`) is left as text: a decimal is uploaded plain, and
        # Salesforce writes decimals plain.
        return pc.coalesce(_decimal_text(text), text)
    if rule == INT:
        trimmed = pc.utf8_trim_whitespace(text)
        whole = pc.match_substring_regex(trimmed, _WHOLE_NUMBER_RE)
        digits = pc.replace_substring_regex(
            pc.if_else(whole, trimmed, _NULL_TEXT), r"^\+|\.0*$", ""
        )
        exact = pc.cast(digits, pa.int64())  # exact, also beyond 2**53
        values = _number_values(trimmed)  # 7E2 and the like
        integral = pc.and_(
            pc.equal(values, pc.floor(values)), pc.less(pc.abs(values), float(2**63))
        )
        approx = pc.cast(pc.if_else(integral, values, pa.scalar(None, pa.float64())), pa.int64())
        return pc.coalesce(pc.cast(pc.coalesce(exact, approx), pa.string()), text)
    return text


def cell_rule(data_type: pa.DataType) -> str:
    """The `normalise_cells` rule of a canonical column of this type."""
    if pa.types.is_integer(data_type):
        return INT
    if pa.types.is_decimal(data_type):
        return DECIMAL
    if pa.types.is_floating(data_type):
        return FLOAT
    if pa.types.is_boolean(data_type):
        return BOOL
    return TEXT


def identity_rule(
    layout: PayloadLayout, data_type: pa.DataType, describe: ObjectDescribe | None = None
) -> str:
    """How Salesforce compares the layout's identity: an Id by its 15-character form, a
    numeric External ID by value, a text one case-insensitively unless the describe
    says the field is case sensitive (without a describe: not, Salesforce's default)."""
    identity = layout.identity or ""
    field = describe.field(identity) if describe is not None else None
    if identity.lower() == "id" or (field is not None and field.type in ("id", "reference")):
        return ID
    rule = cell_rule(data_type)
    if rule != TEXT:
        return rule
    return TEXT if field is not None and field.caseSensitive else TEXT_CI


def row_rules(
    layout: PayloadLayout,
    schema: pa.Schema,
    describe: ObjectDescribe | None = None,
    *,
    header: list[str],
) -> list[str]:
    """The `normalise_cells` rule of each column of the job's CSV `header`, for matching
    whole rows."""
    rules: list[str] = []
    for name in layout.fields:
        field = describe.field(name) if describe is not None else None
        if field is not None and field.type in ("id", "reference"):
            rules.append(ID)
        else:
            rules.append(cell_rule(schema.field(name).type))
    # Lookup cells are a parent's External ID, echoed as sent; reference columns are
    # `#N/A` or empty.
    rules.extend(TEXT for _ in header[len(layout.fields) :])
    return rules


def match_rows(inputs: list[pa.Array], results: list[pa.Array], rules: list[str]) -> np.ndarray:
    """The input row of each result row (-1: none), comparing the compared columns' cells
    (`inputs`: as uploaded; `results`: as echoed, null where a column is missing).

    First as uploaded, byte for byte; then the result rows left over against the input
    rows left over, both normalised by `rules` (`normalise_cells`). Each pass pairs rows
    with equal keys in turn (`match_results`). The second pass only runs when the first
    leaves rows over, so a faithful echo costs one join on the raw cells.
    """
    matched = match_results(match_keys(inputs), match_keys(results))
    left_results = np.flatnonzero(matched < 0)
    if len(left_results) == 0:
        return matched
    free = np.ones(len(inputs[0]), dtype=bool)
    free[matched[matched >= 0]] = False
    left_inputs = np.flatnonzero(free)
    if len(left_inputs) == 0:
        return matched
    take_inputs, take_results = pa.array(left_inputs), pa.array(left_results)
    second = match_results(
        match_keys(
            [normalise_cells(c.take(take_inputs), r) for c, r in zip(inputs, rules, strict=True)]
        ),
        match_keys(
            [normalise_cells(c.take(take_results), r) for c, r in zip(results, rules, strict=True)]
        ),
    )
    hit = second >= 0
    matched[left_results[hit]] = left_inputs[second[hit]]
    return matched


def result_column(table: pa.Table, name: str) -> pa.Array | None:
    """Column `name` of a result table, its header compared case-insensitively (an exact
    spelling first), as one array; None when the file has no such column."""
    names = table.column_names
    if name not in names:
        lowered = name.lower()
        name = next((n for n in names if n.lower() == lowered), "")
        if not name:
            return None
    return table.column(name).combine_chunks()
