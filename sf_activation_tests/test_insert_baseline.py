"""An insert model whose state is lost does not create every record a second time.

Insert has no key Salesforce matches on; only the state knows which rows were created. A
renamed model or a lost state directory used to re-create every record with no warning.
Real command, emulator over HTTPS, DuckDB warehouse.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

LEADS = """
object: Lead
operation: insert
primary_key: lead_key
query: SELECT lead_key, last_name, company FROM leads
transport: composite
fields:
  last_name: LastName
  company: Company
"""


def _workspace(tmp_path: Path, emulator: EmulatorHandle) -> Workspace:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE leads AS SELECT 'k' || i AS lead_key, 'Last ' || i AS last_name, "
        "'Co ' || i AS company FROM range(30) t(i)"
    )
    return ws


def test_a_lost_state_is_refused_before_anything_is_sent(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = _workspace(tmp_path, emulator)
    ws.model("leads", LEADS)
    assert ws.sync("leads")["succeeded"] == 30
    shutil.rmtree(Path(ws.state_url) / "leads")
    calls = ws.write_calls()
    result = ws.run("sync", "leads", check=False)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "has no state" in line]
    assert len(lines) == 1 and "30 of its first 30 rows already exist" in lines[0], result.stderr
    assert "--allow-reinsert" in lines[0]
    assert ws.write_calls() == calls and len(emulator.records("Lead")) == 30

    # Renaming the model is the same loss: its state is under the old name.
    ws.model("leads_renamed", LEADS)
    assert ws.run("sync", "leads_renamed", check=False).returncode == 2
    assert len(emulator.records("Lead")) == 30

    # Meant: a deliberate re-load creates them again (flag or environment).
    again = ws.sync("leads", "--allow-reinsert")
    assert again["succeeded"] == 30 and len(emulator.records("Lead")) == 60
    shutil.rmtree(Path(ws.state_url) / "leads")
    again = ws.sync("leads", env={"SF_ACTIVATION_ALLOW_REINSERT": "1"})
    assert again["succeeded"] == 30 and len(emulator.records("Lead")) == 90


def test_a_first_run_beside_other_records_proceeds(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    for i in range(5):
        emulator.http.post(
            emulator.url("/services/data/v62.0/sobjects/Lead"),
            json={"LastName": f"Other {i}", "Company": "Elsewhere"},
            timeout=10,
        ).raise_for_status()
    ws = _workspace(tmp_path, emulator)
    ws.model("leads", LEADS)
    assert ws.sync("leads")["succeeded"] == 30
    assert len(emulator.records("Lead")) == 35
