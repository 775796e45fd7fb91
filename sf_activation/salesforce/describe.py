"""Object describe (`GET sobjects/{Object}/describe`) and model-mapping validation.

The describe is what Salesforce says about an object's fields; it decides whether a model
can work at all (checked before anything is sent) and how each value is coerced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from sf_activation.salesforce import polymorphic
from sf_activation.salesforce.errors import MappingError, SalesforceError


class PicklistValue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: str
    active: bool = True
    label: str | None = None
    defaultValue: bool = False


class FieldDescribe(BaseModel):
    """One entry of describe's `fields[]`; only the attributes the client uses."""

    model_config = ConfigDict(extra="ignore")

    name: str
    type: str
    label: str | None = None
    length: int = 0
    nillable: bool = True
    createable: bool = False
    updateable: bool = False
    defaultedOnCreate: bool = False
    externalId: bool = False
    idLookup: bool = False
    unique: bool = False
    # External IDs and unique text fields match case-insensitively unless created so.
    caseSensitive: bool = False
    calculated: bool = False
    autoNumber: bool = False
    referenceTo: list[str] = Field(default_factory=list)
    relationshipName: str | None = None
    picklistValues: list[PicklistValue] = Field(default_factory=list)
    restrictedPicklist: bool = False
    precision: int = 0
    scale: int = 0
    digits: int = 0

    @property
    def active_picklist_values(self) -> list[str]:
        return [p.value for p in self.picklistValues if p.active]


class ObjectDescribe(BaseModel):
    """An object's describe; `field()` and `relationship()` look names up case-insensitively."""

    model_config = ConfigDict(extra="ignore")

    name: str
    label: str | None = None
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    queryable: bool = True
    keyPrefix: str | None = None
    fields: list[FieldDescribe] = Field(default_factory=list)
    _by_name: dict[str, FieldDescribe] = PrivateAttr(default_factory=dict)
    _by_relationship: dict[str, FieldDescribe] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self._by_name = {f.name.lower(): f for f in self.fields}
        self._by_relationship = {
            f.relationshipName.lower(): f for f in self.fields if f.relationshipName
        }

    def field(self, name: str) -> FieldDescribe | None:
        """The field called `name` (API name, any case), or None."""
        return self._by_name.get(name.lower())

    def relationship(self, name: str) -> FieldDescribe | None:
        """The reference field whose relationshipName is `name` (e.g. Parent → ParentId)."""
        return self._by_relationship.get(name.lower())

    def target_field(self, sf_field: str) -> FieldDescribe | None:
        """The field a mapping target writes: itself, or the reference field of `Rel.Ext`."""
        if "." in sf_field:
            return self.relationship(sf_field.split(".", 1)[0])
        return self.field(sf_field)


WRITE_OPERATIONS = ("insert", "update", "upsert", "delete")


