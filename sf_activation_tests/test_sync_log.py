"""Every run writes a sync log beside the state: one row per row it sent, refused as
invalid or deleted, with what Salesforce said — which a user joins back to the model's
data in SQL. Redacted values never appear in it.

Real command, emulator over HTTPS, DuckDB warehouse (which also reads the log).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

MODEL = """
object: Contact
operation: mirror
primary_key: id
external_id: External_Id__c
query: SELECT id, last_name, email FROM people
transport: composite
max_reject_rate: 1
max_delete_rate: 1
redact: [Email]
fields:
  id: External_Id__c
  last_name: LastName
  email: Email
"""


def _log(ws: Workspace) -> list[dict]:
    files = sorted((Path(ws.state_url) / "people" / "sync_log").rglob("*.parquet"))
    assert files, "no sync log written"
    con = duckdb.connect()
    paths = ", ".join(f"'{f}'" for f in files)
    rows = con.sql(
        f"SELECT * FROM read_parquet([{paths}]) ORDER BY logged_at, primary_key"
    ).fetchall()
    names = [d[0] for d in con.sql(f"SELECT * FROM read_parquet([{paths}]) LIMIT 0").description]
    return [dict(zip(names, r, strict=True)) for r in rows]


def test_each_run_logs_every_row_it_sent_refused_or_deleted(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    ws.sql(
        "CREATE TABLE people AS SELECT 'P-' || i AS id, 'Last ' || i AS last_name, "
        "CASE WHEN i = 3 THEN 'not-an-email-secret3' ELSE 'p' || i || '@private.example' END "
        "AS email FROM range(10) t(i) UNION ALL SELECT NULL, 'No key', 'nokey@private.example'"
    )
    ws.model("people", MODEL)
    first = ws.sync("people")
    assert (first["succeeded"], first["failed"], first["invalid"]) == (9, 1, 1)
    assert first["sync_log_url"].endswith(".parquet")

    log = _log(ws)
    by_outcome: dict[str, int] = {}
    for row in log:
        by_outcome[row["outcome"]] = by_outcome.get(row["outcome"], 0) + 1
    assert by_outcome == {"succeeded": 9, "failed": 1, "invalid": 1}
    failed = next(r for r in log if r["outcome"] == "failed")
    assert (failed["primary_key"], failed["change"], failed["error_code"]) == (
        "P-3", "added", "INVALID_EMAIL_ADDRESS",
    )  # fmt: skip
    assert {r["run_id"] for r in log} == {first["run_id"]}
    assert all(r["sf_id"] for r in log if r["outcome"] == "succeeded")

    # A user's question, in SQL: which rows failed, with their model data.
    con = duckdb.connect(str(ws.warehouse))
    log_files = f"'{Path(ws.state_url)}/people/sync_log/*/*.parquet'"
    joined = con.sql(
        f"SELECT p.id, p.last_name, l.error_code FROM read_parquet({log_files}) l "
        "JOIN people p ON p.id = l.primary_key WHERE l.outcome = 'failed'"
    ).fetchall()
    con.close()
    assert joined == [("P-3", "Last 3", "INVALID_EMAIL_ADDRESS")]

    # Rows leave the model: the deletes are logged too, in a second file.
    ws.sql("DELETE FROM people WHERE id IN ('P-0', 'P-1')")
    second = ws.sync("people")
    assert second["deleted"] == 2
    deleted = [r for r in _log(ws) if r["run_id"] == second["run_id"] and r["change"] == "removed"]
    assert sorted((r["primary_key"], r["outcome"]) for r in deleted) == [
        ("P-0", "deleted"), ("P-1", "deleted"),
    ]  # fmt: skip

    # A call where every record went through (written without per-row messages): each
    # row still says what it was, which run, object and operation, and how many attempts.
    ws.sql("UPDATE people SET last_name = 'Renamed' WHERE id = 'P-5'")
    ws.sql("UPDATE people SET email = 'p3@private.example' WHERE id = 'P-3'")  # fixed
    third = ws.sync("people")
    assert (third["succeeded"], third["failed"]) == (2, 0)
    [changed] = [
        r for r in _log(ws) if r["run_id"] == third["run_id"] and r["primary_key"] == "P-5"
    ]
    assert {k: v for k, v in changed.items() if k not in ("sf_id", "logged_at")} == {
        "run_id": third["run_id"], "model": "people", "object": "Contact",
        "operation": "mirror", "primary_key": "P-5", "change": "changed",
        "outcome": "succeeded", "error_code": None, "message": None, "attempts": 1,
    }  # fmt: skip
    assert changed["sf_id"] and changed["logged_at"] is not None

    # Redacted values appear nowhere in the logs.
    for f in (Path(ws.state_url) / "people" / "sync_log").rglob("*.parquet"):
        blob = f.read_bytes()
        assert b"private.example" not in blob and b"secret3" not in blob
