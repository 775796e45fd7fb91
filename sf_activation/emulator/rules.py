"""What an org's admin configures and the API then enforces: record types, an assignment
rule, duplicate rules. Off until a test asks for them (`POST /__emulator/rules`), so an
org starts as a fresh Developer Edition org does, without any; `POST /__emulator/reset`
removes them again.

Behaviour, from Salesforce's documentation:

- Record types ("RecordType" in the Object Reference): RecordType records are queryable
  (`SELECT Id, DeveloperName FROM RecordType WHERE SobjectType = 'Account'`); the object
  gains `RecordTypeId` (relationship `RecordType`). A write naming another object's
  record type fails `INVALID_CROSS_REFERENCE_KEY`; a create naming none gets the default.
- Assignment rules ("Assignment Rule Header", REST API; "Create a Job", Bulk API 2.0):
  on REST writes, `Sforce-Auto-Assign` TRUE or absent runs the active rule, FALSE runs
  none, an AssignmentRule Id runs that rule on create. A Bulk 2.0 job runs a rule only
  when created with its `assignmentRuleId`. The rule here assigns every record to one
  owner (the rule's entry without criteria).
- Duplicate rules ("Duplicate Rule Header"): an active rule with the Allow + Alert
  action refuses a record matching an existing one (`DUPLICATES_DETECTED`, with the
  rule in the error's `duplicateResult`) unless the request says
  `Sforce-Duplicate-Rule-Header: allowSave=true`. Bulk 2.0 has no such header.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sf_activation.emulator import ids
from sf_activation.emulator.builtin_objects import _describe, _f, _field_dict, _id, _Object, _ref
from sf_activation.emulator.org import Org
from sf_activation.emulator.responses import ApiError, json_response, read_json
from sf_activation.emulator.schema import RecordError

DEFAULT_API_VERSION = "62.0"


@dataclass(frozen=True)
class WriteOptions:
    """The request's say on rules: `auto_assign` False, True or an AssignmentRule Id."""

    auto_assign: bool | str = False
    allow_save: bool = False


# Outside a REST request (a Bulk job's thread) nothing runs unless the job asked for it.
write_options: contextvars.ContextVar[WriteOptions] = contextvars.ContextVar(
    "write_options",
    default=WriteOptions(),  # noqa: B039 - frozen, never mutated
)


def options_from_headers(headers: list[tuple[bytes, bytes]]) -> WriteOptions:
    """REST semantics: no `Sforce-Auto-Assign` header means TRUE (the docs' default)."""
    auto: bool | str = True
    allow_save = False
    for name, value in headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        if key == "sforce-auto-assign":
            lowered = text.lower()
            auto = True if lowered == "true" else False if lowered == "false" else text
        elif key == "sforce-duplicate-rule-header":
            parts = dict(p.strip().partition("=")[::2] for p in text.split(";") if p.strip())
            allow_save = parts.get("allowSave", "").strip().lower() == "true"
    return WriteOptions(auto, allow_save)


