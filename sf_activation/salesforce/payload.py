"""How the canonical columns of a batch map onto a record, for both transports.

One layout decides which column is the record's identity, which are plain fields and
which are lookups by a parent's external id (and which reference field a null lookup
clears), and what a null means per field (`nulls:`, overridden by a field's `on_null:`),
so Composite JSON and Bulk CSV cannot drift apart.

A batch may carry `OMIT_COLUMN`: per row, the fields that record leaves out
(`send_fields: changed`, `set_if_empty`; sf_activation/field_behaviours.py). Composite
omits those members; Bulk writes an empty cell, which Bulk 2.0 reads as "leave alone".
The record's identity is never left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.salesforce.describe import ObjectDescribe
from sf_activation.salesforce.outcomes import KEY_COLUMN, MISSING_ARGUMENT, SendRequest

# list<string> per row: the fields this record leaves out (absent or empty: none).
OMIT_COLUMN = "__omit_fields"


@dataclass(frozen=True)
class Lookup:
    column: str  # e.g. Parent.External_Id__c, or What:Account.External_Id__c
    relationship: str  # Parent
    parent_field: str  # External_Id__c
    reference_field: str  # ParentId: what `nulls: clear` empties
    # The parent's object for a polymorphic lookup (What:Account.…): Salesforce cannot
    # tell which object's External ID is meant unless the record names it.
    parent_object: str | None = None

    @property
    def csv_header(self) -> str:
        """The Bulk CSV column: `RelationshipName.IndexedFieldName`, and for a polymorphic
        field `ObjectType:RelationshipName.IndexedFieldName` (`Account:What.External_Id__c`:
        object first, unlike the model file's spelling), per "Relationship Fields in a
        Header Row (2.0)", https://developer.salesforce.com/docs/platform/api-asynch/guide/relationship-fields-in-a-header-row-2-0.html"""
        if self.parent_object is None:
            return self.column
        return f"{self.parent_object}:{self.relationship}.{self.parent_field}"


@dataclass(frozen=True)
class PayloadLayout:
    object: str
    operation: str
    identity: str | None  # Id (update/delete), the external id (upsert), None (insert)
    fields: tuple[str, ...]  # plain field columns, in batch order
    lookups: tuple[Lookup, ...]
    clear_nulls: bool  # the model's `nulls:` is clear
    # Columns whose null goes the other way (a field's `on_null:` differing from `nulls:`).
    null_overrides: frozenset[str] = frozenset()

    def clears(self, column: str | None) -> bool:
        """Whether a null in `column` empties the field (JSON null / `#N/A`) rather than
        leaving it alone (omitted / empty cell)."""
        if column is None:
            return self.clear_nulls
        return self.clear_nulls != (column in self.null_overrides)

    @property
    def uniform_clear(self) -> bool:
        """Every null clears: the canonical payload (nulls as JSON null) is the record."""
        return self.clear_nulls and not self.null_overrides

    @classmethod
    def build(
        cls, request: SendRequest, describe: ObjectDescribe, schema: pa.Schema
    ) -> PayloadLayout:
        columns = [n for n in schema.names if not n.startswith("__")]
        identity: str | None = None
        if request.operation in ("update", "delete"):
            identity = next((c for c in columns if c.lower() == "id"), None)
            if identity is None:
                raise ValueError(f"{request.operation} needs an Id column; columns: {columns}")
        elif request.operation == "upsert":
            ext = (request.external_id or "").lower()
            identity = next((c for c in columns if c.lower() == ext), None)
            if identity is None:
                raise ValueError(f"upsert needs the {request.external_id} column")
        if request.operation == "delete":
            return cls(request.object, "delete", identity, (identity,), (), False)
        plain: list[str] = []
        lookups: list[Lookup] = []
        for column in columns:
            if "." in column:
                relationship, _, parent_field = column.partition(".")
                # `What:Account.External_Id__c` (models.py SF_POLYMORPHIC_RE): the same
                # lookup, with the parent's object named.
                relationship, _, parent_object = relationship.partition(":")
                reference = describe.relationship(relationship)
                reference_field = reference.name if reference else relationship + "Id"
                lookups.append(
                    Lookup(
                        column, relationship, parent_field, reference_field, parent_object or None
                    )
                )
            else:
                plain.append(column)
        clear = request.nulls == "clear"
        present = set(plain) | {lk.column for lk in lookups}
        overrides = frozenset(
            name
            for name, mode in request.field_nulls.items()
            if name in present and (mode == "clear") != clear
        )
        return cls(
            request.object,
            request.operation,
            identity,
            tuple(plain),
            tuple(lookups),
            clear,
            overrides,
        )

    def missing_identity(self, batch: pa.RecordBatch) -> pa.Array | None:
        """Mask of rows that cannot be sent because their Id / external id is null."""
        if self.identity is None:
            return None
        mask = pc.is_null(batch.column(self.identity))
        return mask if pc.any(mask).as_py() else None

    def missing_identity_message(self) -> tuple[str, str]:
        if self.operation == "upsert":
            return MISSING_ARGUMENT, f"{self.identity} not specified"
        return MISSING_ARGUMENT, f"Id not specified in an {self.operation} call"


def omitted_mask(layout: PayloadLayout, batch: pa.RecordBatch, column: str) -> pa.Array | None:
    """Rows of `batch` whose record leaves `column` out, or None when none does."""
    if OMIT_COLUMN not in batch.schema.names or column == layout.identity:
        return None
    lists = batch.column(OMIT_COLUMN)
    flat = pc.list_flatten(lists)
    if len(flat) == 0:
        return None
    hits = pc.list_parent_indices(lists).filter(pc.fill_null(pc.equal(flat, column), False))
    if len(hits) == 0:
        return None
    mask = np.zeros(batch.num_rows, dtype=bool)
    mask[hits.to_numpy()] = True
    return pa.array(mask)


def blank_omitted(
    layout: PayloadLayout, batch: pa.RecordBatch, header: list[str], cells: list[pa.Array]
) -> list[pa.Array]:
    """Bulk CSV cells with an empty cell where a record leaves the field out (Bulk 2.0 then
    leaves it alone); a lookup's reference column (ParentId) follows its lookup."""
    if OMIT_COLUMN not in batch.schema.names:
        return cells
    by_reference = {lk.reference_field: lk.column for lk in layout.lookups}
    # The header spells a polymorphic lookup the Bulk way (Lookup.csv_header), so the
    # source column of a field or lookup cell is found by position, not by name.
    named = [*layout.fields, *(lk.column for lk in layout.lookups)]
    out: list[pa.Array] = []
    for i, (name, cell) in enumerate(zip(header, cells, strict=True)):
        source = named[i] if i < len(named) else by_reference.get(name, name)
        mask = omitted_mask(layout, batch, source)
        out.append(cell if mask is None else pc.if_else(mask, "", cell))
    return out


def keys_of(batch: pa.RecordBatch) -> list[str]:
    return batch.column(KEY_COLUMN).to_pylist()
