"""How the canonical columns of a batch map onto a record, for both transports.

One layout decides which column is the record's identity, which are plain fields and
which are lookups by a parent's external id (and which reference field a null lookup
clears), so Composite JSON and Bulk CSV cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.salesforce.describe import ObjectDescribe
from sf_activation.salesforce.outcomes import KEY_COLUMN, MISSING_ARGUMENT, SendRequest


@dataclass(frozen=True)
class Lookup:
    column: str  # e.g. Parent.External_Id__c
    relationship: str  # Parent
    parent_field: str  # External_Id__c
    reference_field: str  # ParentId: what `nulls: clear` empties


@dataclass(frozen=True)
class PayloadLayout:
    object: str
    operation: str
    identity: str | None  # Id (update/delete), the external id (upsert), None (insert)
    fields: tuple[str, ...]  # plain field columns, in batch order
    lookups: tuple[Lookup, ...]
    clear_nulls: bool

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
                reference = describe.relationship(relationship)
                reference_field = reference.name if reference else relationship + "Id"
                lookups.append(Lookup(column, relationship, parent_field, reference_field))
            else:
                plain.append(column)
        return cls(
            request.object,
            request.operation,
            identity,
            tuple(plain),
            tuple(lookups),
            request.nulls == "clear",
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


def keys_of(batch: pa.RecordBatch) -> list[str]:
    return batch.column(KEY_COLUMN).to_pylist()
