"""Polymorphic lookups by External ID: `What:Account.External_Id__c` in a model file.

A polymorphic reference (Task.WhatId: Account, Opportunity, …) needs the parent's object
as well as its External ID field. Salesforce spells it differently per transport:
REST JSON nests `"What": {"attributes": {"type": "Account"}, "External_Id__c": "…"}`, and
Bulk CSV headers read `ObjectType:RelationshipName.IndexedFieldName`
(`Account:What.External_Id__c`). The model file says `Relationship:Object.Field`, which
reads like the JSON (relationship first) and parses unambiguously. Both wire forms are
written by the one lookup encoder: payload.Lookup (its `parent_object`, `csv_header`) and
record_json.record_sql.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Polymorphic(NamedTuple):
    relationship: str  # What
    object: str  # Account
    field: str  # External_Id__c


def parse(column: str) -> Polymorphic | None:
    """`What:Account.External_Id__c` → its parts; None for anything else."""
    head, dot, field = column.partition(".")
    relationship, colon, obj = head.partition(":")
    if not (dot and colon and relationship and obj and field):
        return None
    return Polymorphic(relationship, obj, field)


def check(
    column: str,
    sf_field: str,
    describe: Any,
    operation: str,
    parent_describe: Callable[[str], Any],
    problem: Callable[[str | None, str, str], None],
) -> None:
    """validate_mapping's checks of a polymorphic lookup against describe."""
    poly = parse(sf_field)
    if poly is None:
        problem(column, sf_field, "write a polymorphic lookup as Relationship:Object.Field")
        return
    reference = describe.relationship(poly.relationship)
    if reference is None or reference.type != "reference":
        problem(column, sf_field, f"no lookup relationship named {poly.relationship!r}")
        return
    targets = list(reference.referenceTo)
    if poly.object not in targets:
        problem(
            column,
            sf_field,
            f"{reference.name} cannot point at {poly.object} (it takes: {', '.join(targets)})",
        )
        return
    if operation in ("insert", "upsert") and not reference.createable:
        problem(column, sf_field, f"field is not createable, so {operation} cannot set it")
    if operation in ("update", "upsert") and not reference.updateable:
        problem(column, sf_field, f"field is not updateable, so {operation} cannot set it")
    try:
        parent = parent_describe(poly.object)
    except Exception as exc:  # a SalesforceError: named, not raised, like other problems
        problem(column, sf_field, f"cannot describe the parent object {poly.object}: {exc}")
        return
    target = parent.field(poly.field)
    if target is None:
        problem(column, sf_field, f"no field {poly.field!r} on the parent object {poly.object}")
    elif not (target.externalId or target.idLookup or target.name == "Id"):
        problem(
            column,
            sf_field,
            f"{poly.object}.{target.name} is not an External ID field, so it cannot be "
            "used to find the parent record",
        )
