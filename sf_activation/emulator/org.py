"""The emulated org: schemas and records, and the one write path every API shares.

REST single-record calls, sObject Collections and Bulk API 2.0 all end in `Org.apply`,
so a record is validated the same way whichever door it came through, as in a real org.
One re-entrant lock guards everything: Bulk jobs may run in worker threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from sf_activation.emulator import ids
from sf_activation.emulator.activities import ACTIVITY_OBJECTS, derive_activity
from sf_activation.emulator.schema import (
    NUMBER_TYPES,
    FieldInfo,
    ObjectSchema,
    RecordError,
    format_datetime,
)

Operation = Literal["insert", "update", "upsert", "delete", "hardDelete"]
OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")

ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)
SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
ORG_NAME = "Emulator Org"
USERNAME = "admin@emulator.example.com"


def _exact_numbers(
    schema: ObjectSchema, records: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Records restored from a snapshot, Number fields as Decimals.

    Snapshots written before numbers were exact hold floats; as Decimals they index and
    compare like values written now.
    """
    numeric = [f for f in schema.fields.values() if f.type in NUMBER_TYPES]
    out: dict[str, dict[str, Any]] = {}
    for rid, record in records.items():
        floats = [f for f in numeric if type(record.get(f.name)) is float]
        if floats:
            record = dict(record)
            for f in floats:
                # Out of range under a changed describe: kept as stored.
                with contextlib.suppress(RecordError):
                    record[f.name] = f.coerce(f, record[f.name], False)
        out[rid] = record
    return out


class UnknownObjectError(KeyError):
    """No object of that name in the org."""


def _failure(error: RecordError) -> dict[str, Any]:
    # A failed item carries no id, as the API answers.
    return {"success": False, "errors": [error.as_dict()]}


