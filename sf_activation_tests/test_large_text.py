"""A model of large text fields syncs: 200 rows of 100,000 characters into a long text
area (~20 MB to send). The send phase's DuckDB used to run under a fixed 256 MB and failed
every run with a multi-line OutOfMemory error; its memory limits are settings now, and it
spills to disk beyond them.

Real command, emulator over HTTPS with a describe (written here) holding a 131,072-
character long text area, DuckDB warehouse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator
from sf_activation_tests.support.workspace import Workspace

ROWS = 200
CHARS = 100_000


def _memo_describe() -> dict:
    def field(name: str, ftype: str, length: int = 0, **extra: object) -> dict:
        return {
            "name": name, "label": name, "type": ftype, "length": length,
            "byteLength": length * 3, "nillable": name != "Id", "createable": name != "Id",
            "updateable": name != "Id", "defaultedOnCreate": name == "Id",
            "defaultValue": None, "externalId": False, "unique": False,
            "idLookup": name == "Id", "caseSensitive": False, "calculated": False,
            "autoNumber": False, "custom": name.endswith("__c"), "precision": 0, "scale": 0,
            "digits": 0, "referenceTo": [], "relationshipName": None, "picklistValues": [],
            "restrictedPicklist": False, "soapType": "xsd:string", "filterable": True,
            "sortable": True, "groupable": True, "nameField": name == "Name", **extra,
        }  # fmt: skip

    return {
        "name": "Memo__c", "label": "Memo", "labelPlural": "Memos", "custom": True,
        "customSetting": False, "createable": True, "updateable": True, "deletable": True,
        "queryable": True, "retrieveable": True, "searchable": True, "undeletable": True,
        "mergeable": False, "replicateable": True, "triggerable": True, "layoutable": True,
        "activateable": False, "deprecatedAndHidden": False, "feedEnabled": False,
        "hasSubtypes": False, "isSubtype": False, "isInterface": False, "keyPrefix": "a0M",
        "childRelationships": [], "recordTypeInfos": [], "urls": {},
        "fields": [
            field("Id", "id", 18, soapType="tns:ID"),
            field("Name", "string", 80),
            field("Memo_Key__c", "string", 40, externalId=True, unique=True, idLookup=True),
            field("Body__c", "textarea", 131072, extraTypeInfo="plaintextarea",
                  filterable=False, sortable=False, groupable=False),
        ],
    }  # fmt: skip


@pytest.fixture
def memo_emulator(tmp_path: Path) -> Iterator[EmulatorHandle]:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "Memo__c.json").write_text(json.dumps(_memo_describe()))
    with start_emulator(tmp_path / "emulator", "--schema", str(schemas)) as handle:
        yield handle


MODEL = """
object: Memo__c
operation: upsert
primary_key: memo_key
external_id: Memo_Key__c
query: SELECT memo_key, name, body FROM memos
transport: {transport}
fields:
  memo_key: Memo_Key__c
  name: Name
  body: Body__c
"""


@pytest.mark.parametrize("transport", ["composite", "bulk"])
def test_two_hundred_rows_of_a_hundred_thousand_characters_sync(
    tmp_path: Path, memo_emulator: EmulatorHandle, transport: str
) -> None:
    ws = Workspace(tmp_path / "ws", memo_emulator)
    # Distinct text per row (repeat() of one letter would compress to nothing).
    ws.sql(
        f"""
        CREATE TABLE memos AS
        SELECT 'M-' || i AS memo_key, 'Memo ' || i AS name,
               left(repeat(md5(i::VARCHAR) || md5((i * 7)::VARCHAR), {CHARS // 64 + 1}), {CHARS}) AS body
        FROM range({ROWS}) t(i)
        """
    )
    ws.model("memos", MODEL.format(transport=transport))
    result = ws.run("sync", "memos", "--json", check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert (summary["succeeded"], summary["failed"]) == (ROWS, 0)
    records = memo_emulator.records("Memo__c")
    assert len(records) == ROWS
    assert {len(r["Body__c"]) for r in records} == {CHARS}
    # Nothing changed: nothing sent.
    assert ws.sync("memos")["sent"] == 0


def test_too_little_memory_is_one_line_naming_the_setting(
    tmp_path: Path, memo_emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", memo_emulator)
    ws.sql(
        f"CREATE TABLE memos AS SELECT 'M-' || i AS memo_key, 'Memo ' || i AS name, "
        f"left(repeat(md5(i::VARCHAR), {CHARS // 32 + 1}), {CHARS}) AS body FROM range({ROWS}) t(i)"
    )
    ws.model("memos", MODEL.format(transport="composite"))
    result = ws.run("sync", "memos", check=False, env={"SF_ACTIVATION_SEND_MEMORY": "16MB"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DuckDB ran out of memory" in lines[0]
    assert "SF_ACTIVATION_SEND_MEMORY (now 16MB)" in lines[0]
    # Nothing was lost: with the default it syncs every row.
    assert ws.sync("memos")["succeeded"] == ROWS