def validate_mapping(
    *,
    model: str,
    describe: ObjectDescribe,
    operation: str,
    field_map: dict[str, str],
    external_id: str | None,
    parent_describe: Callable[[str], ObjectDescribe],
) -> None:
    """Raise `MappingError` listing every way `field_map` cannot work for `operation`.

    `operation` is what goes to Salesforce (`mirror` → `upsert`). `parent_describe(name)`
    fetches the describe of a lookup's parent object (cached by the client). Each problem
    names the model, the column and the field, so the user knows what to fix.
    """
    if operation not in WRITE_OPERATIONS:
        raise MappingError(f"model {model!r}: unknown operation {operation!r}")
    obj = describe.name
    problems: list[str] = []

    def problem(column: str | None, sf_field: str, text: str) -> None:
        where = f"column {column!r} → " if column else ""
        problems.append(f"model {model!r}: {where}{obj}.{sf_field}: {text}")

    if operation == "insert" and not describe.createable:
        problems.append(f"model {model!r}: {obj} does not allow creating records")
    if operation in ("update", "upsert") and not describe.updateable:
        problems.append(f"model {model!r}: {obj} does not allow updating records")
    if operation == "delete" and not describe.deletable:
        problems.append(f"model {model!r}: {obj} does not allow deleting records")

    seen: dict[str, str] = {}
    for column, sf_field in field_map.items():
        key = sf_field.lower()
        if key in seen:
            problem(column, sf_field, f"already mapped from column {seen[key]!r}")
            continue
        seen[key] = column
        if operation == "delete" and sf_field.lower() not in ("id", (external_id or "").lower()):
            continue  # a delete sends only the record's identity; other columns are ignored
        if sf_field == "RecordType.DeveloperName":
            continue  # sent as RecordTypeId; sf_activation/record_types.py checks the names
        if ":" in sf_field:
            polymorphic.check(column, sf_field, describe, operation, parent_describe, problem)
            continue
        if "." in sf_field:
            _check_lookup(column, sf_field, describe, operation, parent_describe, problem)
            continue
        field = describe.field(sf_field)
        if field is None:
            problem(column, sf_field, f"no such field on {obj}")
            continue
        if field.name != sf_field:
            problem(column, sf_field, f"field names are case-sensitive here: use {field.name}")
        if field.name == "Id":
            if operation in ("insert", "upsert"):
                problem(column, sf_field, f"Id cannot be written by {operation}")
            continue
        _check_writable(column, field, operation, external_id, problem)

    if operation == "upsert":
        if not external_id:
            problems.append(f"model {model!r}: operation upsert needs external_id")
        else:
            ext = describe.field(external_id)
            if ext is None:
                problem(None, external_id, f"external_id field does not exist on {obj}")
            elif not (ext.externalId or ext.name == "Id"):
                problem(
                    None, external_id, "external_id field is not marked External ID in Salesforce"
                )
            elif external_id.lower() not in seen:
                problem(None, external_id, "external_id field is not mapped from any column")
            elif ext.name != external_id:
                problem(None, external_id, f"field names are case-sensitive here: use {ext.name}")
    if operation in ("update", "delete") and "id" not in seen:
        if external_id and external_id.lower() in seen:
            ext = describe.field(external_id)
            if ext is not None and not (ext.externalId or ext.idLookup):
                problem(
                    None, external_id, "external_id field is not marked External ID in Salesforce"
                )
        else:
            problems.append(
                f"model {model!r}: {operation} needs a column mapped to Id or to external_id"
            )
    if problems:
        raise MappingError("\n".join(problems), error_code="INVALID_MAPPING")


def _check_writable(
    column: str,
    field: FieldDescribe,
    operation: str,
    external_id: str | None,
    problem: Callable[[str | None, str, str], None],
) -> None:
    if operation in ("insert", "upsert") and not field.createable:
        problem(column, field.name, f"field is not createable, so {operation} cannot set it")
    is_match_key = external_id is not None and field.name.lower() == external_id.lower()
    if operation in ("update", "upsert") and not field.updateable and not is_match_key:
        problem(column, field.name, f"field is not updateable, so {operation} cannot set it")


def _check_lookup(
    column: str,
    sf_field: str,
    describe: ObjectDescribe,
    operation: str,
    parent_describe: Callable[[str], ObjectDescribe],
    problem: Callable[[str | None, str, str], None],
) -> None:
    relationship, _, parent_field = sf_field.partition(".")
    reference = describe.relationship(relationship)
    if reference is not None and reference.relationshipName not in (None, relationship):
        problem(
            column,
            sf_field,
            f"relationship names are case-sensitive here: use {reference.relationshipName}",
        )
        return
    if reference is None or reference.type != "reference":
        problem(
            column,
            sf_field,
            f"no lookup relationship named {relationship!r} on {describe.name} "
            "(use the relationship name, e.g. Parent or Account__r, not the field name)",
        )
        return
    if len(reference.referenceTo) != 1:
        problem(
            column,
            sf_field,
            f"{reference.name} is polymorphic ({', '.join(reference.referenceTo)}); "
            "lookups by external id need a single parent object",
        )
        return
    if "." in parent_field:
        problem(column, sf_field, "only one level of lookup (Relationship.ExternalId) is supported")
        return
    _check_writable(column, reference, operation, None, problem)
    parent_name = reference.referenceTo[0]
    try:
        parent = parent_describe(parent_name)
    except SalesforceError as exc:
        problem(column, sf_field, f"cannot describe the parent object {parent_name}: {exc}")
        return
    target = parent.field(parent_field)
    if target is None:
        problem(column, sf_field, f"no field {parent_field!r} on the parent object {parent_name}")
    elif target.name != parent_field:
        problem(column, sf_field, f"field names are case-sensitive here: use {target.name}")
    elif not (target.externalId or target.name == "Id" or target.idLookup):
        problem(
            column,
            sf_field,
            f"{parent_name}.{target.name} is not an External ID field, so it cannot be "
            "used to find the parent record",
        )
