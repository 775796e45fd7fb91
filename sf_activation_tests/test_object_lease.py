"""Models that write one Salesforce object never send at the same time: their writes would
contend for the same records' and parents' locks. Each send holds the object's lease
beside the state (`_object_<Object>`); a second model's send waits for it, then refuses
with one line. Real command, emulator over HTTPS, DuckDB warehouse; the other send is a
process holding the object's lease.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace
from sf_activation_tests.test_lease import holder

SCORES = """
object: Account
operation: upsert
primary_key: id
external_id: External_Id__c
query: SELECT id, name FROM accounts
transport: composite
fields:
  id: External_Id__c
  name: Name
"""


def _workspace(tmp_path: Path, emulator: EmulatorHandle) -> Workspace:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE accounts AS SELECT 'A-' || i AS id, 'Name ' || i AS name FROM range(40) t(i)"
    )
    ws.model("scores", SCORES)
    return ws


def test_a_send_waits_while_another_model_sends_to_the_same_object(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = _workspace(tmp_path, emulator)
    with holder(ws.state_url, "_object_Account", "run-other") as other:
        # Refused after the wait, with one line naming the object, and nothing sent.
        calls = ws.write_calls()
        refused = ws.run("sync", "scores", check=False, env={"SF_ACTIVATION_OBJECT_WAIT_S": "1"})
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "run run-other" in lines[0], refused.stderr
        assert "is still sending to Account" in lines[0]
        assert "SF_ACTIVATION_OBJECT_WAIT_S" in lines[0]
        assert ws.write_calls() == calls and not emulator.records("Account")

        # A send that may wait starts once the other one ends.
        threading.Timer(2.0, other.release).start()
        started = time.monotonic()
        summary = ws.sync("scores", env={"SF_ACTIVATION_OBJECT_WAIT_S": "60"})
        assert time.monotonic() - started >= 1.5
        other.finish()
    assert summary["succeeded"] == 40 and len(emulator.records("Account")) == 40
    # Released: the next send does not wait.
    ws.sql("UPDATE accounts SET name = name || '!'")
    assert ws.sync("scores", env={"SF_ACTIVATION_OBJECT_WAIT_S": "0"})["succeeded"] == 40
