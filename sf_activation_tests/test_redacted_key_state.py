"""A primary key that maps to a `redact:` field (an e-mail address as the key) never lies
in state in clear: snapshot, commits, ledger entries and every other file under
`{state}/{model}/` hold `h:` + HMAC-SHA256 of it, and the plan still joins, retries,
deletes and supersedes by that digest. A state written with clear keys (an earlier
version, or before the model redacted its key) is carried over without sending anything,
also when the run doing it is killed midway.

Real command in a subprocess, emulator over HTTPS, DuckDB warehouse; what is checked is
what a user sees: every file of the state directory, the summaries, what Salesforce holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sf_activation_tests.support.emulator import EmulatorHandle
from sf_activation_tests.support.s3 import S3Server, s3_server, s3_url  # noqa: F401
from sf_activation_tests.support.workspace import Workspace

# As docs/internals.md describes them (spelled out here, so the scheme itself is tested).
KEY_SALT_NAME = "key_salt.json"
PK_FORM_KEY = b"sf_activation.pk_form"
DOMAIN = "private.example"  # every key's domain: must appear in no state file
ROWS = 20

MIRROR = """
object: Contact
operation: mirror
primary_key: email
external_id: External_Id__c
query: SELECT email, ext, last, acct FROM people
transport: composite
max_delete_rate: 0.5
redact: [Email]
fields:
  email: Email
  ext: External_Id__c
  last: LastName
  acct: Account.External_Id__c
