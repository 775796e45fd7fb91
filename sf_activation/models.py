"""The model file: ``models/<name>.yml`` (+ its SQL), validated into a :class:`ModelSpec`.

Every mistake a user can make in a model file becomes one line naming the file and the
key (``models/accounts.yml: operation: 'upsret' is not one of insert, update, ...``),
so a typo stops the run before anything is sent. The keys and their meaning are a
product contract (DESIGN.md, docs/models.md): extend, never rename.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sf_activation.field_behaviours import (
    SEND_FIELDS,
    FieldOptions,
    option_problems,
    split_fields,
)

OPERATIONS = ("insert", "update", "upsert", "delete", "mirror")
TRANSPORTS = ("auto", "composite", "bulk")
NULLS = ("clear", "keep")
CADENCES = ("hourly", "daily", "weekly", "monthly")
SCHEDULE_STATUSES = ("stopped", "running")

# Model names become S3 keys, file names and Dagster asset keys: nothing that could
# climb out of a prefix ("..", "/") or need quoting. Dagster itself allows [A-Za-z0-9_].
MODEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
# Salesforce API names: Account, Foo__c, ns__Foo__c. Lookups add one ".Field" hop.
SF_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SF_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)?$")
# A polymorphic lookup names the parent object too: `What:Account.External_Id__c`.
SF_POLYMORPHIC_RE = re.compile(
    r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*$"
)
DUPLICATE_RULES = ("enforce", "allow_save")
DELETE_MODES = ("soft", "hard")
DIFF_ENGINES = ("local", "warehouse")

# Salesforce's concurrent long-running request limit per org is 25; more than that
# from one model would only earn REQUEST_LIMIT_EXCEEDED.
MAX_CONCURRENCY = 25


class ModelError(Exception):
    """A model file that cannot work. ``problems`` holds one line per mistake."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class PartitionBy(BaseModel):
    """Optional time window for insert-only activity models (events, tasks, logs).

    A run reads one window: the query is wrapped as
    ``SELECT * FROM (<sql>) WHERE <column> >= :start AND <column> < :end``
    (see :meth:`ModelSpec.partition_sql`), so history can be backfilled window by window.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    # datetime first: a quoted "2024-01-01T00:00:00+02:00" is a datetime, not its date.
    start: dt.datetime | dt.date
    cadence: Literal["hourly", "daily", "weekly", "monthly"] = "daily"
    end: dt.datetime | dt.date | None = None  # open-ended (up to now) when absent


class ModelFile(BaseModel):
    """The keys a model file may hold, exactly as written (extra keys are typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str
    operation: Literal["insert", "update", "upsert", "delete", "mirror"]
    primary_key: str
    external_id: str | None = None
    sql: str | None = None
    query: str | None = None
    fields: dict[str, str]
    transport: Literal["auto", "composite", "bulk"] = "auto"
    bulk_threshold: int = Field(default=10_000, ge=1)
    schedule: str | None = None
    # A schedule only starts by itself when the model file says so: a fresh deployment
    # (or `make dev` on a new clone) must not start syncing before anyone asked it to.
    schedule_status: Literal["stopped", "running"] = "stopped"
    dbt_models: list[str] = Field(default_factory=list)
    max_reject_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    nulls: Literal["clear", "keep"] = "clear"
    max_delete_rate: float = Field(default=0.2, ge=0.0, le=1.0)
    redact: list[str] = Field(default_factory=list)
    partition_by: PartitionBy | None = None
    concurrency: int = Field(default=8, ge=1, le=MAX_CONCURRENCY)
    description: str | None = None
    # changed: an update sends only the fields whose value changed (field_behaviours.py)
    send_fields: Literal["all", "changed"] = "all"
    # Salesforce switches (docs/models.md "Record types, assignment and duplicate rules").
    record_type: str | None = Field(default=None, min_length=1)
    # false: no assignment rule (Salesforce's REST default is to run them); true: the
    # active rule; text: that AssignmentRule Id.
    assignment_rules: bool | str = False
    duplicate_rules: Literal["enforce", "allow_save"] = "enforce"
    delete_mode: Literal["soft", "hard"] = "soft"
    # Where the diff runs (sf_activation/warehouse_diff.py); unset: `warehouse` when
    # SF_ACTIVATION_WAREHOUSE_STATE_SCHEMA is set, else `local`.
    diff: Literal["local", "warehouse"] | None = None


class ModelSpec(BaseModel):
    """A validated model: what the warehouse, diff and sync layers read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: Path
    object: str
    operation: Literal["insert", "update", "upsert", "delete", "mirror"]
    primary_key: str
    external_id: str | None
    sql_text: str
    sql_path: Path | None  # the SQL file, or None for inline `query:`
    fields: dict[str, str]  # model column -> Salesforce field, in file order
    transport: Literal["auto", "composite", "bulk"]
    bulk_threshold: int
    schedule: str | None
    schedule_status: Literal["stopped", "running"] = "stopped"
    dbt_models: list[str]
    max_reject_rate: float
    nulls: Literal["clear", "keep"]
    max_delete_rate: float
    redact: list[str]
    partition_by: PartitionBy | None
    concurrency: int
    description: str | None
    # Salesforce field -> its long-form options (on_null, set_if_empty); `fields` stays
    # column -> field, as everything that reads it expects.
    field_options: dict[str, FieldOptions] = Field(default_factory=dict)
    send_fields: Literal["all", "changed"] = "all"
    record_type: str | None = None
    assignment_rules: bool | str = False
    duplicate_rules: Literal["enforce", "allow_save"] = "enforce"
    delete_mode: Literal["soft", "hard"] = "soft"
    diff: Literal["local", "warehouse"] | None = None

    @property
    def write_operation(self) -> Literal["insert", "update", "upsert", "delete"]:
        """What goes to Salesforce for the write part (mirror upserts, then deletes)."""
        return "upsert" if self.operation == "mirror" else self.operation

    @property
    def match_field(self) -> str | None:
        """The field records are matched on: ``Id`` when a column maps to it (update,
        delete), else ``external_id``; None for insert."""
        if self.operation == "insert":
            return None
        if self.operation in ("update", "delete") and "Id" in self.fields.values():
            return "Id"
        return self.external_id

    @property
    def primary_key_redacted(self) -> bool:
        """The primary key maps to a `redact:` field: it is masked wherever it is shown."""
        return self.fields.get(self.primary_key) in set(self.redact)

    @property
    def columns(self) -> list[str]:
        """Model columns the query must return: the primary key, then the mapped ones."""
        cols = [self.primary_key]
        cols += [c for c in self.fields if c != self.primary_key]
        if self.partition_by and self.partition_by.column not in cols:
            cols.append(self.partition_by.column)
        return cols

    @property
    def display_path(self) -> str:
        return display_path(self.path)

    def partition_sql(self) -> str:
        """The query restricted to one window, with SQLAlchemy-style bind parameters
        ``:start`` and ``:end`` (the window's bounds, end exclusive)."""
        if self.partition_by is None:
            return self.sql_text
        col = _quote_ident(self.partition_by.column)
        inner = self.sql_text.strip().rstrip(";")
        return f"SELECT * FROM (\n{inner}\n) AS _model WHERE {col} >= :start AND {col} < :end"


def display_path(path: Path) -> str:
    """The path as a user would type it: relative to the working directory when inside it."""
    try:
        return path.absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML would keep the last one silently,
    and a column mapped twice is exactly the kind of typo this loader exists to catch."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} appears twice (lines {seen[key]} and {line})",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _yaml_problem(where: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{problem} ({context})" if context and "appears twice" not in problem else problem
    if mark is not None:
        return f"{where}: line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {text}"
    return f"{where}: YAML syntax error: {text}"


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) if loc else "(top level)"


def _pydantic_problems(where: str, exc: ValidationError) -> list[str]:
    """One readable line per pydantic error, naming the key and the offending value."""
    known = list(ModelFile.model_fields)
    part_known = list(PartitionBy.model_fields)
    problems: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        key = _loc(loc)
        value = err.get("input")
        if kind == "extra_forbidden":
            choices = part_known if loc[:1] == ("partition_by",) else known
            hint = difflib.get_close_matches(str(loc[-1]), choices, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(
                f"{where}: {key}: unknown key{suggestion}; allowed keys: {', '.join(choices)}"
            )
        elif kind == "missing":
            problems.append(f"{where}: {key}: missing required key")
        elif kind == "literal_error":
            allowed = {
                "operation": OPERATIONS,
                "transport": TRANSPORTS,
                "nulls": NULLS,
                "schedule_status": SCHEDULE_STATUSES,
                "partition_by.cadence": CADENCES,
                "send_fields": SEND_FIELDS,
                "duplicate_rules": DUPLICATE_RULES,
                "delete_mode": DELETE_MODES,
                "diff": DIFF_ENGINES,
            }.get(key)
            allowed_text = ", ".join(allowed) if allowed else err.get("ctx", {}).get("expected", "")
            # YAML reads a bare on/off/yes/no as true/false: say so, the file shows no True.
            hint = " (YAML reads on/off/yes/no as true/false)" if isinstance(value, bool) else ""
            problems.append(f"{where}: {key}: {value!r} is not one of {allowed_text}{hint}")
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            ctx = err.get("ctx", {})
            field = ModelFile.model_fields.get(str(loc[0]))
            lo = hi = None
            for meta in getattr(field, "metadata", []) if field else []:
                lo = getattr(meta, "ge", lo)
                hi = getattr(meta, "le", hi)
            bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else str(ctx)
            problems.append(f"{where}: {key}: {value!r} is out of range, must be {bounds}")
        else:
            problems.append(f"{where}: {key}: {err['msg']} (got {value!r})")
    return problems


def _semantic_problems(where: str, mf: ModelFile) -> list[str]:
    """Checks that need more than one key at a time."""
    problems: list[str] = []
    op = mf.operation
    targets = list(mf.fields.values())

    if not SF_NAME_RE.match(mf.object):
        problems.append(f"{where}: object: {mf.object!r} is not a Salesforce object API name")
    if not mf.primary_key.strip():
        problems.append(f"{where}: primary_key: must name a model column")
    if not mf.fields:
        problems.append(f"{where}: fields: maps no column; map at least one column to a field")

    by_target: dict[str, list[str]] = {}
    for column, target in mf.fields.items():
        if not str(column).strip():
            problems.append(f"{where}: fields: an empty column name is mapped to {target!r}")
        if not SF_FIELD_RE.match(target) and not SF_POLYMORPHIC_RE.match(target):
            problems.append(
                f"{where}: fields.{column}: {target!r} is not a Salesforce field API name "
                "(Field, Custom__c, or Relationship.External_Id__c for a lookup)"
            )
        by_target.setdefault(target.lower(), []).append(column)
    for cols in by_target.values():
        if len(cols) > 1:
            problems.append(
                f"{where}: fields: columns {', '.join(repr(c) for c in cols)} are all mapped "
                f"to the same field {mf.fields[cols[0]]!r}; map each field once"
            )

    # external_id: which operations need it, and it must be sent in every record.
    maps_id = "Id" in targets
    if op in ("upsert", "mirror") and not mf.external_id:
        problems.append(
            f"{where}: external_id: missing; operation '{op}' matches records on an "
            "External ID field (e.g. external_id: External_Id__c)"
        )
    if op in ("update", "delete") and not mf.external_id and not maps_id:
        problems.append(
            f"{where}: external_id: missing; operation '{op}' matches records on Id "
            "(map a column to Id) or on an External ID field (set external_id)"
        )
    if mf.external_id:
        if not SF_NAME_RE.match(mf.external_id):
            problems.append(
                f"{where}: external_id: {mf.external_id!r} is not a Salesforce field API name"
            )
        elif mf.external_id not in targets and op != "insert":
            problems.append(
                f"{where}: external_id: {mf.external_id!r} is not mapped by any column in "
                f"fields; map the column holding it (e.g. {mf.primary_key}: {mf.external_id})"
            )
    if maps_id and op in ("insert", "upsert", "mirror"):
        problems.append(
            f"{where}: fields: a column is mapped to Id, but operation '{op}' "
            + ("creates records" if op == "insert" else "matches on external_id")
            + "; Id can only be sent by update and delete"
        )

    # sql / query: exactly one.
    if mf.sql is None and mf.query is None:
        problems.append(
            f"{where}: sql: missing; give `sql: <file>.sql` (beside the model) or inline `query:`"
        )
    elif mf.sql is not None and mf.query is not None:
        problems.append(f"{where}: sql: both `sql` and `query` are set; keep one")
    elif mf.query is not None and not mf.query.strip():
        problems.append(f"{where}: query: is empty")

    if mf.schedule is not None and not croniter.is_valid(mf.schedule):
        problems.append(
            f"{where}: schedule: {mf.schedule!r} is not a valid cron expression "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '0 * * * *')"
        )
    if mf.schedule is None and mf.schedule_status == "running":
        problems.append(
            f"{where}: schedule_status: 'running' needs a `schedule:` (cron) to run on; "
            "add one or remove schedule_status"
        )
    for i, name in enumerate(mf.dbt_models):
        if not name.strip():
            problems.append(f"{where}: dbt_models.{i}: empty dbt model name")

    mapped = {t for t in targets}
    for i, field in enumerate(mf.redact):
        if field not in mapped:
            problems.append(
                f"{where}: redact.{i}: {field!r} is not a mapped Salesforce field "
                f"(mapped: {', '.join(targets)})"
            )

    problems += _switch_problems(where, mf)
    if mf.partition_by is not None:
        pb = mf.partition_by
        if op != "insert":
            problems.append(
                f"{where}: partition_by: only insert models can be partitioned by time "
                f"(operation is '{op}'); a window would make other operations miss rows"
            )
        if pb.end is not None and _as_datetime(pb.end) <= _as_datetime(pb.start):
            problems.append(f"{where}: partition_by.end: {pb.end} is not after start {pb.start}")
    return problems


def _switch_problems(where: str, mf: ModelFile) -> list[str]:
    """record_type / assignment_rules / duplicate_rules / delete_mode across other keys."""
    problems: list[str] = []
    if mf.record_type is not None and not SF_NAME_RE.match(mf.record_type):
        problems.append(
            f"{where}: record_type: {mf.record_type!r} is not a record type DeveloperName "
            "(letters, digits and underscores, e.g. record_type: Customer)"
        )
    if mf.record_type is not None and mf.operation == "delete":
        problems.append(f"{where}: record_type: a delete model creates no records; remove it")
    rule = mf.assignment_rules
    if isinstance(rule, str) and not re.fullmatch(r"01Q[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?", rule):
        problems.append(
            f"{where}: assignment_rules: {rule!r} is not true, false or an AssignmentRule Id "
            "(15 or 18 characters starting 01Q)"
        )
    if mf.duplicate_rules == "allow_save" and mf.transport == "bulk":
        problems.append(
            f"{where}: duplicate_rules: allow_save needs sObject Collections (Bulk API 2.0 has "
            "no duplicate rule header); use transport: composite or auto"
        )
    if mf.delete_mode == "hard":
        if mf.operation not in ("delete", "mirror"):
            problems.append(
                f"{where}: delete_mode: hard only applies to delete and mirror models "
                f"(operation is '{mf.operation}')"
            )
        if mf.transport == "composite":
            problems.append(
                f"{where}: delete_mode: hard is a Bulk API 2.0 hardDelete job, which "
                "transport: composite rules out; use transport: bulk or auto"
            )
    return problems


def _as_datetime(value: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def load_model(path: Path | str) -> ModelSpec:
    """Load and validate one model file; raise :class:`ModelError` listing every mistake."""
    path = Path(path)
    where = display_path(path)
    name = path.stem
    if not MODEL_NAME_RE.match(name):
        raise ModelError(
            f"{where}: model name {name!r} (the file name) must be letters, digits and "
            "underscores, not starting with a digit (it becomes an S3 key and a Dagster asset key)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: cannot read: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ModelError(_yaml_problem(where, exc)) from None
    if raw is None:
        raise ModelError(f"{where}: (top level): the file is empty; expected object, operation, …")
    if not isinstance(raw, dict):
        raise ModelError(
            f"{where}: (top level): expected a mapping of keys (object: …), "
            f"got a {type(raw).__name__}"
        )
    # Keys must be strings: `yes:` or `1:` would otherwise turn into odd errors later.
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise ModelError([f"{where}: {k!r}: keys must be text" for k in bad_keys])
    fields_raw = raw.get("fields")
    long_problems: list[str] = []
    options_by_column: dict[str, FieldOptions] = {}
    if isinstance(fields_raw, dict):
        # YAML turns `on: Foo` into True, `123: Bar` into 123; columns are text.
        # A long-form entry ({field: Rating, on_null: keep}) becomes its field name here,
        # its options kept aside, so ModelFile.fields stays column -> field.
        fields_short, options_by_column, long_problems = split_fields(
            where, {str(k): v for k, v in fields_raw.items()}
        )
        raw = {**raw, "fields": fields_short}

    try:
        mf = ModelFile.model_validate(raw)
    except ValidationError as exc:
        raise ModelError(long_problems + _pydantic_problems(where, exc)) from None

    problems = long_problems + _semantic_problems(where, mf)
    problems += option_problems(
        where,
        operation=mf.operation,
        fields=mf.fields,
        options=options_by_column,
        external_id=mf.external_id,
        send_fields=mf.send_fields,
    )
    sql_text = mf.query or ""
    sql_path: Path | None = None
    if mf.sql is not None and mf.query is None:
        sql_path = path.parent / mf.sql
        if Path(mf.sql).is_absolute() or ".." in Path(mf.sql).parts:
            problems.append(f"{where}: sql: {mf.sql!r} must be a file beside the model file")
        elif not sql_path.is_file():
            problems.append(
                f"{where}: sql: file {mf.sql!r} not found (looked for {display_path(sql_path)})"
            )
        else:
            try:
                sql_text = sql_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{where}: sql: cannot read {sql_path.as_posix()}: {exc}")
            else:
                if not sql_text.strip():
                    problems.append(f"{where}: sql: {sql_path.as_posix()} is empty")
    if problems:
        raise ModelError(problems)

    return ModelSpec(
        name=name,
        path=path,
        object=mf.object,
        operation=mf.operation,
        primary_key=mf.primary_key,
        external_id=mf.external_id,
        sql_text=sql_text,
        sql_path=sql_path,
        fields=dict(mf.fields),
        transport=mf.transport,
        bulk_threshold=mf.bulk_threshold,
        schedule=mf.schedule,
        schedule_status=mf.schedule_status,
        dbt_models=list(mf.dbt_models),
        max_reject_rate=mf.max_reject_rate,
        nulls=mf.nulls,
        max_delete_rate=mf.max_delete_rate,
        redact=list(mf.redact),
        partition_by=mf.partition_by,
        concurrency=mf.concurrency,
        description=mf.description,
        field_options={mf.fields[c]: o for c, o in options_by_column.items() if c in mf.fields},
        send_fields=mf.send_fields,
        record_type=mf.record_type,
        assignment_rules=mf.assignment_rules,
        duplicate_rules=mf.duplicate_rules,
        delete_mode=mf.delete_mode,
        diff=mf.diff,
    )


@dataclass(frozen=True)
class LoadedModels:
    """Every model file of a directory: the specs that load, and per model name the
    :class:`ModelError` of the file(s) that do not (the Dagster layer shows one broken
    file as that model's error instead of failing every model; see
    :func:`load_models_isolated`)."""

    specs: dict[str, ModelSpec] = dataclass_field(default_factory=dict)
    errors: dict[str, ModelError] = dataclass_field(default_factory=dict)
    # model name -> its file(s); more than one only when the name is defined twice
    paths: dict[str, list[Path]] = dataclass_field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Every problem line, in file order (as :func:`load_models` raises them)."""
        return [line for error in self.errors.values() for line in error.problems]


def load_models_isolated(models_dir: Path | str) -> LoadedModels:
    """Load every ``*.yml`` / ``*.yaml`` in ``models_dir`` (not recursive), sorted by name,
    keeping each file's mistakes to its own model.

    Checks across files still apply: two files defining one model name are an error of
    that name, and neither file's spec is used (which one was meant cannot be told).
    A missing directory is still raised: there is no model to keep.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelError(f"{display_path(models_dir)}: models directory not found")
    paths = sorted(p for p in models_dir.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
    by_name: dict[str, list[Path]] = {}
    for path in paths:
        by_name.setdefault(path.stem, []).append(path)
    loaded = LoadedModels(paths=by_name)
    for name, files in by_name.items():
        problems: list[str] = []
        try:
            spec: ModelSpec | None = load_model(files[0])
        except ModelError as exc:
            spec = None
            problems.extend(exc.problems)
        for other in files[1:]:
            problems.append(
                f"{display_path(other)}: model name {name!r} is also defined by "
                f"{display_path(files[0])}; model names must be unique"
            )
        if problems:
            loaded.errors[name] = ModelError(problems)
        elif spec is not None:
            loaded.specs[name] = spec
    return loaded


def load_models(models_dir: Path | str) -> dict[str, ModelSpec]:
    """Load every ``*.yml`` / ``*.yaml`` in ``models_dir`` (not recursive), sorted by name.

    All files are checked before raising, so one run shows every mistake at once.
    """
    loaded = load_models_isolated(models_dir)
    if loaded.errors:
        raise ModelError(loaded.problems)
    return loaded.specs


def check_columns(spec: ModelSpec, columns: Iterable[str]) -> None:
    """Check the model against the columns its query returns (from the warehouse).

    Raises :class:`ModelError` naming the file and key for every column the model needs
    that the query does not return.
    """
    cols = list(columns)
    have = set(cols)
    lower = {c.lower(): c for c in cols}
    where = spec.display_path
    listing = ", ".join(cols) if len(cols) <= 30 else ", ".join(cols[:30]) + ", …"
    problems: list[str] = []

    def missing(key: str, column: str) -> str:
        hint = ""
        if column.lower() in lower:
            hint = f" (the query returns {lower[column.lower()]!r}; names are case-sensitive)"
        return (
            f"{where}: {key}: column {column!r} is not returned by the query{hint}; "
            f"query columns: {listing}"
        )

    if spec.primary_key not in have:
        problems.append(missing("primary_key", spec.primary_key))
    for column in spec.fields:
        if column not in have:
            problems.append(missing(f"fields.{column}", column))
    if spec.partition_by and spec.partition_by.column not in have:
        problems.append(missing("partition_by.column", spec.partition_by.column))
    if problems:
        raise ModelError(problems)


__all__ = [
    "LoadedModels",
    "ModelError",
    "ModelFile",
    "ModelSpec",
    "PartitionBy",
    "check_columns",
    "load_model",
    "load_models",
    "load_models_isolated",
]
