"""A model's Salesforce switches, resolved once per run before anything is sent.

`record_type: Customer` (or a column mapped to `RecordType.DeveloperName`) names record
types by DeveloperName, which is what a model file can keep stable across orgs (Ids differ
between a sandbox and production). Salesforce takes only `RecordTypeId` on a write, so
the names are looked up once per run (one SOQL query on RecordType for the object, cached
by the client) and checked before the first record leaves: an unknown name fails the
model with one line naming it and the names the org has.
"""

from __future__ import annotations

from typing import Protocol

from sf_activation.models import ModelError, ModelSpec
from sf_activation.salesforce.outcomes import RECORD_TYPE_NAME_COLUMN, WriteSwitches


class _RecordTypeSource(Protocol):
    def record_types(self, object_name: str) -> dict[str, str]: ...


def uses_record_types(spec: ModelSpec) -> bool:
    return spec.record_type is not None or RECORD_TYPE_NAME_COLUMN in spec.fields.values()


def record_type_problem(spec: ModelSpec, available: dict[str, str]) -> str | None:
    """One line when `record_type:` names no active record type of the object."""
    if spec.record_type is None:
        if available or RECORD_TYPE_NAME_COLUMN not in spec.fields.values():
            return None
        column = next(c for c, f in spec.fields.items() if f == RECORD_TYPE_NAME_COLUMN)
        return (
            f"{spec.display_path}: fields.{column}: {spec.object} has no active record types, "
            f"so {RECORD_TYPE_NAME_COLUMN} cannot be set; remove the mapping or create the "
            "record types in Salesforce"
        )
    by_lower = {name.lower(): name for name in available}
    if spec.record_type.lower() in by_lower:
        return None
    names = ", ".join(sorted(available)) or "none (the object has no active record types)"
    return (
        f"{spec.display_path}: record_type: {spec.record_type!r} is not an active record type "
        f"of {spec.object} (DeveloperName; available: {names}); fix the name or remove the key"
    )


def write_switches(spec: ModelSpec, client: _RecordTypeSource) -> WriteSwitches:
    """The model's switches for `SendRequest`; raises `ModelError` for an unknown record
    type. Queries Salesforce only when the model uses record types."""
    available: dict[str, str] = {}
    record_type_id: str | None = None
    if uses_record_types(spec):
        available = client.record_types(spec.object)
        problem = record_type_problem(spec, available)
        if problem is not None:
            raise ModelError(problem)
        if spec.record_type is not None:
            by_lower = {name.lower(): rid for name, rid in available.items()}
            record_type_id = by_lower[spec.record_type.lower()]
    return WriteSwitches(
        assignment_rule=spec.assignment_rules,
        allow_save=spec.duplicate_rules == "allow_save",
        hard_delete=spec.delete_mode == "hard",
        record_type_id=record_type_id,
        record_type_ids=available if RECORD_TYPE_NAME_COLUMN in spec.fields.values() else {},
        record_type_names=tuple(sorted(available)),
    )


__all__ = ["record_type_problem", "uses_record_types", "write_switches"]