"""


def _insert_model(ws: Workspace, *, redact: bool, transport: str = "composite") -> None:
    ws.model(
        "contacts",
        "object: Contact\noperation: insert\nprimary_key: email\n"
        f"query: SELECT email, last FROM people\ntransport: {transport}\n"
        "fields:\n  email: Email\n  last: LastName\n" + ("redact: [Email]\n" if redact else ""),
    )


def _people(ws: Workspace, n: int = ROWS) -> list[str]:
    ws.sql(
        f"CREATE OR REPLACE TABLE people AS SELECT 'person' || i || '@{DOMAIN}' AS email, "
        "'K-' || i AS ext, 'Last ' || i AS last, CAST(NULL AS VARCHAR) AS acct FROM range(?) t(i)",
        [n],
    )
    return [f"person{i}@{DOMAIN}" for i in range(n)]


def _state_texts(ws: Workspace, model: str) -> dict[Path, str]:
    """Every file under the model's state as a user would read it: Parquet through
    pyarrow (rows and metadata), anything else as text."""
    out: dict[Path, str] = {}
    for path in sorted((Path(ws.state_url) / model).rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = {
                k.decode(): v.decode("utf-8", "replace")
                for k, v in (table.schema.metadata or {}).items()
            }
            out[path] = json.dumps(table.to_pylist(), default=str) + json.dumps(meta)
        else:
            out[path] = path.read_bytes().decode("utf-8", "replace")
    assert out, f"no state for {model}"
    return out


def _assert_no_clear_key(ws: Workspace, model: str) -> None:
    for path, text in _state_texts(ws, model).items():
        assert DOMAIN not in text, f"{path} holds a primary key in clear: {text[:300]}"


def _stored_keys(ws: Workspace, model: str, *, under: str = "") -> set[str]:
    """Every key in the model's Parquet state files (`pk`, or a ledger entry's `__pk`)."""
    keys: set[str] = set()
    for path in (Path(ws.state_url) / model / under).rglob("*.parquet"):
        if "sync_log" in path.parts:
            continue  # the per-run log masks the key (and _assert_no_clear_key checks it)
        table = pq.read_table(path)
        name = "pk" if "pk" in table.column_names else "__pk"
        keys.update(table.column(name).to_pylist())
    return keys


def _digests(ws: Workspace, model: str, keys: list[str], secret: str | None = None) -> set[str]:
    """The digests as docs/internals.md defines them, from the salt file beside the state:
    K = HMAC-SHA256(SF_ACTIVATION_STATE_KEY or empty, context + salt); `h:` + HMAC(K, key)."""
    path = Path(ws.state_url) / model / KEY_SALT_NAME
    assert path.is_file(), f"no {KEY_SALT_NAME} beside the state of {model}"
    salt = bytes.fromhex(json.loads(path.read_text())["salt"])
    material = (secret or "").encode()
    key = hmac.new(material, b"sf_activation primary key v1\0" + salt, hashlib.sha256).digest()
    return {"h:" + hmac.new(key, k.encode(), hashlib.sha256).hexdigest() for k in keys}


def _to_send(summary: dict) -> int:
    return summary["added"] + summary["changed"] + summary["pending"]


def _records_by_email(ws: Workspace) -> dict[str, dict]:
    return ws.records_by("Contact", "Email")  # fails on a duplicate


def test_a_mirror_keeps_its_redacted_keys_only_as_digests_and_still_retries_deletes_and_supersedes(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _people(ws, 10)
    # One row Salesforce refuses (its account does not exist): pending next run.
    ws.sql("UPDATE people SET acct = 'NO-SUCH-ACCOUNT' WHERE ext = 'K-7'")
    # Two rows sharing a key: invalid, never in state.
    ws.sql(
        f"INSERT INTO people VALUES ('dup@{DOMAIN}', 'K-D1', 'Dup', NULL), "
        f"('dup@{DOMAIN}', 'K-D2', 'Dup', NULL)"
    )
    ws.model("people", MIRROR)
    first = ws.sync("people")
    assert (first["succeeded"], first["failed"], first["invalid"]) == (9, 1, 2), first
    _assert_no_clear_key(ws, "people")
    # What state holds is HMAC-SHA256 under the salt beside it, one per key (the refused
    # row too): computed in SQL by the run, recomputed here by Python's hmac.
    assert _stored_keys(ws, "people") == _digests(ws, "people", keys)

    ws.sql("UPDATE people SET acct = NULL WHERE ext = 'K-7'")  # the pending row can land
    ws.sql("UPDATE people SET last = 'Changed' WHERE ext = 'K-1'")
    ws.sql("DELETE FROM people WHERE ext = 'K-9'")  # left the model: deleted
    # A new key for the same record (matched by External ID): the old key is superseded,
    # the record kept.
    ws.sql(f"UPDATE people SET email = 'person8-new@{DOMAIN}' WHERE ext = 'K-8'")
    second = ws.sync("people")
    assert (second["pending"], second["changed"], second["added"]) == (1, 1, 1), second
    assert (second["deleted"], second["superseded"], second["failed"]) == (1, 1, 0), second
    held = ws.records_by("Contact")
    assert sorted(held) == [f"K-{i}" for i in range(9)]
    assert held["K-1"]["LastName"] == "Changed"
    assert held["K-8"]["Email"] == f"person8-new@{DOMAIN}"

    third = ws.sync("people")
    assert _to_send(third) == 0 and third["sent"] == 0, third
    assert (third["removed"], third["superseded"], third["invalid"]) == (0, 0, 2), third
    _assert_no_clear_key(ws, "people")
    current = [f"person{i}@{DOMAIN}" for i in range(8)] + [f"person8-new@{DOMAIN}"]
    assert _stored_keys(ws, "people") == _digests(ws, "people", current)


def test_a_state_with_clear_keys_is_carried_over_without_sending_anything(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _people(ws)
    _insert_model(ws, redact=False)
    assert ws.sync("contacts")["succeeded"] == ROWS
    # A key that is not redacted is kept as it is, as it always was: the state a
    # model that redacted its key had before this version.
    state = Path(ws.state_url) / "contacts"
    assert _stored_keys(ws, "contacts") == set(keys)
    assert not (state / KEY_SALT_NAME).exists()
    assert PK_FORM_KEY not in (pq.read_schema(state / "snapshot.parquet").metadata or {})

    _insert_model(ws, redact=True)
    calls = ws.write_calls()
    plan = json.loads(ws.run("plan", "contacts", "--json").stdout)
    assert _to_send(plan) == 0 and plan["unchanged"] == ROWS, plan
    carried = ws.sync("contacts")
    assert _to_send(carried) == 0 and carried["sent"] == 0, carried
    assert ws.write_calls() == calls
    # The first run after rewrote the state: digests only, payloads masked.
    _assert_no_clear_key(ws, "contacts")
    assert _stored_keys(ws, "contacts") == _digests(ws, "contacts", keys)

    ws.sql("UPDATE people SET last = 'Changed' WHERE email = ?", [keys[3]])
    changed = ws.sync("contacts")
    assert (changed["changed"], changed["added"], changed["succeeded"]) == (1, 0, 1), changed
    held = _records_by_email(ws)
    assert len(held) == ROWS and held[keys[3]]["LastName"] == "Changed"
    assert ws.sync("contacts")["sent"] == 0
    _assert_no_clear_key(ws, "contacts")


@pytest.mark.parametrize("point", ["after_commit:1", "state_compact:1"])
def test_a_migration_killed_midway_leaves_a_state_the_next_run_reads(
    tmp_path: Path, emulator: EmulatorHandle, point: str
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _people(ws)
    _insert_model(ws, redact=False)
    assert ws.sync("contacts")["succeeded"] == ROWS
    _insert_model(ws, redact=True)
    ws.sql("UPDATE people SET last = 'Changed' WHERE email = ?", [keys[1]])
    killed = ws.run(
        "sync", "contacts", "--json", check=False, env={"SF_ACTIVATION_TEST_KILL_AT": point}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Left half-way: files of both forms (or a new snapshot beside folded commits).
    state = Path(ws.state_url) / "contacts"
    forms = {
        p.name: PK_FORM_KEY in (pq.read_schema(p).metadata or {}) for p in state.rglob("*.parquet")
    }
    if point.startswith("after_commit"):
        assert forms["snapshot.parquet"] is False and True in forms.values(), forms
    else:
        assert forms["snapshot.parquet"] is True and len(forms) > 1, forms
    time.sleep(1.2)  # the killed run's lease lapses
    rerun = ws.sync("contacts")
    # The change was committed before the kill: nothing is sent again, nothing created.
    assert _to_send(rerun) == 0 and rerun["sent"] == 0, rerun
    held = _records_by_email(ws)
    assert len(held) == ROWS and held[keys[1]]["LastName"] == "Changed"
    _assert_no_clear_key(ws, "contacts")
    assert _stored_keys(ws, "contacts") == _digests(ws, "contacts", keys)


def test_a_model_that_stops_redacting_its_key_keeps_digests_and_creates_nothing_again(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _people(ws)
    _insert_model(ws, redact=True)
    assert ws.sync("contacts")["succeeded"] == ROWS
    _assert_no_clear_key(ws, "contacts")
    digests = _digests(ws, "contacts", keys)
    assert _stored_keys(ws, "contacts") == digests

    _insert_model(ws, redact=False)
    plan = json.loads(ws.run("plan", "contacts", "--json").stdout)
    assert _to_send(plan) == 0 and plan["unchanged"] == ROWS, plan
    ws.sql("UPDATE people SET last = 'Changed' WHERE email = ?", [keys[2]])
    changed = ws.sync("contacts")
    assert (changed["changed"], changed["added"], changed["succeeded"]) == (1, 0, 1), changed
    held = _records_by_email(ws)
    assert len(held) == ROWS and held[keys[2]]["LastName"] == "Changed"
    # A digest cannot be turned back: the state keeps them (and matches by them).
    assert _stored_keys(ws, "contacts") == digests
    assert ws.sync("contacts")["sent"] == 0

    # Without its salt no key would match and every row would be created again: refused.
    (Path(ws.state_url) / "contacts" / KEY_SALT_NAME).unlink()
    calls = ws.write_calls()
    refused = ws.run("sync", "contacts", check=False)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if KEY_SALT_NAME in line]
    assert len(lines) == 1 and "restore" in lines[0], refused.stderr
    assert ws.write_calls() == calls and len(_records_by_email(ws)) == ROWS


def test_sf_activation_state_key_keys_the_digests_and_a_worker_without_it_is_refused(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    secret = "state-key-value-for-tests-9f8e7d"
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _people(ws)
    _insert_model(ws, redact=True)
    with_key = {"SF_ACTIVATION_STATE_KEY": secret}
    assert ws.sync("contacts", env=with_key)["succeeded"] == ROWS
    _assert_no_clear_key(ws, "contacts")
    stored = _stored_keys(ws, "contacts")
    assert stored == _digests(ws, "contacts", keys, secret)
    salt = (Path(ws.state_url) / "contacts" / KEY_SALT_NAME).read_text()
    assert secret not in salt and stored.isdisjoint(_digests(ws, "contacts", keys))

    calls = ws.write_calls()
    for env in ({}, {"SF_ACTIVATION_STATE_KEY": "another-value"}):
        refused = ws.run("sync", "contacts", check=False, env=env)
        assert refused.returncode != 0
        lines = [line for line in refused.stderr.splitlines() if "SF_ACTIVATION_STATE_KEY" in line]
        assert len(lines) == 1 and KEY_SALT_NAME in lines[0], refused.stderr
        assert secret not in refused.stderr + refused.stdout
    assert ws.write_calls() == calls and len(_records_by_email(ws)) == ROWS
    assert ws.sync("contacts", env=with_key)["sent"] == 0


@pytest.mark.parametrize(
    ("transport", "point", "legacy"),
    [
        ("composite", "after_send_before_commit:1", False),
        ("bulk", "bulk_job_recorded:1", False),
        # The entry was written before the model redacted its key: clear keys in it.
        ("composite", "after_send_before_commit:1", True),
    ],
)
def test_creates_killed_in_flight_are_reconciled_by_digest_without_duplicates(
    tmp_path: Path, emulator: EmulatorHandle, transport: str, point: str, legacy: bool
) -> None:
    ws = Workspace(tmp_path / "ws", emulator)
    keys = _people(ws)
    _insert_model(ws, redact=not legacy, transport=transport)
    killed = ws.run(
        "sync", "contacts", "--json", check=False, env={"SF_ACTIVATION_TEST_KILL_AT": point}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    entries = list((Path(ws.state_url) / "contacts" / "ledger").glob("*.parquet"))
    assert entries, "the killed run left no ledger entry: the test would prove nothing"
    if not legacy:
        # The entry keeps the key as state does; the unmasked payload is not kept.
        assert _stored_keys(ws, "contacts", under="ledger") == _digests(ws, "contacts", keys)
        assert all("__payload" not in pq.read_schema(p).names for p in entries)
    _insert_model(ws, redact=True, transport=transport)
    time.sleep(1.2)  # the killed run's lease lapses
    runs = [ws.sync("contacts")]
    while runs[-1]["retried"] or runs[-1].get("unconfirmed"):
        assert len(runs) < 4, runs
        time.sleep(1.2)
        runs.append(ws.sync("contacts"))
    held = _records_by_email(ws)
    assert sorted(held) == sorted(keys)
    assert ws.sync("contacts")["sent"] == 0
    assert not list((Path(ws.state_url) / "contacts" / "ledger").glob("*.parquet"))
    _assert_no_clear_key(ws, "contacts")
    assert _stored_keys(ws, "contacts") == _digests(ws, "contacts", keys)


def test_on_s3_a_migrated_state_holds_digests_and_no_run_overwrites_the_salt(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,  # noqa: F811
) -> None:
    from sf_activation.state import StateError, StateStore

    keys = [f"person{i}@{DOMAIN}" for i in range(3)]
    clear = StateStore(s3_url, "m")
    clear.commit(
        pa.table(
            {
                "pk": keys,
                "hash": [f"h{i}" for i in range(3)],
                "sf_id": [f"003{i:015d}" for i in range(3)],
                "status": ["synced"] * 3,
                "payload": [
                    json.dumps({"Email": k, "LastName": "L"}, separators=(",", ":")) for k in keys
                ],
            }
        )
    )
    clear.compact()
    first = StateStore(s3_url, "m", redact_key=True, redact=["Email"])
    late = StateStore(s3_url, "m", redact_key=True, redact=["Email"])
    assert late.load(["pk"]).num_rows == 3  # read with a salt of its own, never written
    assert first.compact() == 3  # the snapshot rewritten with digests; the salt saved
    # Its digests are not the store's: it writes nothing, neither a commit (whose salt
    # upload is refused by the one already there) nor a snapshot.
    with pytest.raises(StateError, match="created by another run"):
        late.commit(pa.table({"pk": ["h:" + "0" * 64], "status": ["deleted"]}))
    with pytest.raises(StateError, match="created by another run"):
        late.compact()
    prefix = s3_url.removeprefix(f"s3://{s3_server.bucket}/")
    assert s3_server.keys(prefix) == [f"{prefix}/m/{KEY_SALT_NAME}", f"{prefix}/m/snapshot.parquet"]
    client = s3_server.client()
    salt = json.loads(
        client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/m/{KEY_SALT_NAME}")["Body"].read()
    )["salt"]
    snapshot = pq.read_table(
        pa.BufferReader(
            client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/m/snapshot.parquet")[
                "Body"
            ].read()
        )
    )
    assert DOMAIN not in json.dumps(snapshot.to_pylist(), default=str)
    assert snapshot.schema.metadata[PK_FORM_KEY] == b"hmac-sha256"
    key = hmac.new(b"", b"sf_activation primary key v1\0" + bytes.fromhex(salt), hashlib.sha256)
    want = {"h:" + hmac.new(key.digest(), k.encode(), hashlib.sha256).hexdigest() for k in keys}
    assert set(snapshot.column("pk").to_pylist()) == want
    # Another process, even one whose model no longer redacts its key, reads digests.
    assert set(StateStore(s3_url, "m").load(["pk"]).column("pk").to_pylist()) == want