class Org:
    """Schemas, records and identity of one emulated org. Thread-safe (one lock)."""

    def __init__(
        self,
        describes: Iterable[dict[str, Any]] = (),
        *,
        lock_failure: Callable[[], bool] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._schemas: dict[str, ObjectSchema] = {}  # lower-case API name -> schema
        self._by_prefix: dict[str, ObjectSchema] = {}
        self._live: dict[str, dict[str, dict[str, Any]]] = {}  # API name -> id -> record
        self._deleted: dict[str, dict[str, dict[str, Any]]] = {}  # the recycle bin
        self._purged: set[str] = set()  # hard-deleted ids: still "deleted" to the API
        # API name -> field -> index key -> ids; unique fields eagerly, others on first use.
        self._indexes: dict[str, dict[str, dict[str, list[str]]]] = {}
        self._counter = 1000
        self._autonumbers: dict[tuple[str, str], int] = {}
        self._next_custom_prefix = 1
        self._templates: dict[str, dict[str, Any]] = {}
        # Fault hook: True means "this record hit a row lock" (UNABLE_TO_LOCK_ROW).
        self.lock_failure = lock_failure
        # Row-lock hook (locks.ParentLocks, `--faults parent_locks=1`): called with each
        # record about to be saved; raises UNABLE_TO_LOCK_ROW when another request holds
        # a row it needs.
        self.row_locks: Callable[[ObjectSchema, str | None, dict[str, Any]], None] | None = None
        # Org configuration hook (rules.OrgRules: record types, assignment and duplicate
        # rules): called with (object, record about to be saved, the record before or None
        # on create); may change the record (OwnerId) or raise RecordError.
        self.write_rules: Callable[[str, dict[str, Any], dict[str, Any] | None], None] | None = None
        self.org_id = ids.make_id("00D", 7)
        self.user_id = ids.make_id("005", 7)
        self.username = USERNAME
        # Bumped on every change; the persistence loop saves when it moves.
        self.version = 0
        for describe in describes:
            self._install(describe)
        self._seed_identity()

    # ---- schema -------------------------------------------------------------------

    def add_describe(self, describe: dict[str, Any]) -> None:
        """Add an object or replace a built-in one (`--schema`)."""
        with self._lock:
            self._install(describe)
            self._seed_identity()

    def _install(self, describe: dict[str, Any]) -> None:
        name = describe["name"]
        old = self._schemas.get(name.lower())
        prefix = describe.get("keyPrefix") or ids.STANDARD_KEY_PREFIXES.get(name)
        if not prefix and old is not None:
            prefix = old.key_prefix
        if not prefix:
            prefix = self._allocate_custom_prefix()
        if old is not None and old.key_prefix in self._by_prefix:
            del self._by_prefix[old.key_prefix]
        if prefix != describe.get("keyPrefix"):
            describe = {**describe, "keyPrefix": prefix}
        schema = ObjectSchema(describe, prefix)
        if old is not None and old.name != schema.name:
            # Same object, other spelling: keep the records under the new name.
            for store in (self._live, self._deleted):
                if old.name in store:
                    store[schema.name] = store.pop(old.name)
        self._schemas[name.lower()] = schema
        self._by_prefix[prefix] = schema
        self._live.setdefault(schema.name, {})
        self._deleted.setdefault(schema.name, {})
        self._indexes.pop(name, None)
        self._indexes[schema.name] = {}
        self._templates.pop(schema.name, None)
        for f in schema.unique_fields:
            self._index(schema, f)

    def _allocate_custom_prefix(self) -> str:
        while True:
            prefix = f"a{self._next_custom_prefix:02d}"
            self._next_custom_prefix += 1
            if prefix not in self._by_prefix:
                return prefix

    def schema(self, object_name: str) -> ObjectSchema | None:
        return self._schemas.get(object_name.lower())

    def describe(self, object_name: str) -> dict[str, Any] | None:
        """The describe of an object (case-insensitive API name), or None."""
        schema = self._schemas.get(object_name.lower())
        return schema.describe if schema else None

    def object_names(self) -> list[str]:
        return sorted(s.name for s in self._schemas.values())

    def object_for_id(self, record_id: str) -> str | None:
        """The object whose key prefix a (well-formed) id carries."""
        schema = self._by_prefix.get(record_id[:3])
        return schema.name if schema else None

    # ---- reading ------------------------------------------------------------------

    def get(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        """A live record by id (15 or 18 characters), or None."""
        schema = self._require(object_name)
        rid = ids.normalize(record_id)
        if rid is None:
            return None
        with self._lock:
            return self._live[schema.name].get(rid)

    def is_deleted(self, object_name: str, record_id: str) -> bool:
        schema = self._require(object_name)
        rid = ids.normalize(record_id)
        with self._lock:
            return rid in self._deleted[schema.name] or rid in self._purged

    def records(self, object_name: str) -> list[dict[str, Any]]:
        """Live records (field API name -> value). Treat them as read-only."""
        schema = self._require(object_name)
        with self._lock:
            return list(self._live[schema.name].values())

    def deleted_records(self, object_name: str) -> list[dict[str, Any]]:
        """Soft-deleted records (the recycle bin, `IsDeleted` true), for queryAll."""
        schema = self._require(object_name)
        with self._lock:
            return list(self._deleted[schema.name].values())

    def count(self, object_name: str) -> int:
        schema = self._require(object_name)
        with self._lock:
            return len(self._live[schema.name])

    def find(self, object_name: str, field_name: str, value: Any) -> list[str]:
        """Ids of live records whose field matches value the way upsert matches."""
        schema = self._require(object_name)
        f = schema.field(field_name)
        if f is None:
            return []
        with self._lock:
            return self._match(schema, f, value)

    def unknown_fields(self, object_name: str, names: Iterable[str]) -> list[str]:
        """The names that are neither a field nor `Relationship.Field` of the object."""
        schema = self._require(object_name)
        unknown = []
        for name in names:
            if "." in name:
                rel, _, target_field = name.partition(".")
                # Bulk's polymorphic header: `ObjectType:RelationshipName.IndexedFieldName`
                # (Account:What.External_Id__c). A type the field does not take is refused
                # per record (`_resolve_lookup`), as over REST.
                kind, colon, rel = rel.rpartition(":")
                ref = schema.relationships.get(rel.lower())
                if colon and ref is not None:
                    kind = next((t for t in ref.reference_to if t.lower() == kind.lower()), "")
                    target = self.schema(kind) if kind else None
                else:
                    target = self.schema(ref.reference_to[0]) if ref and ref.reference_to else None
                if ref is None or (target is not None and target.field(target_field) is None):
                    unknown.append(name)
            elif schema.field(name) is None:
                unknown.append(name)
        return unknown

    def _require(self, object_name: str) -> ObjectSchema:
        schema = self._schemas.get(object_name.lower())
        if schema is None:
            raise UnknownObjectError(object_name)
        return schema

    # ---- writing ------------------------------------------------------------------

    def apply(
        self,
        object_name: str,
        operation: Operation,
        records: list[dict[str, Any]],
        *,
        external_id_field: str | None = None,
        all_or_none: bool = False,
        value_format: Literal["json", "csv"] = "json",
    ) -> list[dict[str, Any]]:
        """Write records; one Collections-shaped result per record, in order.

        Raises UnknownObjectError for an unknown object, ValueError for an unknown
        operation or an upsert without a usable external id field.
        """
        schema = self._require(object_name)
        return self.apply_mixed(
            operation,
            [(schema.name, r) for r in records],
            external_id_field=external_id_field,
            all_or_none=all_or_none,
            value_format=value_format,
        )

    def apply_mixed(
        self,
        operation: Operation,
        items: list[tuple[str, dict[str, Any]]],
        *,
        external_id_field: str | None = None,
        all_or_none: bool = False,
        value_format: Literal["json", "csv"] = "json",
    ) -> list[dict[str, Any]]:
        """Like `apply`, for (object name, record) pairs of several objects."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation}")
        csv = value_format == "csv"
        schemas = [self._require(name) for name, _ in items]
        ext: FieldInfo | None = None
        if operation == "upsert":
            if external_id_field is None or len({s.name for s in schemas}) > 1:
                raise ValueError("upsert needs one object and an external id field")
            if schemas:
                ext = schemas[0].field(external_id_field)
                if ext is None or not (ext.id_lookup or ext.type == "id"):
                    raise ValueError(f"{external_id_field} is not an external id field")
        now = format_datetime(datetime.now(UTC))
        with self._lock:
            undo: list[tuple[str, str, dict[str, Any] | None, bool]] = []
            ext_keys: dict[int, str] = {}
            in_batch_dups = (
                self._batch_duplicates(schemas[0], ext, items, csv, ext_keys)
                if ext is not None and ext.type != "id"
                else set()
            )
            results: list[dict[str, Any]] = []
            failed = False
            for position, (schema, (_, record)) in enumerate(zip(schemas, items, strict=True)):
                try:
                    if position in in_batch_dups:
                        value = self._get_key(record, ext.name)  # type: ignore[union-attr]
                        raise RecordError(
                            "DUPLICATE_EXTERNAL_ID",
                            f"Duplicate external id specified: {value}",
                            [ext.name],  # type: ignore[union-attr]
                        )
                    results.append(
                        self._write_one(
                            schema, operation, record, ext, csv, now, undo, ext_keys.get(position)
                        )
                    )
                except RecordError as error:
                    failed = True
                    results.append(_failure(error))
            if failed and all_or_none:
                self._undo(undo)
                results = [r if not r["success"] else _failure(ROLLED_BACK) for r in results]
                if operation == "upsert":
                    # An UpsertResult always carries `created`; rolled back, nothing was.
                    results = [{**r, "created": False} for r in results]
            elif undo:
                self.version += 1
            return results

    def _batch_duplicates(
        self,
        schema: ObjectSchema,
        ext: FieldInfo,
        items: list[tuple[str, dict[str, Any]]],
        csv: bool,
        keys: dict[int, str],
    ) -> set[int]:
        """Positions whose external id value appears more than once in the request.

        Fills keys (position -> index key) so the write does not coerce the value again.
        """
        seen: dict[str, list[int]] = {}
        for position, (_, record) in enumerate(items):
            value = self._get_key(record, ext.name)
            if value is None:
                continue
            try:
                key = ext.index_key(ext.coerce(ext, value, csv))
            except RecordError:
                continue
            keys[position] = key
            seen.setdefault(key, []).append(position)
        return {p for positions in seen.values() if len(positions) > 1 for p in positions}

    @staticmethod
    def _get_key(record: dict[str, Any], name: str) -> Any:
        if name in record:
            return record[name]
        lowered = name.lower()
        for key, value in record.items():
            if key.lower() == lowered:
                return value
        return None

    def _write_one(
        self,
        schema: ObjectSchema,
        operation: str,
        record: dict[str, Any],
        ext: FieldInfo | None,
        csv: bool,
        now: str,
        undo: list[tuple[str, str, dict[str, Any] | None, bool]],
        ext_key: str | None = None,
    ) -> dict[str, Any]:
        if operation == "insert":
            return self._insert(schema, record, csv, now, undo)
        if operation == "update":
            rid = self._existing_id(schema, self._get_key(record, "Id"), "update")
            return self._update(schema, rid, record, csv, now, undo)
        if operation == "upsert":
            assert ext is not None
            if ext.type == "id":
                raw_id = self._get_key(record, "Id")
                if raw_id is None:
                    return {**self._insert(schema, record, csv, now, undo), "created": True}
                rid = self._existing_id(schema, raw_id, "update")
                return {**self._update(schema, rid, record, csv, now, undo), "created": False}
            if ext_key is None:
                raw = self._get_key(record, ext.name)
                if raw is None:
                    raise RecordError("MISSING_ARGUMENT", f"{ext.name} not specified")
                ext_key = ext.index_key(ext.coerce(ext, raw, csv))
            matches = list(self._index(schema, ext).get(ext_key, ()))
            if not matches:
                return {**self._insert(schema, record, csv, now, undo), "created": True}
            if len(matches) > 1:
                raise RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"{ext.name}: more than one record found for external id field: "
                    f"[{', '.join(matches)}]",
                    [ext.name],
                )
            return {**self._update(schema, matches[0], record, csv, now, undo), "created": False}
        # delete / hardDelete
        rid = self._existing_id(schema, self._get_key(record, "Id"), "delete")
        self._check_lock(rid)
        if self.row_locks is not None:
            self.row_locks(schema, rid, {})
        old = self._live[schema.name][rid]
        self._store(schema, rid, None)
        if operation == "delete":
            self._deleted[schema.name][rid] = {**old, "IsDeleted": True, "SystemModstamp": now}
        else:
            self._purged.add(rid)
        undo.append((schema.name, rid, old, operation == "delete"))
        return {"id": rid, "success": True, "errors": []}

    def _existing_id(self, schema: ObjectSchema, raw: Any, operation: str) -> str:
        if raw is None:
            raise RecordError("MISSING_ARGUMENT", f"Id not specified in an {operation} call")
        rid = ids.normalize(raw)
        if rid is None or rid[:3] != schema.key_prefix:
            if operation == "delete":
                raise RecordError("MALFORMED_ID", f"malformed id {raw}")
            label = schema.fields["Id"].label if "Id" in schema.fields else f"{schema.label} ID"
            raise RecordError("MALFORMED_ID", f"{label}: id value of incorrect type: {raw}", ["Id"])
        if rid in self._live[schema.name]:
            return rid
        if rid in self._deleted[schema.name] or rid in self._purged or operation == "delete":
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")

    def _check_lock(self, rid: str | None) -> None:
        if self.lock_failure is not None and self.lock_failure():
            message = "unable to obtain exclusive access to this record"
            if rid:
                message += f" or 1 records: {rid}"
            raise RecordError("UNABLE_TO_LOCK_ROW", message)

    def _values(
        self, schema: ObjectSchema, record: dict[str, Any], csv: bool, creating: bool
    ) -> dict[str, Any]:
        """Validated field values of an incoming record (lookups resolved to ids)."""
        values: dict[str, Any] = {}
        not_writable: list[str] = []
        fast = schema.create_fast if creating else schema.update_fast
        for key, value in record.items():
            f = fast.get(key)
            if f is not None:
                values[key] = f.null_value if value is None else f.coerce(f, value, csv)
                continue
            f = schema.fields.get(key) or schema.by_lower.get(key.lower())
            if f is None:
                if key == "attributes" or (key.lower() == "id" and not creating):
                    continue
                if isinstance(value, dict):
                    rel = schema.relationships.get(key.lower())
                    if rel is not None:
                        values[rel.name] = self._resolve_lookup(rel, value, csv)
                        continue
                raise RecordError(
                    "INVALID_FIELD", f"No such column '{key}' on sobject of type {schema.name}"
                )
            if f.type == "id":
                if creating:
                    raise RecordError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call"
                    )
                continue
            if not (f.createable if creating else f.updateable):
                not_writable.append(f.name)
                continue
            if value is None:
                values[f.name] = False if f.type == "boolean" else None
            elif f.type == "reference":
                values[f.name] = self._check_reference(f, value)
            else:
                values[f.name] = f.coerce(f, value, csv)
        if not_writable:
            names = ", ".join(not_writable)
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {names}. Please check the security settings "
                "of this field and verify that it is read/write for your profile or "
                "permission set.",
                not_writable,
            )
        return values

    def _check_reference(self, f: FieldInfo, value: Any) -> str:
        rid = ids.normalize(value)
        target_label = f.label
        if rid is None:
            raise RecordError(
                "MALFORMED_ID", f"{target_label}: id value of incorrect type: {value}", [f.name]
            )
        target = self._by_prefix.get(rid[:3])
        known_targets = [t for t in f.reference_to if t.lower() in self._schemas]
        if target is None or target.name not in f.reference_to:
            if not known_targets and target is None:
                return rid  # references to objects this org does not model (e.g. Group)
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"{target_label}: id value of incorrect type: {value}",
                [f.name],
            )
        if rid in self._live[target.name]:
            return rid
        if rid in self._deleted[target.name] or rid in self._purged:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [f.name])
        raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f.name])

    def _resolve_lookup(self, rel: FieldInfo, value: dict[str, Any], csv: bool) -> str | None:
        attributes = value.get("attributes") or {}
        target_name = attributes.get("type") if isinstance(attributes, dict) else None
        if target_name and rel.reference_to:
            # A polymorphic lookup names its parent's object (`"What": {"attributes":
            # {"type": "Account"}, …}`; Bulk: `Account:What.…`); one the field cannot
            # point at is the record's error, as a wrong-type Id is for a reference field.
            known = next((t for t in rel.reference_to if t.lower() == target_name.lower()), None)
            if known is None:
                raise RecordError(
                    "INVALID_FIELD",
                    f"Invalid type {target_name} for the foreign key relationship "
                    f"{rel.relationship_name}; it takes: {', '.join(rel.reference_to)}",
                    [rel.name],
                )
            target_name = known
        target_name = target_name or (rel.reference_to[0] if rel.reference_to else None)
        target = self.schema(target_name) if target_name else None
        entries = [(k, v) for k, v in value.items() if k != "attributes"]
        if target is None or len(entries) != 1:
            raise RecordError(
                "INVALID_FIELD",
                f"Invalid foreign key relationship name {rel.relationship_name}",
                [rel.name],
            )
        field_name, key = entries[0]
        f = target.field(field_name)
        if f is None or not (f.id_lookup or f.type == "id"):
            raise RecordError(
                "INVALID_FIELD",
                f"Field {field_name} is not an External ID or indexed field for {target.name}",
                [rel.name],
            )
        if key is None:
            return None
        matches = self._match(target, f, key if f.type == "id" else f.coerce(f, key, csv))
        if not matches:
            raise RecordError(
                "INVALID_FIELD",
                f"Foreign key external ID: {key} not found for field {f.name} "
                f"in entity {target.name}",
            )
        if len(matches) > 1:
            raise RecordError(
                "DUPLICATE_EXTERNAL_ID",
                f"Foreign key external ID: {key} matches more than one record "
                f"for field {f.name} in entity {target.name}",
                [rel.name],
            )
        return matches[0]

    def _insert(
        self,
        schema: ObjectSchema,
        record: dict[str, Any],
        csv: bool,
        now: str,
        undo: list[tuple[str, str, dict[str, Any] | None, bool]],
    ) -> dict[str, Any]:
        values = self._values(schema, record, csv, creating=True)
        missing = [f.name for f in schema.required if values.get(f.name) is None]
        if missing:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        self._check_unique(schema, values, None)
        self._check_lock(None)
        if self.row_locks is not None:
            self.row_locks(schema, None, values)
        self._counter += 1
        rid = ids.make_id(schema.key_prefix, self._counter)
        new = dict(self._template(schema))
        new["Id"] = rid
        new["CreatedDate"] = new["LastModifiedDate"] = new["SystemModstamp"] = now
        fields = schema.fields
        for f in schema.auto_number_fields:
            counter = self._autonumbers.get((schema.name, f.name), 0) + 1
            self._autonumbers[(schema.name, f.name)] = counter
            new[f.name] = f"{counter:08d}"
        new.update(values)
        if new.get("OwnerId") is None and "OwnerId" in fields:
            new["OwnerId"] = self.user_id
        if self.write_rules is not None:
            self.write_rules(schema.name, new, None)
        self._derive(schema, new)
        self._store(schema, rid, new)
        undo.append((schema.name, rid, None, False))
        return {"id": rid, "success": True, "errors": []}

    def _update(
        self,
        schema: ObjectSchema,
        rid: str,
        record: dict[str, Any],
        csv: bool,
        now: str,
        undo: list[tuple[str, str, dict[str, Any] | None, bool]],
    ) -> dict[str, Any]:
        values = self._values(schema, record, csv, creating=False)
        cleared = [
            name
            for name, value in values.items()
            if value is None and not schema.fields[name].nillable
        ]
        if cleared:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(cleared)}]",
                cleared,
            )
        self._check_unique(schema, values, rid)
        self._check_lock(rid)
        if self.row_locks is not None:
            self.row_locks(schema, rid, values)
        old = self._live[schema.name][rid]
        # Copy on write: readers holding the old dict see a consistent record.
        new = {**old, **values, "LastModifiedDate": now, "SystemModstamp": now}
        if self.write_rules is not None:
            self.write_rules(schema.name, new, old)
        self._derive(schema, new)
        self._store(schema, rid, new)
        undo.append((schema.name, rid, old, False))
        return {"id": rid, "success": True, "errors": []}

    def _template(self, schema: ObjectSchema) -> dict[str, Any]:
        """What every new record of the object starts from (system fields, defaults)."""
        template = self._templates.get(schema.name)
        if template is None:
            template = {"Id": None, "IsDeleted": False}
            for name in ("OwnerId", "CreatedById", "LastModifiedById"):
                if name in schema.fields:
                    template[name] = self.user_id
            template.update(schema.create_defaults)
            self._templates[schema.name] = template
        return template

    def _derive(self, schema: ObjectSchema, record: dict[str, Any]) -> None:
        if schema.compound_name:
            parts = (record.get("FirstName"), record.get("LastName"))
            record["Name"] = " ".join(p for p in parts if p) or None
        if schema.name in ACTIVITY_OBJECTS:
            derive_activity(self, schema.name, record, record["LastModifiedDate"])

    def seed(self, object_name: str, values: dict[str, Any]) -> str:
        """Store a record as an admin's setup would (RecordType, AssignmentRule are read
        only to the API); returns its Id. For the emulator's own configuration."""
        schema = self._require(object_name)
        now = format_datetime(datetime.now(UTC))
        with self._lock:
            self._counter += 1
            rid = ids.make_id(schema.key_prefix, self._counter)
            record = {**self._template(schema), "Id": rid, "CreatedDate": now}
            record.update({"LastModifiedDate": now, "SystemModstamp": now, **values})
            self._store(schema, rid, record)
            self.version += 1
        return rid

    def touch(self, object_name: str, record_ids: Iterable[str], field_name: str) -> None:
        """Stamp `LastViewedDate`/`LastReferencedDate` (SOQL FOR VIEW / FOR REFERENCE).

        Not a change of the record: LastModifiedDate and SystemModstamp stay.
        """
        schema = self._require(object_name)
        if field_name not in schema.fields:
            return
        now = format_datetime(datetime.now(UTC))
        with self._lock:
            live = self._live[schema.name]
            for rid in record_ids:
                record = live.get(rid)
                if record is not None:
                    live[rid] = {**record, field_name: now}
            self.version += 1

    def _check_unique(self, schema: ObjectSchema, values: dict[str, Any], rid: str | None) -> None:
        for f in schema.unique_fields:
            value = values.get(f.name)
            if value is None:
                continue
            holders = self._index(schema, f).get(f.index_key(value))
            if not holders or holders == [rid]:
                continue
            others = [o for o in holders if o != rid]
            if others:
                raise RecordError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {f.name} duplicates value on record with id: "
                    f"{others[0]}",
                )

    # ---- storage and indexes ------------------------------------------------------

    def _index(self, schema: ObjectSchema, f: FieldInfo) -> dict[str, list[str]]:
        indexes = self._indexes[schema.name]
        index = indexes.get(f.name)
        if index is None:
            index = {}
            for rid, record in self._live[schema.name].items():
                value = record.get(f.name)
                if value is not None:
                    index.setdefault(f.index_key(value), []).append(rid)
            indexes[f.name] = index
        return index

    def _match(self, schema: ObjectSchema, f: FieldInfo, value: Any) -> list[str]:
        if f.type == "id":
            rid = ids.normalize(value)
            return [rid] if rid in self._live[schema.name] else []
        return list(self._index(schema, f).get(f.index_key(value), ()))

    def _store(self, schema: ObjectSchema, rid: str, new: dict[str, Any] | None) -> None:
        """Put (or with None remove) a live record, keeping the indexes in step."""
        live = self._live[schema.name]
        old = live.get(rid)
        for field_name, index in self._indexes[schema.name].items():
            f = schema.fields[field_name]
            old_value = old.get(field_name) if old else None
            new_value = new.get(field_name) if new else None
            if old_value == new_value:
                continue
            if old_value is not None:
                bucket = index.get(f.index_key(old_value))
                if bucket and rid in bucket:
                    bucket.remove(rid)
                    if not bucket:
                        del index[f.index_key(old_value)]
            if new_value is not None:
                index.setdefault(f.index_key(new_value), []).append(rid)
        if new is None:
            live.pop(rid, None)
        else:
            live[rid] = new

    def _undo(self, undo: list[tuple[str, str, dict[str, Any] | None, bool]]) -> None:
        for object_name, rid, old, _soft in reversed(undo):
            schema = self._schemas[object_name.lower()]
            if old is not None and rid not in self._live[schema.name]:
                # Undo a delete.
                self._deleted[schema.name].pop(rid, None)
                self._purged.discard(rid)
            self._store(schema, rid, old)

    # ---- identity, reset, persistence --------------------------------------------

    def _seed_identity(self) -> None:
        now = format_datetime(datetime.now(UTC))
        seeds = {
            "User": (
                self.user_id,
                {
                    "Username": self.username,
                    "LastName": "Admin",
                    "FirstName": "Emulator",
                    "Name": "Emulator Admin",
                    "Email": self.username,
                    "Alias": "eadmin",
                    "IsActive": True,
                    "TimeZoneSidKey": "America/Los_Angeles",
                    "LocaleSidKey": "en_US",
                    "LanguageLocaleKey": "en_US",
                    "EmailEncodingKey": "UTF-8",
                    "UserType": "Standard",
                },
            ),
            "Organization": (
                self.org_id,
                {
                    "Name": ORG_NAME,
                    "OrganizationType": "Developer Edition",
                    "IsSandbox": False,
                    "InstanceName": "EMU1",
                    "NamespacePrefix": None,
                    "TrialExpirationDate": None,
                    "Country": "US",
                    "DefaultLocaleSidKey": "en_US",
                    "LanguageLocaleKey": "en_US",
                    "TimeZoneSidKey": "America/Los_Angeles",
                },
            ),
        }
        for object_name, (rid, values) in seeds.items():
            schema = self.schema(object_name)
            if schema is None or rid in self._live[schema.name]:
                continue
            record = {
                "Id": rid,
                "IsDeleted": False,
                "CreatedDate": now,
                "LastModifiedDate": now,
                "SystemModstamp": now,
            }
            record.update({k: v for k, v in values.items() if k in schema.fields})
            self._store(schema, rid, record)

    def reset(self) -> None:
        """Drop every record (tests); schemas and identity stay."""
        with self._lock:
            for store in (self._live, self._deleted):
                for records in store.values():
                    records.clear()
            self._purged.clear()
            self._autonumbers.clear()
            for indexes in self._indexes.values():
                for index in indexes.values():
                    index.clear()
            self._seed_identity()
            self.version += 1

    def snapshot(self) -> dict[str, Any]:
        """Records and counters as plain data (describes come from the command line)."""
        with self._lock:
            return {
                "live": {k: dict(v) for k, v in self._live.items()},
                "deleted": {k: dict(v) for k, v in self._deleted.items()},
                "purged": set(self._purged),
                "counter": self._counter,
                "autonumbers": dict(self._autonumbers),
            }

    def restore(self, data: dict[str, Any]) -> None:
        with self._lock:
            for store, saved in ((self._live, data["live"]), (self._deleted, data["deleted"])):
                for object_name, records in saved.items():
                    schema = self.schema(object_name)
                    if schema is not None:  # an object dropped from the schema stays dropped
                        store[schema.name] = _exact_numbers(schema, records)
            self._purged = set(data["purged"])
            self._counter = max(self._counter, data["counter"])
            self._autonumbers = dict(data["autonumbers"])
            for schema in self._schemas.values():
                self._indexes[schema.name] = {}
                for f in schema.unique_fields:
                    self._index(schema, f)
            self._seed_identity()
