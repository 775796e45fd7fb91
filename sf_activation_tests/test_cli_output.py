"""What the command prints for a person: `plan` says what a sync would send (by class, by
which transport, the deletes, the invalid rows by name, a table of field changes) and no
sync-only counters; `sync --progress` shows a Bulk job moving before it ends; `rejects`
fits the terminal without cutting the error code and says how many it left out. The real
command runs in a subprocess against the emulator (sf_activation_tests/support)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.reliability import create_accounts, model_body
from sf_activation_tests.support.workspace import Workspace

# The `plan --json` keys before this change: a script reading them keeps working.
PLAN_JSON_KEYS = {
    "model", "object", "operation", "run_id", "transport", "dry_run", "full_resync", "rows",
    "invalid", "added", "changed", "removed", "unchanged", "pending", "sent", "succeeded",
    "failed", "rejected", "retried", "deleted", "superseded", "delete_failed", "api_calls",
    "rejects_url", "duration_s", "send_cpu_s", "send_s", "bulk_job_ids", "reject_codes",
    "sample_changes", "stopped_reason", "stopped", "reconciled", "unconfirmed",
    "plan_source", "held", "held_reasons",
}  # fmt: skip
SYNC_ONLY = ("succeeded=", "failed=", "retried=", "deleted=", "reconciled=", "api_calls=")


@pytest.fixture
def ws(tmp_path: Path, emulator: EmulatorHandle) -> Workspace:
    return Workspace(tmp_path / "ws", emulator)


def test_plan_says_what_it_would_send_and_names_the_invalid_rows(ws: Workspace) -> None:
    create_accounts(ws, 30)  # + a null key, a duplicated key, a name too long, 3 orphans
    ws.model("m", model_body("upsert", "composite"))
    out = ws.run("plan", "m").stdout
    lines = out.splitlines()
    assert lines[0].startswith("planned m (upsert Account), run ")
    assert lines[0].endswith(": nothing was sent")
    # 30 good rows + 3 orphans (Salesforce refuses those; the plan cannot know).
    assert "  to_send=33  (added=33  changed=0  pending=0)  transport=composite" in lines
    assert "  rows=37  unchanged=0 (not sent)  invalid=4 (never sent)" in lines
    assert "    DUPLICATE_PRIMARY_KEY (2): R-DUP, R-DUP" in lines
    assert "    NULL_PRIMARY_KEY (1): (no key)" in lines
    assert "    STRING_TOO_LONG (1): R-LONG" in lines
    assert not any(word in out for word in SYNC_ONLY), out
    assert ws.write_calls() == 0


def test_plan_shows_changed_fields_as_a_table_and_counts_a_full_resync(ws: Workspace) -> None:
    create_accounts(ws, 30)
    ws.model("m", model_body("upsert", "composite"))
    ws.sync("m")
    ws.sql("UPDATE accounts SET name = 'Edited one' WHERE account_id = 'R-1'")
    writes = ws.write_calls()
    out = ws.run("plan", "m").stdout.splitlines()
    assert "  to_send=4  (added=0  changed=1  pending=3)  transport=composite" in out
    header = out.index("  changes (field by field, 4 of 4 records):")
    assert out[header + 1].split() == ["primary_key", "class", "field", "before", "after"]
    assert out[header + 2].split() == ["R-1", "changed", "Name", "Row", "1", "Edited", "one"]
    full = ws.run("plan", "m", "--full-resync").stdout.splitlines()
    assert (
        "  to_send=33  (added=0  changed=1  pending=3  unchanged=29)  transport=composite" in full
    )
    data = json.loads(ws.run("plan", "m", "--json").stdout)
    assert set(data) >= PLAN_JSON_KEYS
    assert data["to_send"] == 4 and data["invalid_codes"]["DUPLICATE_PRIMARY_KEY"] == 2
    assert ws.write_calls() == writes  # a plan sends nothing


def test_plan_of_a_mirror_says_the_deletes_it_would_make(ws: Workspace) -> None:
    create_accounts(ws, 30)
    ws.model("m", model_body("mirror", "composite"))
    ws.sync("m")
    ws.sql("DELETE FROM accounts WHERE account_id IN ('R-1', 'R-2')")
    out = ws.run("plan", "m").stdout.splitlines()
    assert "  deletes=2  (records whose rows left the model)" in out


def test_plan_masks_a_redacted_primary_key_among_the_invalid_rows(ws: Workspace) -> None:
    create_accounts(ws, 5)
    ws.model("m", model_body("upsert", "composite", extra="redact: [External_Id__c]\n"))
    out = ws.run("plan", "m").stdout
    assert "    DUPLICATE_PRIMARY_KEY (2): ***REDACTED***, ***REDACTED***" in out.splitlines()
    assert "R-DUP" not in out and "R-LONG" not in out


def test_a_bulk_send_reports_progress_before_it_finishes(ws: Workspace) -> None:
    """The emulator keeps the job InProgress 4 s: a progress line naming the job's state
    arrives while the command is still running, before the summary."""
    create_accounts(ws, 300)
    ws.model("m", model_body("upsert", "bulk"))
    ws.emulator.set_faults("bulk_seconds=4")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "sf_activation", "sync", "m", "--progress"],
            env=ws.env,
            cwd=ws.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if line.startswith("progress: bulk InProgress"):
                break
            assert time.monotonic() < deadline, seen
        still_running = process.poll() is None
        stdout, rest = process.communicate(timeout=120)
    finally:
        ws.emulator.set_faults("")
    assert seen and seen[-1].startswith("progress: bulk InProgress 0/"), seen
    assert still_running, "the progress line came only after the command ended"
    assert process.returncode == 0, rest
    assert "progress: bulk JobComplete" in rest and "progress: send " in rest
    assert stdout.startswith("synced m (upsert Account)")


def test_rejects_fit_the_terminal_without_cutting_the_code_and_count_what_is_left(
    ws: Workspace,
) -> None:
    create_accounts(ws, 5)
    ws.model("m", model_body("upsert", "composite"))
    ws.sync("m")
    for width in (60, 120):
        result = ws.run("rejects", "m", "--limit", "2", env={"COLUMNS": str(width)})
        lines = result.stdout.splitlines()
        assert all(len(line) <= width for line in lines[1:]), (width, lines)
        assert any("DUPLICATE_PRIMARY_KEY" in line for line in lines), lines
        assert lines[-1] == "2 of 7 rejected rows (--limit)"
    wide = ws.run("rejects", "m", env={"COLUMNS": "200"}).stdout.splitlines()
    assert wide[-1] == "7 of 7 rejected rows"
    codes = {line.split()[1] for line in wide[2:-1] if line.startswith("R-")}
    assert codes == {"DUPLICATE_PRIMARY_KEY", "STRING_TOO_LONG", "INVALID_FIELD"}


def test_the_demo_names_the_model_of_each_reject_and_splits_what_it_sent() -> None:
    from sf_activation.demo import ModelResult, print_table, reject_lines

    results = [
        ModelResult("contacts", codes={"INVALID_EMAIL_ADDRESS": 3, "DUPLICATE_PRIMARY_KEY": 2}),
        ModelResult("prospect_leads", codes={"INVALID_EMAIL_ADDRESS": 2}),
    ]
    assert reject_lines(results) == [
        "  contacts: DUPLICATE_PRIMARY_KEY (2): a contact id that appears twice: neither row "
        "is sent",
        "  contacts: INVALID_EMAIL_ADDRESS (3): an email that is not an address (made so on "
        "purpose)",
        "  prospect_leads: INVALID_EMAIL_ADDRESS (2): an email that is not an address (made "
        "so on purpose)",
    ]
    sent = ModelResult("contacts", rows=40_001, sent=402, added=0, changed=399, retried=3)
    print_table([sent])  # the columns exist and add up: sent = added + changed + retried
    assert sent.sent == sent.added + sent.changed + sent.retried
