"""The sObject JSON text of each record of a canonical batch, built by DuckDB.

Building a Python dict per record and serialising it was the largest single cost of
sending through sObject Collections (about a third of the client's CPU per million rows).
DuckDB writes each record's JSON from the Arrow columns in C++ instead, with the same
`to_json` that makes the canonical payload the diff hashes, so a call's body is a join of
strings. The rules are `PayloadLayout`'s: a null in a field that clears (`nulls: clear`,
or the field's `on_null: clear`) writes JSON null, one that keeps omits the field; a
lookup by a parent's external id is a nested relationship object (with the parent's
`attributes.type` when the lookup is polymorphic), and a null lookup that
clears empties the reference field itself (ParentId). A field the row's `OMIT_COLUMN`
lists is left out of that record (records of one call may differ in their fields).
"""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.salesforce.outcomes import FIELDS_JSON_COLUMN
from sf_activation.salesforce.payload import OMIT_COLUMN, PayloadLayout


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _member(name: str) -> str:
    """`,"Name":` as a SQL string literal (JSON-escaped name)."""
    return _text("," + json.dumps(name, ensure_ascii=False) + ":")


def _attributes(object_name: str) -> str:
    """`{"attributes":{"type":"Account"}`: a record's opening, left open for its fields."""
    return json.dumps({"attributes": {"type": object_name}}, separators=(",", ":"))[:-1]


def _value_sql(column: str, arrow_type: pa.DataType) -> str:
    """JSON text of a column's value, NULL for a null."""
    ref = _ident(column)
    if pa.types.is_floating(arrow_type):
        # JSON has no NaN or Infinity; write null for them as json.dumps(allow_nan=False)
        # users would expect rather than invalid JSON (coercion already rejects them).
        return (
            f"CASE WHEN isfinite({ref}) THEN to_json({ref})::VARCHAR "
            f"WHEN {ref} IS NOT NULL THEN 'null' END"
        )
    return f"to_json({ref})::VARCHAR"


def record_sql(layout: PayloadLayout, schema: pa.Schema, table: str) -> str:
    """One VARCHAR column: the JSON object of each row of `table`."""
    omits = OMIT_COLUMN in schema.names

    def unless_omitted(column: str, part: str) -> str:
        if not omits or column == layout.identity:
            return part
        return f"CASE WHEN list_contains({_ident(OMIT_COLUMN)}, {_text(column)}) THEN '' ELSE {part} END"

    parts = [_text(_attributes(layout.object))]
    for name in layout.fields:
        value = _value_sql(name, schema.field(name).type)
        if layout.clears(name):
            part = f"{_member(name)} || coalesce({value}, 'null')"
        else:
            part = f"coalesce({_member(name)} || {value}, '')"
        parts.append(unless_omitted(name, part))
    plain = {name.lower() for name in layout.fields}
    for lookup in layout.lookups:
        value = _value_sql(lookup.column, schema.field(lookup.column).type)
        # A polymorphic lookup names its parent's object, as REST documents:
        # `"What":{"attributes":{"type":"Account"},"External_Id__c":"A-1"}`.
        opening = _attributes(lookup.parent_object) + "," if lookup.parent_object else "{"
        nested = (
            f"{_member(lookup.relationship)} || {_text(opening)} || "
            f"{_text(json.dumps(lookup.parent_field) + ':')} || {value} || '}}'"
        )
        # A lookup by external id cannot be nulled through the relationship; the reference
        # field itself (ParentId) is what empties it, unless the model maps it directly.
        clear = lookup.reference_field.lower() not in plain and layout.clears(lookup.column)
        otherwise = f"{_member(lookup.reference_field)} || 'null'" if clear else "''"
        parts.append(unless_omitted(lookup.column, f"coalesce({nested}, {otherwise})"))
    return f"SELECT {' || '.join(parts)} || '}}' AS record FROM {table}"


class RecordEncoder:
    """Encodes canonical batches of one layout; one per sender, used from one thread."""

    def __init__(self, layout: PayloadLayout) -> None:
        self.layout = layout
        self._sql = ""
        self._schema: pa.Schema | None = None
        self._con: duckdb.DuckDBPyConnection | None = None  # opened when columns are encoded

    def encode(self, batch: pa.RecordBatch) -> list[str]:
        """Wire form of each record: its JSON text, or its Id for delete."""
        if self.layout.operation == "delete":
            return batch.column(self.layout.identity).to_pylist()  # type: ignore[arg-type]
        if batch.num_rows == 0:
            return []
        ready = self._from_fields_json(batch)
        if ready is not None:
            return ready
        if self._schema is None or not batch.schema.equals(self._schema):
            self._sql = record_sql(self.layout, batch.schema, "batch_in")
            self._schema = batch.schema
        if self._con is None:
            # One thread: the senders' own threads are busy with HTTP, and a per-batch
            # query over 10,000 rows gains nothing from DuckDB's parallelism.
            self._con = duckdb.connect(config={"threads": 1})
        self._con.register("batch_in", pa.Table.from_batches([batch]))
        try:
            return self._con.sql(self._sql).to_arrow_table().column(0).to_pylist()
        finally:
            self._con.unregister("batch_in")

    def _from_fields_json(self, batch: pa.RecordBatch) -> list[str] | None:
        """The records from `FIELDS_JSON_COLUMN` when it says all there is to say: every
        field, nulls to be cleared, no lookup to nest. Prefixing `attributes` is a string
        operation in Arrow, about a tenth of encoding the columns."""
        layout = self.layout
        if FIELDS_JSON_COLUMN not in batch.schema.names or OMIT_COLUMN in batch.schema.names:
            return None  # records that leave fields out are not the whole payload
        if not layout.uniform_clear or layout.lookups:
            return None
        texts = batch.column(FIELDS_JSON_COLUMN)
        if texts.null_count or pc.any(pc.equal(texts, "{}")).as_py():
            return None  # nothing after `attributes`: encode the columns instead
        attributes = _attributes(layout.object)
        records = pc.binary_join_element_wise(attributes, pc.utf8_slice_codeunits(texts, 1), ",")
        return records.to_pylist()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> RecordEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collection_body(records: list[str]) -> bytes:
    """The body of a sObject Collections write: records are partial failures, not all-or-none."""
    return ('{"allOrNone":false,"records":[' + ",".join(records) + "]}").encode()
