"""Model files: every mistake is one message naming the file and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sf_activation.models import (
    ModelError,
    check_columns,
    load_model,
    load_models,
    load_models_isolated,
)

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"

GOOD = """\
object: Account
operation: upsert
primary_key: account_id
external_id: External_Id__c
sql: accounts.sql
fields:
  account_id: External_Id__c
  name: Name
  arr_usd: AnnualRevenue
  parent_id: Parent.External_Id__c
"""


def write(tmp_path: Path, text: str, name: str = "accounts", sql: str | None = "select 1") -> Path:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    path = models / f"{name}.yml"
    path.write_text(textwrap.dedent(text))
    if sql is not None:
        (models / "accounts.sql").write_text(sql)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path)
    return str(info.value)


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_good_model_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_model(write(tmp_path, GOOD))
    assert spec.name == "accounts"
    assert spec.sql_text == "select 1"
    assert spec.fields["parent_id"] == "Parent.External_Id__c"
    assert list(spec.fields) == ["account_id", "name", "arr_usd", "parent_id"]  # file order
    assert (spec.transport, spec.bulk_threshold, spec.nulls) == ("auto", 10_000, "clear")
    assert (spec.max_reject_rate, spec.max_delete_rate, spec.concurrency) == (0.05, 0.2, 8)
    assert spec.schedule is None and spec.dbt_models == [] and spec.redact == []
    assert spec.write_operation == "upsert" and spec.match_field == "External_Id__c"
    assert spec.columns == ["account_id", "name", "arr_usd", "parent_id"]


def test_every_optional_key(tmp_path: Path) -> None:
    text = GOOD + textwrap.dedent(
        """\
        transport: bulk
        bulk_threshold: 500
        schedule: "*/15 * * * *"
        dbt_models: [fct_accounts]
        max_reject_rate: 0.1
        nulls: keep
        max_delete_rate: 0.5
        redact: [Name]
        concurrency: 4
        description: Accounts from the CRM mart
        """
    )
    spec = load_model(write(tmp_path, text))
    assert spec.transport == "bulk" and spec.schedule == "*/15 * * * *"
    assert spec.schedule_status == "stopped"  # a schedule starts only when the file says so
    running = load_model(write(tmp_path, text + "schedule_status: running\n"))
    assert running.schedule_status == "running"
    assert spec.redact == ["Name"] and spec.concurrency == 4 and spec.nulls == "keep"


def test_inline_query_and_mirror(tmp_path: Path) -> None:
    text = edit(GOOD, "sql: accounts.sql", "query: select 1 as account_id")
    text = edit(text, "operation: upsert", "operation: mirror")
    spec = load_model(write(tmp_path, text, sql=None))
    assert spec.sql_text == "select 1 as account_id" and spec.sql_path is None
    assert spec.write_operation == "upsert"


def test_partition_by_for_insert(tmp_path: Path) -> None:
    text = """\
    object: Task
    operation: insert
    primary_key: event_id
    query: select * from events
    fields: {event_id: Event_Id__c, subject: Subject}
    partition_by: {column: occurred_at, start: 2026-01-01, cadence: daily}
    """
    spec = load_model(write(tmp_path, text, name="events", sql=None))
    assert spec.partition_by is not None and spec.partition_by.column == "occurred_at"
    assert spec.match_field is None
    assert '"occurred_at" >= :start AND "occurred_at" < :end' in spec.partition_sql()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "operation: upsert",
            "operation: upsret",
            "accounts.yml: operation: 'upsret' is not one of insert, update, upsert, delete, mirror",
        ),
        ("object: Account\n", "", "accounts.yml: object: missing required key"),
        ("primary_key: account_id\n", "", "accounts.yml: primary_key: missing required key"),
        (
            "operation: upsert",
            "opration: upsert",
            "accounts.yml: opration: unknown key (did you mean 'operation'?)",
        ),
        (
            "external_id: External_Id__c\n",
            "",
            "accounts.yml: external_id: missing; operation 'upsert'",
        ),
        (
            "sql: accounts.sql",
            "sql: acounts.sql",
            "accounts.yml: sql: file 'acounts.sql' not found",
        ),
        (
            "sql: accounts.sql",
            "sql: ../secret.sql",
            "accounts.yml: sql: '../secret.sql' must be a file beside",
        ),
        (
            "sql: accounts.sql",
            "sql: accounts.sql\nquery: select 2",
            "accounts.yml: sql: both `sql` and `query` are set",
        ),
        ("sql: accounts.sql\n", "", "accounts.yml: sql: missing; give `sql: <file>.sql`"),
        (
            "  name: Name",
            "  name: Name\n  nom: Name",
            "accounts.yml: fields: columns 'name', 'nom' are all mapped to the same field 'Name'",
        ),
        (
            "  name: Name",
            "  name: Name\n  name: Site",
            "line 9, column 3: YAML syntax error: key 'name' appears twice (lines 8 and 9)",
        ),
        (
            "fields:",
            "schedule: '0 * * *'\nfields:",
            "accounts.yml: schedule: '0 * * *' is not a valid cron expression",
        ),
        (
            "fields:",
            "max_reject_rate: 1.5\nfields:",
            "accounts.yml: max_reject_rate: 1.5 is out of range, must be between 0.0 and 1.0",
        ),
        (
            "fields:",
            "max_delete_rate: -0.1\nfields:",
            "accounts.yml: max_delete_rate: -0.1 is out of range",
        ),
        (
            "fields:",
            "transport: rest\nfields:",
            "accounts.yml: transport: 'rest' is not one of auto, composite, bulk",
        ),
        (
            "fields:",
            "nulls: drop\nfields:",
            "accounts.yml: nulls: 'drop' is not one of clear, keep",
        ),
        (
            "fields:",
            "concurrency: 100\nfields:",
            "accounts.yml: concurrency: 100 is out of range, must be between 1 and 25",
        ),
        ("fields:", "bulk_threshold: lots\nfields:", "accounts.yml: bulk_threshold: "),
        (
            "fields:",
            "redact: [Email]\nfields:",
            "accounts.yml: redact.0: 'Email' is not a mapped Salesforce field",
        ),
        (
            "fields:",
            "partition_by: {column: x, start: 2026-01-01}\nfields:",
            "accounts.yml: partition_by: only insert models",
        ),
        (
            "fields:",
            "partition_by: {colum: x, start: 2026-01-01}\nfields:",
            "accounts.yml: partition_by.colum: unknown key (did you mean 'column'?)",
        ),
        (
            "object: Account",
            "object: Account Name",
            "accounts.yml: object: 'Account Name' is not a Salesforce object API name",
        ),
        (
            "AnnualRevenue",
            "Annual Revenue",
            "accounts.yml: fields.arr_usd: 'Annual Revenue' is not a Salesforce field API name",
        ),
        (
            "  account_id: External_Id__c\n",
            "",
            "accounts.yml: external_id: 'External_Id__c' is not mapped by any column",
        ),
        (
            "  name: Name",
            "  name: Name\n  sfid: Id",
            "accounts.yml: fields: a column is mapped to Id, but operation 'upsert'",
        ),
        (
            "operation: upsert",
            "operation: [upsert]",
            "accounts.yml: operation: ['upsert'] is not one of",
        ),
        ("fields:", "fields: [a, b]\nx_fields:", "accounts.yml: fields: "),
        (
            "fields:",
            "schedule: '0 * * * *'\nschedule_status: on\nfields:",
            "accounts.yml: schedule_status: True is not one of stopped, running (YAML reads on/off",
        ),
        (
            "fields:",
            "schedule: '0 * * * *'\nschedule_status: started\nfields:",
            "accounts.yml: schedule_status: 'started' is not one of stopped, running",
        ),
        (
            "fields:",
            "schedule_status: running\nfields:",
            "accounts.yml: schedule_status: 'running' needs a `schedule:` (cron) to run on",
        ),
    ],
)
def test_model_errors_name_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = error_of(write(tmp_path, edit(GOOD, old, new)))
    assert expected in message, message
    assert "models/accounts.yml:" in message


def test_update_and_delete_need_id_or_external_id(tmp_path: Path) -> None:
    text = edit(GOOD, "external_id: External_Id__c\n", "")
    for op in ("update", "delete"):
        message = error_of(write(tmp_path, edit(text, "operation: upsert", f"operation: {op}")))
        assert f"models/accounts.yml: external_id: missing; operation '{op}'" in message
        by_id = edit(text, "operation: upsert", f"operation: {op}")
        by_id = edit(by_id, "  account_id: External_Id__c", "  account_id: Id")
        spec = load_model(write(tmp_path, by_id))
        assert spec.match_field == "Id"


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "object: Account\noperation: [upsert\nprimary_key: x\n"))
    assert "models/accounts.yml: line 3, column " in message
    assert "YAML syntax error" in message


def test_not_a_mapping_and_empty(tmp_path: Path) -> None:
    assert "expected a mapping" in error_of(write(tmp_path, "- object: Account\n"))
    assert "the file is empty" in error_of(write(tmp_path, "# nothing\n"))


@pytest.mark.parametrize("stem", ["bad-name", "has.dot", "9lives", "sp ace"])
def test_bad_model_names(tmp_path: Path, stem: str) -> None:
    message = error_of(write(tmp_path, GOOD, name=stem))
    assert f"models/{stem}.yml: model name '{stem}'" in message
    assert "letters, digits and underscores" in message


def test_load_models_collects_every_error(tmp_path: Path) -> None:
    write(tmp_path, GOOD, name="accounts")
    write(tmp_path, edit(GOOD, "operation: upsert", "operation: upsret"), name="broken1")
    write(tmp_path, edit(GOOD, "sql: accounts.sql", "sql: nope.sql"), name="broken2")
    (tmp_path / "models" / "accounts.yaml").write_text(GOOD)
    (tmp_path / "models" / "README.md").write_text("not a model")
    with pytest.raises(ModelError) as info:
        load_models(tmp_path / "models")
    problems = info.value.problems
    assert len(problems) == 3
    assert any("broken1.yml: operation:" in p for p in problems)
    assert any("broken2.yml: sql: file 'nope.sql' not found" in p for p in problems)
    assert any("model name 'accounts' is also defined by" in p for p in problems)
    with pytest.raises(ModelError, match="models directory not found"):
        load_models(tmp_path / "nope")


def test_a_broken_model_file_is_its_own_models_error_and_the_others_load(
    tmp_path: Path,
) -> None:
    write(tmp_path, GOOD, name="accounts")
    write(tmp_path, GOOD, name="contacts")
    write(tmp_path, edit(GOOD, "operation: upsert", "operation: upsret"), name="broken1")
    write(tmp_path, GOOD, name="twice")
    (tmp_path / "models" / "twice.yaml").write_text(GOOD)
    write(tmp_path, GOOD, name="bad-name")

    loaded = load_models_isolated(tmp_path / "models")

    assert sorted(loaded.specs) == ["accounts", "contacts"]
    assert sorted(loaded.errors) == ["bad-name", "broken1", "twice"]
    # Each error is the one line the strict loader gives, naming the file and the key.
    (line,) = loaded.errors["broken1"].problems
    assert "models/broken1.yml: operation: 'upsret' is not one of" in line
    # Two files of one name: an error of that name, and neither file's spec is used.
    (twice,) = loaded.errors["twice"].problems
    assert "models/twice.yml: model name 'twice' is also defined by " in twice
    assert twice.endswith("models/twice.yaml; model names must be unique")
    assert "models/bad-name.yml: model name 'bad-name'" in loaded.errors["bad-name"].problems[0]
    # The strict loader (the CLI's) still refuses the directory with every line.
    with pytest.raises(ModelError) as info:
        load_models(tmp_path / "models")
    assert info.value.problems == loaded.problems and len(loaded.problems) == 3


def test_check_columns(tmp_path: Path) -> None:
    spec = load_model(write(tmp_path, GOOD))
    check_columns(spec, ["account_id", "name", "arr_usd", "parent_id", "extra"])
    with pytest.raises(ModelError) as info:
        check_columns(spec, ["ACCOUNT_ID", "name", "parent_id"])
    problems = info.value.problems
    assert (
        "models/accounts.yml: primary_key: column 'account_id' is not returned by the query "
        "(the query returns 'ACCOUNT_ID'"
    ) in problems[0]
    assert any("models/accounts.yml: fields.arr_usd: column 'arr_usd'" in p for p in problems)
    assert "query columns: ACCOUNT_ID, name, parent_id" in problems[-1]


def test_primary_key_not_mapped_still_needs_to_be_a_column(tmp_path: Path) -> None:
    text = edit(GOOD, "primary_key: account_id", "primary_key: row_key")
    spec = load_model(write(tmp_path, text))
    with pytest.raises(ModelError, match="primary_key: column 'row_key' is not returned"):
        check_columns(spec, list(spec.fields))


def test_repository_example_models_load() -> None:
    specs = load_models(REPO_MODELS)
    assert {"accounts", "contacts", "opportunities"} <= set(specs)
    assert any(s.operation == "mirror" for s in specs.values())
    for spec in specs.values():
        assert spec.primary_key in spec.fields or spec.operation == "insert"


def test_a_quoted_partition_start_keeps_its_time_and_offset():
    import datetime as dt

    from sf_activation.models import PartitionBy

    quoted = PartitionBy(column="at", start="2024-01-01T00:00:00+02:00")
    assert quoted.start == dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert PartitionBy(column="at", start="2024-01-01").start.date() == dt.date(2024, 1, 1)
