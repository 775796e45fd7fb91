"""Per-field behaviours of a model: `on_null`, `set_if_empty` and `send_fields: changed`.

The model file may write a field in a long form::

    fields:
      name: Name                       # the short form
      rating: {field: Rating, on_null: keep}
      lead_source: {field: LeadSource, set_if_empty: true}
    send_fields: changed

`ModelSpec.fields` stays `column -> field` (much code reads it); the options live beside
it in `ModelSpec.field_options` (Salesforce field -> `FieldOptions`). None of them changes
the canonical payload or its hash: they only decide, per record, which fields go out.

How a record leaves a field out: the batch handed to the client carries `OMIT_COLUMN`
(a list of field names per row); Composite omits those members from the record's JSON and
Bulk writes an empty cell for them (Bulk 2.0 leaves a field alone on an empty cell, so one
CSV layout holds records with different field sets and nothing is split into more jobs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError

from sf_activation.salesforce.soql import format_soql

# models.py imports this module, and loading models must stay quick (bench.startup): the
# Arrow and client modules are imported where a run uses them.
if TYPE_CHECKING:
    import pyarrow as pa

    from sf_activation.models import ModelSpec
    from sf_activation.salesforce.client import SalesforceClient
    from sf_activation.salesforce.describe import ObjectDescribe
    from sf_activation.summary import SyncSummary

log = logging.getLogger(__name__)

ON_NULL = ("keep", "clear")
SEND_FIELDS = ("all", "changed")

# A query's URL must stay under Salesforce's 16,384 bytes; leave room for the host and
# path. A page of query results holds up to 2,000 records, so larger chunks cost a call
# (nextRecordsUrl) each anyway.
MAX_QUERY_URL_CHARS = 15_000
MAX_READ_CHUNK = 2_000


class FieldOptions(BaseModel):
    """What the long form says about one field besides its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_null: Literal["keep", "clear"] | None = None  # None: the model's `nulls:`
    set_if_empty: bool = False


class _LongField(FieldOptions):
    field: str


def split_fields(
    where: str, fields: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, FieldOptions], list[str]]:
    """The `fields:` mapping as `column -> field` (what `ModelFile` validates), the options of
    long-form entries by column, and one problem line per bad long-form entry.

    Short-form values pass through untouched, so every model file written before the long
    form loads exactly as it did (and a non-string value still gets `ModelFile`'s error).
    """
    short: dict[str, Any] = {}
    options: dict[str, FieldOptions] = {}
    problems: list[str] = []
    allowed = ", ".join(_LongField.model_fields)
    for column, value in fields.items():
        if not isinstance(value, dict):
            short[column] = value
            continue
        try:
            entry = _LongField.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                got = err.get("input")
                if err["type"] == "extra_forbidden":
                    problems.append(
                        f"{where}: fields.{column}.{key}: unknown key; allowed keys: {allowed}"
                    )
                elif err["type"] == "missing":
                    problems.append(
                        f"{where}: fields.{column}.{key}: missing; the long form names its "
                        f"field (e.g. {column}: {{field: Name, on_null: keep}})"
                    )
                elif key == "on_null":
                    hint = (
                        " (YAML reads on/off/yes/no as true/false)" if isinstance(got, bool) else ""
                    )
                    problems.append(
                        f"{where}: fields.{column}.on_null: {got!r} is not one of "
                        f"{', '.join(ON_NULL)}{hint}"
                    )
                elif key == "set_if_empty":
                    problems.append(
                        f"{where}: fields.{column}.set_if_empty: {got!r} is not true or false"
                    )
                else:
                    problems.append(f"{where}: fields.{column}.{key}: {err['msg']} (got {got!r})")
            if isinstance(value.get("field"), str):
                short[column] = value["field"]  # still checked as a field name
            continue
        short[column] = entry.field
        if entry.on_null is not None or entry.set_if_empty:
            options[column] = FieldOptions(on_null=entry.on_null, set_if_empty=entry.set_if_empty)
    return short, options, problems


def option_problems(
    where: str,
    *,
    operation: str,
    fields: dict[str, str],
    options: dict[str, FieldOptions],
    external_id: str | None,
    send_fields: str,
) -> list[str]:
    """Checks of the options that need the rest of the model file."""
    problems: list[str] = []
    for column, opts in options.items():
        target = fields.get(column, "")
        if operation == "delete":
            problems.append(
                f"{where}: fields.{column}: on_null and set_if_empty do nothing for operation "
                "'delete' (no field is written)"
            )
            continue
        if opts.set_if_empty:
            if "." in target:
                problems.append(
                    f"{where}: fields.{column}.set_if_empty: {target!r} is a lookup; "
                    "set_if_empty applies to plain fields"
                )
            elif target.lower() == "id" or (external_id and target.lower() == external_id.lower()):
                problems.append(
                    f"{where}: fields.{column}.set_if_empty: {target!r} identifies the record "
                    "and is sent in every record"
                )
    if send_fields == "changed" and operation == "delete":
        problems.append(
            f"{where}: send_fields: 'changed' does nothing for operation 'delete' "
            "(no field is written)"
        )
    return problems


def describe_problems(spec: ModelSpec, describe: ObjectDescribe) -> list[str]:
    """`set_if_empty` and `send_fields: changed` against describe: the field exists and can
    be updated (both only matter when records are updated); set_if_empty's field must also
    be readable by SOQL, which every described field is."""
    where = spec.display_path
    problems: list[str] = []
    by_field = {target: column for column, target in spec.fields.items()}
    for target, opts in spec.field_options.items():
        if not opts.set_if_empty:
            continue
        column = by_field.get(target, target)
        described = describe.field(target)
        if described is None:
            problems.append(
                f"{where}: fields.{column}.set_if_empty: {spec.object} has no field {target!r}"
            )
        elif not described.updateable:
            problems.append(
                f"{where}: fields.{column}.set_if_empty: {spec.object}.{target} is not "
                "updateable, so it cannot be filled in on an existing record"
            )
    if spec.send_fields == "changed":
        for column, target in spec.fields.items():
            if "." in target or target.lower() == "id":
                continue
            described = describe.field(target)
            if described is None:
                problems.append(
                    f"{where}: fields.{column}: {spec.object} has no field {target!r} "
                    "(send_fields: changed compares it)"
                )
    return problems


