"""Which models a model's lookups depend on, and what to do with a child row whose parent
has not landed yet.

A field mapped as `Relationship.External_Field` (e.g. `Account.External_Id__c` on Contact)
makes Salesforce find the parent record by that External ID when the child is written.
If the parent is another model's row that has not been synced yet, Salesforce refuses the
child with `INVALID_FIELD: Foreign key external ID: … not found …`. So:

- the Dagster layer syncs the parent models first (`model_dependencies`: the child's
  `salesforce/<model>` asset depends on the parents');
- a child row refused that way while a parent model has not landed every row (it has
  never synced, or holds rows pending) is *held*: left pending and sent again next run,
  not rejected and not counted against `max_reject_rate` (`ParentHold`). Once the parent
  models have landed everything, the same refusal is the row's own fault and rejected.

The parent object of a relationship is known for sure only from describe (`referenceTo`);
model files are read without a network, so it is inferred from the name: custom
relationships `X__r` point at `X__c`, `Parent` (and `MasterRecord`) at the model's own
object, a few standard names at theirs (`Owner` → User, `ReportsTo` → Contact), and any
other name at the object of that name (`Account` → Account). Polymorphic lookups (`Who`,
`What`) are not inferred.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow.compute as pc

from sf_activation.models import ModelSpec
from sf_activation.state import StateError, StateStore

log = logging.getLogger(__name__)

# Models whose rows create records others can look up.
_CREATING = ("upsert", "mirror", "insert")
_STANDARD = {
    "Owner": "User",
    "CreatedBy": "User",
    "LastModifiedBy": "User",
    "ReportsTo": "Contact",
}
_SELF = ("Parent", "MasterRecord")
_POLYMORPHIC = ("Who", "What")
FOREIGN_KEY_NOT_FOUND = re.compile(
    r"Foreign key external ID: .* not found for field (?P<field>\S+) in entity (?P<entity>\S+)"
)
HELD_FOR_PARENT = "HELD_FOR_PARENT"


def relationship_object(spec: ModelSpec, relationship: str) -> str | None:
    """The object a relationship name on `spec.object` points at (inferred; see above)."""
    if relationship in _POLYMORPHIC:
        return None
    if relationship in _SELF:
        return spec.object
    if relationship.endswith("__r"):
        return relationship[: -len("__r")] + "__c"
    return _STANDARD.get(relationship, relationship)


def lookup_objects(spec: ModelSpec) -> set[str]:
    """The objects `spec`'s lookup fields point at."""
    out = set()
    for target in spec.fields.values():
        if "." in target:
            obj = relationship_object(spec, target.split(".", 1)[0])
            if obj is not None:
                out.add(obj)
    return out


def parent_models(spec: ModelSpec, specs: Mapping[str, ModelSpec]) -> dict[str, list[str]]:
    """Parent object → the other models that create its records, for `spec`'s lookups."""
    out: dict[str, list[str]] = {}
    for obj in sorted(lookup_objects(spec)):
        names = [
            other.name
            for other in specs.values()
            if other.name != spec.name and other.object == obj and other.operation in _CREATING
        ]
        if names:
            out[obj] = sorted(names)
    return out


def model_dependencies(specs: Mapping[str, ModelSpec]) -> dict[str, list[str]]:
    """Model → the models it must sync after. A cycle between models (A looks up B's
    object and B looks up A's) cannot be ordered: its edges are dropped with a warning,
    and the rows that meet a missing parent are held until the next run."""
    deps = {
        name: sorted({m for names in parent_models(spec, specs).values() for m in names})
        for name, spec in specs.items()
    }
    ordered: dict[str, list[str]] = {}
    for name in sorted(deps):
        ordered[name] = [p for p in deps[name] if not _reaches(deps, p, name)]
        for dropped in sorted(set(deps[name]) - set(ordered[name])):
            log.warning(
                "models %s and %s look up each other's objects: they cannot be ordered, so "
                "they sync side by side and rows whose parent is missing wait a run",
                name, dropped,
            )  # fmt: skip
    return ordered


def _reaches(deps: Mapping[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(deps.get(node, []))
    return False


@dataclass
class ParentHold:
    """Decides, per parent object, whether a refused child row waits for its parent."""

    state_url: str
    parents: Mapping[str, list[str]]  # parent object -> models creating its records
    _reasons: dict[str, str | None] = field(default_factory=dict)

    def reason(self, code: str | None, message: str | None) -> str | None:
        """Why a refusal (`code`, `message`) is held, naming the parent model; or None."""
        if code != "INVALID_FIELD" or not message:
            return None
        found = FOREIGN_KEY_NOT_FOUND.search(message)
        if found is None:
            return None
        entity = found.group("entity")
        if entity not in self._reasons:
            self._reasons[entity] = self._unlanded(entity)
        return self._reasons[entity]

    def _unlanded(self, entity: str) -> str | None:
        for model in self.parents.get(entity, []):
            try:
                statuses = StateStore(self.state_url, model).load(["status"]).column("status")
            except StateError as exc:
                log.warning("cannot read the state of parent model %s: %s", model, exc)
                return f"parent model {model} ({entity}) could not be checked"
            if len(statuses) == 0:
                return f"parent model {model} ({entity}) has not synced yet"
            pending = pc.sum(pc.equal(statuses, "rejected")).as_py() or 0
            if pending:
                return f"parent model {model} ({entity}) has {pending} rows pending"
        return None
