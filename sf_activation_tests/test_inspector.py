"""The request inspector: every run keeps a bounded, redacted log of its Salesforce requests
beside its run record, shown by `sf-activation inspect MODEL [--run RUN_ID] [--json]`.

What is checked is what a user can read: the command's output and every file under the
model's runs/ directory hold no token and no value of a `redact:` field — here a model
whose primary key is redacted (e-mail addresses as External IDs, looked up by SOQL
`WHERE External_Id__c IN (...)`), with injected 503s so failing answers are kept whole.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from sf_activation.inspector import MAX_ANSWER_CHARS, RequestLog, mask_soql, safe_path
from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.workspace import Workspace

TOKEN_SHAPE = re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]{20,}")
DOMAIN = "secret-people.example"
ROWS = 12

SEED = """
object: Contact
operation: upsert
primary_key: ext
external_id: External_Id__c
query: SELECT ext, last FROM seed
transport: composite
fields:
  ext: External_Id__c
  last: LastName
"""

# Update by External ID (no Id column): the Ids are looked up by SOQL on the redacted key.
PEOPLE = """
object: Contact
operation: update
primary_key: email
external_id: External_Id__c
query: SELECT email, last, private_mail FROM people
transport: composite
redact: [External_Id__c, Email]
fields:
  email: External_Id__c
  last: LastName
  private_mail: Email