def request_options(app: ASGIApp) -> ASGIApp:
    """ASGI wrapper: the request's headers decide the rules of the writes it makes."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        token = write_options.set(options_from_headers(scope.get("headers") or []))
        try:
            await app(scope, receive, send)
        finally:
            write_options.reset(token)

    return wrapped


class DuplicatesDetected(RecordError):
    def __init__(self, rule: str, object_name: str, match: str) -> None:
        super().__init__("DUPLICATES_DETECTED", "Use one of these records?", [])
        self.rule, self.object_name, self.match = rule, object_name, match

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "duplicateResult": {
                "allowSave": True,
                "duplicateRule": self.rule,
                "duplicateRuleEntityType": self.object_name,
                "errorMessage": "Use one of these records?",
                "matchResults": [{"entityType": self.object_name, "matchRecords": [self.match]}],
            },
        }


_RECORD_TYPE = _Object(
    "RecordType",
    "Record Type",
    "Record Types",
    "012",
    (
        _id("Record Type ID"),
        _f("Name", "Record Type Name", "string", "", 80),
        _f("DeveloperName", "Record Type Name", "string", "", 80),
        _f("SobjectType", "SObject Type Name", "picklist", "", 40),
        _f("IsActive", "Active", "boolean", "", default=False),
        _f("Description", "Description", "string", "n", 255),
    ),
    createable=False,
    updateable=False,
    deletable=False,
)
_ASSIGNMENT_RULE = _Object(
    "AssignmentRule",
    "Assignment Rule",
    "Assignment Rules",
    "01Q",
    (
        _id("Assignment Rule ID"),
        _f("Name", "Name", "string", "n", 120),
        _f("SobjectType", "SObject Type", "picklist", "n", 40),
        _f("Active", "Active", "boolean", "", default=False),
    ),
    createable=False,
    updateable=False,
    deletable=False,
)
_RECORD_TYPE_ID = _ref("RecordTypeId", "Record Type ID", "ncu", "RecordType", "RecordType")


@dataclass
class _DuplicateRule:
    name: str
    object: str
    field: str


@dataclass
class OrgRules:
    """The configured rules and the org hook enforcing them (`Org.write_rules`)."""

    org: Org
    api_version: str = DEFAULT_API_VERSION
    record_types: dict[str, dict[str, str]] = field(default_factory=dict)  # object -> name -> Id
    assignment: tuple[str, str, str] | None = None  # (object, rule Id, owner Id)
    duplicates: list[_DuplicateRule] = field(default_factory=list)
    _originals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.org.write_rules = self.on_write

    # ---- configuration -----------------------------------------------------------

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        """`{"record_types": {"Account": ["Customer", …]}, "assignment_rule": {"object":
        "Lead"}, "duplicate_rules": [{"object": "Contact", "field": "Email"}]}`."""
        out: dict[str, Any] = {}
        for object_name, names in (body.get("record_types") or {}).items():
            out.setdefault("record_types", {})[object_name] = self._add_record_types(
                object_name, list(names)
            )
        if body.get("assignment_rule"):
            out["assignment_rule"] = self._add_assignment_rule(body["assignment_rule"])
        for spec in body.get("duplicate_rules") or []:
            object_name, field_name = spec["object"], spec["field"]
            name = spec.get("name") or f"Standard_{object_name}_Duplicate_Rule"
            self.duplicates.append(_DuplicateRule(name, object_name, field_name))
        return out

    def _ensure(self, obj: _Object) -> None:
        if self.org.schema(obj.name) is None:
            self.org.add_describe(_describe(obj, self.api_version))

    def _add_record_types(self, object_name: str, names: list[str]) -> dict[str, str]:
        self._ensure(_RECORD_TYPE)
        describe = self.org.describe(object_name)
        if describe is None:
            raise ApiError(400, "INVALID_REQUEST", f"no object {object_name}")
        if not any(f["name"] == "RecordTypeId" for f in describe["fields"]):
            self._originals.setdefault(describe["name"], describe)
            changed = {
                **describe,
                "fields": [*describe["fields"], _field_dict(_RECORD_TYPE_ID, True)],
            }
            self.org.add_describe(changed)
        found = self.record_types.setdefault(describe["name"], {})
        for name in names:
            found[name] = self.org.seed(
                "RecordType",
                {
                    "Name": name,
                    "DeveloperName": name,
                    "SobjectType": describe["name"],
                    "IsActive": True,
                },
            )
        return dict(found)

    def _add_assignment_rule(self, spec: dict[str, Any]) -> dict[str, str]:
        self._ensure(_ASSIGNMENT_RULE)
        object_name = spec.get("object", "Lead")
        rule_id = self.org.seed(
            "AssignmentRule",
            {"Name": spec.get("name", "Standard"), "SobjectType": object_name, "Active": True},
        )
        owner = self.org.seed(
            "User",
            {"Username": "queue.owner@example.com", "LastName": "Owner", "IsActive": True},
        )
        self.assignment = (object_name, rule_id, owner)
        return {"id": rule_id, "owner_id": owner}

    def reset(self) -> None:
        """Back to no rules (records went with the org's reset)."""
        for describe in self._originals.values():
            self.org.add_describe(describe)
        self._originals.clear()
        self.record_types.clear()
        self.assignment = None
        self.duplicates.clear()

    # ---- enforcement -------------------------------------------------------------

    def on_write(self, object_name: str, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        options = write_options.get()
        types = self.record_types.get(object_name)
        if types:
            self._check_record_type(object_name, new, old, types)
        if self.assignment is not None and self.assignment[0] == object_name:
            _, rule_id, owner = self.assignment
            auto = options.auto_assign
            by_id = isinstance(auto, str) and old is None and ids.normalize(auto) == rule_id
            if auto is True or by_id:
                new["OwnerId"] = owner
        for rule in self.duplicates:
            if rule.object == object_name and not options.allow_save:
                self._check_duplicate(rule, new)

    def _check_record_type(
        self,
        object_name: str,
        new: dict[str, Any],
        old: dict[str, Any] | None,
        types: dict[str, str],
    ) -> None:
        given = new.get("RecordTypeId")
        if given is None:
            if old is None:  # the profile's default record type: the first one made
                new["RecordTypeId"] = next(iter(types.values()))
            return
        if given not in types.values():
            raise RecordError(
                "INVALID_CROSS_REFERENCE_KEY",
                f"Record Type ID: this ID value isn't valid for the user: {given}",
                ["RecordTypeId"],
            )

    def _check_duplicate(self, rule: _DuplicateRule, new: dict[str, Any]) -> None:
        value = new.get(rule.field)
        if not value:
            return
        key = str(value).lower()
        for other in self.org.records(rule.object):
            if other["Id"] != new.get("Id") and str(other.get(rule.field) or "").lower() == key:
                raise DuplicatesDetected(rule.name, rule.object, other["Id"])

    # ---- routes ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def rules(request: Request) -> Response:
            if request.method == "GET":
                return json_response(self.describe_rules())
            body = await read_json(request)
            if not isinstance(body, dict):
                raise ApiError(400, "INVALID_REQUEST", "expected a JSON object")
            return json_response(self.configure(body))

        return [Route("/__emulator/rules", rules, methods=["GET", "POST"])]

    def describe_rules(self) -> dict[str, Any]:
        return {
            "record_types": self.record_types,
            "assignment_rule": list(self.assignment) if self.assignment else None,
            "duplicate_rules": [vars(r) for r in self.duplicates],
        }


def job_options(assignment_rule_id: str | None) -> WriteOptions:
    """A Bulk 2.0 job's: its `assignmentRuleId` runs that rule; no header, no allowSave."""
    return WriteOptions(auto_assign=assignment_rule_id or False, allow_save=False)