def check_describe(spec: ModelSpec, describe: ObjectDescribe) -> None:
    from sf_activation.salesforce.errors import MappingError

    problems = describe_problems(spec, describe)
    if problems:
        raise MappingError("\n".join(problems))


class FieldBehaviours:
    """What a sync run does with the options while it sends: the per-field null modes for
    the request, and the fields each record leaves out (`OMIT_COLUMN`)."""

    def __init__(self, spec: ModelSpec, client: SalesforceClient, summary: SyncSummary) -> None:
        self.spec = spec
        self.client = client
        self.summary = summary
        self.set_if_empty = [f for f, o in spec.field_options.items() if o.set_if_empty]
        self.active = bool(self.set_if_empty) or spec.send_fields == "changed"

    @property
    def field_nulls(self) -> dict[str, Literal["clear", "keep"]]:
        """Fields whose null is not the model's `nulls:` (for `SendRequest.field_nulls`)."""
        return {
            f: o.on_null
            for f, o in self.spec.field_options.items()
            if o.on_null is not None and o.on_null != self.spec.nulls
        }

    def apply(self, operation: str, planned: pa.RecordBatch, out: pa.RecordBatch) -> pa.RecordBatch:
        """`out` (the client's batch of `planned` rows) with `OMIT_COLUMN`: the fields the
        plan found unchanged (`send_fields: changed`), plus, for records that exist, the
        `set_if_empty` fields Salesforce already holds a value in.

        The column is added to every batch of an active model, so a Bulk job's spooled rows
        share one schema."""
        import pyarrow as pa

        from sf_activation.salesforce.payload import OMIT_COLUMN

        if not self.active or operation == "delete":
            return out
        n = out.num_rows
        if OMIT_COLUMN in planned.schema.names:
            omit: list[list[str]] = [list(v or []) for v in planned.column(OMIT_COLUMN).to_pylist()]
        else:
            omit = [[] for _ in range(n)]
        if self.set_if_empty and operation in ("update", "upsert"):
            for row, held in enumerate(self._held(operation, out)):
                omit[row].extend(f for f in held if f not in omit[row])
        return out.append_column(OMIT_COLUMN, pa.array(omit, pa.list_(pa.string())))

    def _held(self, operation: str, out: pa.RecordBatch) -> list[set[str]]:
        """Per row, the set_if_empty fields whose record holds a value in Salesforce now.

        update (and insert's update pass) reads by the Id it will write to; upsert reads by
        the External ID it matches on, so a row never synced that will land on an existing
        record (made by a rep, or by an earlier load) finds it too. A row whose record does
        not exist holds nothing: the record is created with the value."""
        spec = self.spec
        if operation == "update":
            match, case_sensitive = "Id", True
        else:
            match = spec.external_id or ""
            described = self.client.describe(spec.object).field(match)
            case_sensitive = bool(described is not None and described.caseSensitive)
        if match not in out.schema.names:
            return [set() for _ in range(out.num_rows)]
        values = out.column(match).to_pylist()

        def key(value: Any) -> str:
            return str(value) if case_sensitive else str(value).lower()

        wanted = sorted({str(v) for v in values if v is not None})
        current = self._read(match, wanted, key)
        held: list[set[str]] = []
        for value in values:
            record = current.get(key(value)) if value is not None else None
            held.append(
                {f for f in self.set_if_empty if record is not None and _filled(record.get(f))}
            )
        return held

    def _read(self, match: str, values: list[str], key: Any) -> dict[str, dict[str, Any]]:
        """`SELECT Id, <match>, <fields> FROM <object> WHERE <match> IN (...)`, chunked so
        each query's URL fits (as the External ID lookups do), counted in the summary."""
        spec = self.spec
        select = ", ".join(dict.fromkeys(["Id", match, *self.set_if_empty]))
        base = f"SELECT {select} FROM {spec.object} WHERE {match} IN "
        budget = MAX_QUERY_URL_CHARS - len(quote(base, safe="")) - 200
        found: dict[str, dict[str, Any]] = {}
        calls_before = self.client.api_calls

        def run(part: list[str]) -> None:
            for record in self.client.query(format_soql(base + "{}", part)):
                found[key(record[match])] = record

        for part in _chunks(values, budget):
            run(part)
        reads = self.client.api_calls - calls_before
        self.summary.set_if_empty_reads += reads
        if values:
            log.info(
                "%s: read %s of %d records for set_if_empty in %d call(s)",
                spec.name, ", ".join(self.set_if_empty), len(values), reads,
            )  # fmt: skip
        return found


def _chunks(values: Iterable[str], budget: int) -> Iterable[list[str]]:
    part: list[str] = []
    size = 0
    for value in values:
        # Quoted, comma-separated and URL-encoded: 'v', becomes %27v%27%2C
        cost = len(quote(value.replace("\\", "\\\\").replace("'", "\\'"), safe="")) + 9
        if part and (len(part) >= MAX_READ_CHUNK or size + cost > budget):
            yield part
            part, size = [], 0
        part.append(value)
        size += cost
    if part:
        yield part


def _filled(value: Any) -> bool:
    """Salesforce holds a value: not null and not empty text. (A checkbox is never empty:
    false is a value.)"""
    return value is not None and value != ""