"""


def _emails(n: int) -> list[str]:
    return [f"person{i}@{DOMAIN}" for i in range(n)]


def test_inspect_shows_requests_and_failing_answers_without_secrets_or_redacted_values(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _emails(ROWS)
    mails = [f"inbox{i}@{DOMAIN}" for i in range(ROWS)]
    # Records exist for all but the last two keys: those are NOT_FOUND after the lookup.
    ws.sql(
        "CREATE TABLE seed AS SELECT * FROM (VALUES "
        + ", ".join(f"('{k}', 'Seed {i}')" for i, k in enumerate(keys[:-2]))
        + ") t(ext, last)"
    )
    ws.sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES "
        + ", ".join(
            f"('{k}', 'Last {i}', '{m}')" for i, (k, m) in enumerate(zip(keys, mails, strict=True))
        )
        + ") t(email, last, private_mail)"
    )
    ws.model("seed", SEED)
    ws.model("people", PEOPLE)
    ws.sync("seed")
    first = ws.sync("people")
    assert (first["succeeded"], first["failed"]) == (ROWS - 2, 2)

    ws.sql("UPDATE people SET last = last || ' v2'")
    emulator.set_faults("unavailable=0.4", seed=3)
    try:
        second = ws.sync("people")
    finally:
        emulator.set_faults("")
    assert second["succeeded"] == ROWS - 2

    table = ws.run("inspect", "people").stdout
    lines = ws.run("inspect", "people", "--json").stdout
    older = ws.run("inspect", "people", "--run", first["run_id"], "--json").stdout
    entries = [json.loads(line) for line in lines.splitlines()]
    requests, (summary,) = entries[:-1], entries[-1:]

    # What the log holds: the run's calls, the SOQL lookup (literals masked), the 503s.
    assert summary["kind"] == "summary" and summary["total"] == len(requests)
    assert summary["api_calls"] == second["api_calls"]
    assert all(r["api_call"] for r in requests)
    queries = [r for r in requests if "/query?q=" in r["path"]]
    assert queries and all("External_Id__c IN ('***'" in r["path"] for r in queries)
    failing = [r for r in requests if r["status"] == 503]
    assert failing and summary["by_status"]["503"] == len(failing)
    assert all(r["answer"] and "SERVER_UNAVAILABLE" in r["answer"] for r in failing)
    assert any(r["method"] == "PATCH" and r["status"] == 200 for r in requests)
    assert all(r["duration_ms"] >= 0 for r in requests)
    assert "503" in table and "of" in table and "requests shown" in table
    # --run picks the older run's log; its lookups are there too.
    assert "External_Id__c IN ('***'" in older and older != lines

    # Nothing secret or redacted, anywhere a user can read it.
    runs_dir = Path(ws.state_url) / "people" / "runs"
    files = sorted(runs_dir.iterdir())
    assert any(p.name.endswith(".requests.jsonl") for p in files)
    blobs = [table, lines, older] + [p.read_text() for p in files]
    for blob in blobs:
        assert emulator.access_token not in blob
        assert not TOKEN_SHAPE.search(blob)
        assert DOMAIN not in blob
        for value in keys + mails:
            assert value not in blob


def _response(status: int, body: bytes, headers: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(status_code=status, content=body, headers=headers or {})


def test_failing_answers_are_kept_whole_but_masked_and_the_log_is_bounded() -> None:
    token = "00D5e0000000001!AQ8AQTheAccessTokenOfTheRunGoesHere"
    log = RequestLog(
        redact={"Email"},
        scrub=lambda text: text.replace(token, "[redacted]"),
        max_entries=5,
        max_answers=2,
    )
    body = json.dumps(
        {"allOrNone": False, "records": [{"attributes": {"type": "Contact"}, "Email": "a@b.io"}]}
    ).encode()
    echo = json.dumps(
        [{"errorCode": "DUPLICATE_VALUE", "message": f"duplicate value a@b.io; token {token}"}]
    ).encode()
    for _ in range(3):
        log.observe(
            "POST",
            "https://x.my.salesforce.com/services/data/v62.0/composite/sobjects",
            duration_s=0.01,
            response=_response(400, echo),
            error=None,
            json=None,
            data=body,
            stream=False,
        )
    # A Bulk CSV upload (a file: not read) answered with a message: withheld.
    log.observe(
        "PUT",
        "https://x/services/data/v62.0/jobs/ingest/7505e000000AbCdAAA/batches",
        duration_s=0.01,
        response=_response(400, b'[{"errorCode":"X","message":"bad value Jane Roe"}]'),
        error=None,
        json=None,
        data=open(__file__, "rb"),  # noqa: SIM115 - the observer must not read it
        stream=False,
    )
    for _ in range(4):
        log.observe(
            "GET",
            "https://x/services/data/v62.0/limits",
            duration_s=0.002,
            response=_response(200, b"{}", {"Sforce-Limit-Info": "api-usage=5/15000"}),
            error=None,
            json=None,
            data=None,
            stream=False,
        )
    entries = [json.loads(line) for line in log.to_jsonl().decode().splitlines()]
    kept, summary = entries[:-1], entries[-1]
    assert len(kept) == 5 and summary["total"] == 8 and summary["dropped"] == 3
    assert summary["dropped_by_status"] == {"200": 3} and summary["by_status"]["400"] == 4
    answers = [e["answer"] for e in kept if e["answer"]]
    assert len(answers) == 2  # only the first max_answers failing answers in full
    for answer in answers:
        assert "a@b.io" not in answer and token not in answer and "DUPLICATE_VALUE" in answer
    assert kept[3]["bulk_job_id"] == "7505e000000AbCdAAA" and kept[3]["answer"] is None
    assert summary["bulk_job_ids"] == ["7505e000000AbCdAAA"]
    assert kept[4]["api_usage"] == "api-usage=5/15000"

    # A third failing answer beyond the bound would not be kept; a file upload's answer is
    # withheld when the model redacts anything.
    log2 = RequestLog(redact={"Email"})
    log2.observe(
        "PUT",
        "https://x/services/data/v62.0/jobs/ingest/7505e000000AbCdAAA/batches",
        duration_s=0.01,
        response=_response(400, b'[{"errorCode":"X","message":"bad value Jane Roe"}]'),
        error=None,
        json=None,
        data=open(__file__, "rb"),  # noqa: SIM115
        stream=False,
    )
    answer = log2.entries[0].answer or ""
    assert "Jane Roe" not in answer and '"errorCode":"X"' in answer
    long = RequestLog()
    long.observe(
        "GET",
        "https://x/services/data/v62.0/sobjects/Contact/describe",
        duration_s=0.01,
        response=_response(500, b"x" * (MAX_ANSWER_CHARS * 3)),
        error=None,
        json=None,
        data=None,
        stream=False,
    )
    assert len(long.entries[0].answer or "") < MAX_ANSWER_CHARS + 100


def test_paths_keep_no_literal_of_soql_or_external_id_urls() -> None:
    soql = r"SELECT Id FROM Contact WHERE Email IN ('a@b.io', 'it\'s') AND Amount > 100.5"
    assert mask_soql(soql) == (
        "SELECT Id FROM Contact WHERE Email IN ('***', '***') AND Amount > ***"
    )
    assert mask_soql("SELECT Id FROM Account WHERE CreatedDate > 2024-01-01T00:00:00Z") == (
        "SELECT Id FROM Account WHERE CreatedDate > ***"
    )
    path = safe_path(
        "https://x/services/data/v62.0/sobjects/Contact/External_Id__c/jane%40x.io?fields=Id"
    )
    assert "jane" not in path and path.endswith("/sobjects/Contact/External_Id__c/***?fields=Id")
    assert safe_path(
        "https://x/services/data/v62.0/composite/sobjects/Contact/External_Id__c"
    ).endswith("/composite/sobjects/Contact/External_Id__c")
    assert "secret" not in safe_path("https://x/a?token=abc%20secret%2Fvalue&allOrNone=false")
