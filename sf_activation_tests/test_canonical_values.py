"""Values as Salesforce compares them: multi-select sets, NUL characters, 15-character Ids.

Salesforce keeps a multi-select picklist as a set, drops NUL characters from what it
saves, and takes a 15-character Id for the same record as its 18-character form. The
engine hashes and sends the form Salesforce holds, so an unordered `array_agg`, a NUL in
a description or a 15-character Id from an old export neither re-send every run nor
clear or lose a value. State written before this canonical form is migrated, not
re-sent. Real command, emulator over HTTPS, DuckDB warehouse.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sf_activation.state import StateStore
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

WIDGETS = """
object: Widget__c
operation: upsert
primary_key: key
external_id: Widget_Key__c
query: SELECT key, name, tags, notes FROM widgets
transport: {transport}
fields:
  key: Widget_Key__c
  name: Name
  tags: Tags__c
  notes: Notes__c
"""


def _held(emu: EmulatorHandle) -> dict[str, dict]:
    return {r["Widget_Key__c"]: r for r in emu.records("Widget__c")}


def test_a_reordered_multi_select_is_not_a_change(tmp_path: Path, emu: EmulatorHandle) -> None:
    ws = Workspace(tmp_path / "ws", emu)
    ws.sql(
        "CREATE TABLE widgets AS SELECT * FROM (VALUES "
        "('w1', 'One', ['sale', 'hot'], 'n'), ('w2', 'Two', ['new', NULL], 'n'), "
        "('w3', 'Three', ['hot', 'hot'], 'n')) t(key, name, tags, notes)"
    )
    ws.model("m", WIDGETS.format(transport="composite"))
    assert ws.sync("m")["succeeded"] == 3
    held = _held(emu)
    # A null element is dropped, not a reason to clear the field; a repeat is kept once.
    assert [held[k]["Tags__c"] for k in ("w1", "w2", "w3")] == ["hot;sale", "new", "hot"]
    ws.sql("UPDATE widgets SET tags = list_reverse(tags)")
    again = ws.sync("m")
    assert again["unchanged"] == 3 and again["sent"] == 0, again


def test_nul_characters_are_sent_as_salesforce_keeps_them(
    tmp_path: Path, emu: EmulatorHandle
) -> None:
    for transport in ("composite", "bulk"):
        emu.reset()
        ws = Workspace(tmp_path / transport, emu)
        ws.sql(
            "CREATE TABLE widgets AS SELECT 'w' || i AS key, 'N' || i AS name, "
            "['new'] AS tags, 'before' || chr(0) || 'after' AS notes FROM range(3) t(i)"
        )
        ws.model("m", WIDGETS.format(transport=transport))
        first = ws.sync("m")
        assert first["succeeded"] == 3 and first["failed"] == 0, (transport, first)
        assert {r["Notes__c"] for r in _held(emu).values()} == {"beforeafter"}
        # What the state says was sent is what Salesforce holds (the emulator drops NULs
        # as Salesforce does, so only the state shows whether they were sent).
        assert _state_payload_notes(ws, "m") == ["beforeafter"] * 3, transport
        assert ws.sync("m")["sent"] == 0


def _state_payload_notes(ws: Workspace, model: str) -> list[str]:
    payloads = StateStore(ws.state_url, model).load(["payload"]).column("payload").to_pylist()
    return sorted(json.loads(p)["Notes__c"] for p in payloads if p)


def _rewrite_state_as_before(ws: Workspace, model: str, field: str, old_value: str) -> int:
    """Rewrite the model's state as a version that kept multi-select values in the
    warehouse's order wrote it: the payload holds `old_value`, the hash is of that payload."""
    files = sorted((Path(ws.state_url) / model).glob("**/*.parquet"))
    files = [f for f in files if "ledger" not in f.parts]
    rewritten = 0
    for path in files:
        table = pq.read_table(path)
        if "payload" not in table.column_names:
            continue
        payloads = table.column("payload").to_pylist()
        hashes = table.column("hash").to_pylist()
        for i, payload in enumerate(payloads):
            if payload and f'"{field}":' in payload:
                start = payload.index(f'"{field}":') + len(field) + 3
                end = payload.index('"', start + 1)
                payloads[i] = payload[:start] + '"' + old_value + payload[end:]
                hashes[i] = hashlib.md5(payloads[i].encode()).hexdigest()
                rewritten += 1
        table = table.set_column(
            table.column_names.index("payload"), "payload", pa.array(payloads, pa.string())
        )
        table = table.set_column(
            table.column_names.index("hash"), "hash", pa.array(hashes, pa.string())
        )
        pq.write_table(table, path)
    return rewritten


def test_state_from_before_the_canonical_order_is_migrated_not_resent(
    tmp_path: Path, emu: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emu)
    ws.sql(
        "CREATE TABLE widgets AS SELECT 'w' || i AS key, 'N' || i AS name, "
        "['sale', 'hot'] AS tags, 'n' AS notes FROM range(5) t(i)"
    )
    ws.model("m", WIDGETS.format(transport="composite"))
    assert ws.sync("m")["succeeded"] == 5
    assert _rewrite_state_as_before(ws, "m", "Tags__c", "sale;hot") == 5
    planned = ws.sync("m")
    assert planned["unchanged"] == 5 and planned["sent"] == 0, planned


ACCOUNT_CHILDREN = """
object: Contact
operation: upsert
primary_key: key
external_id: External_Id__c
query: SELECT key, last_name, account_id FROM contacts
transport: {transport}
fields:
  key: External_Id__c
  last_name: LastName
  account_id: AccountId
"""


def test_a_15_character_id_is_the_record_its_18_character_form_names(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    created = emulator.http.post(
        emulator.url("/services/data/v62.0/sobjects/Account"), json={"Name": "Parent"}, timeout=10
    )
    created.raise_for_status()
    account_id = created.json()["id"]
    for transport in ("composite", "bulk"):
        ws = Workspace(tmp_path / transport, emulator)
        ws.sql(
            f"CREATE TABLE contacts AS SELECT '{transport}-' || i AS key, 'L' || i AS last_name, "
            f"CASE WHEN i % 2 = 0 THEN '{account_id[:15]}' ELSE '{account_id}' END AS account_id "
            "FROM range(4) t(i)"
        )
        ws.model("m", ACCOUNT_CHILDREN.format(transport=transport))
        first = ws.sync("m")
        assert first["succeeded"] == 4, (transport, first)
        held = [r for r in emulator.records("Contact") if r["External_Id__c"].startswith(transport)]
        assert {r["AccountId"] for r in held} == {account_id}
        # The old export's 15-character spelling is not a change once sent as 18.
        ws.sql(f"UPDATE contacts SET account_id = '{account_id[:15]}'")
        assert ws.sync("m")["sent"] == 0
