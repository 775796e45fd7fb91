"""Per-field behaviours end to end: `on_null`, `set_if_empty`, `send_fields: changed`.

The real `sf-activation sync` command runs against the emulator over HTTPS, through a
recording HTTPS reverse proxy (below) so the tests can read the request bodies the client
sent (Composite JSON and Bulk CSV uploads), and then what Salesforce holds is checked.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sf_activation.emulator.tls import ensure_certificate
from sf_activation.models import ModelError, load_model
from sf_activation_tests.support.workspace import Workspace

TRANSPORTS = ["composite", "bulk"]
HOP_HEADERS = {"connection", "transfer-encoding", "keep-alive", "content-length", "host"}


class RecordingProxy:
    """HTTPS in front of the emulator: forwards every request, keeps write bodies."""

    def __init__(self, emulator: Any, tls_dir: Path) -> None:
        self.upstream = emulator.instance_url.rstrip("/")
        self.verify = emulator.ca_bundle
        self.bodies: list[tuple[str, str, bytes]] = []  # (method, path, body)
        cert, key = ensure_certificate(tls_dir)
        self.ca_bundle = str(cert)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                body = self._body()
                if self.command in ("POST", "PATCH", "PUT") and (
                    "composite/sobjects" in self.path or "/batches" in self.path
                ):
                    proxy.bodies.append((self.command, self.path, body))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                answer = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    headers=headers,
                    data=body,
                    verify=proxy.verify,
                    timeout=60,
                    allow_redirects=False,
                )
                content = answer.content
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in HOP_HEADERS and k.lower() != "content-encoding":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def records_sent(self) -> list[dict[str, Any]]:
        """Every record of every Composite body and Bulk CSV upload, as sent (a Bulk row
        as a dict of its non-empty cells: an empty cell leaves the field alone)."""
        out: list[dict[str, Any]] = []
        for _method, path, body in self.bodies:
            if "/batches" in path:
                for row in csv.DictReader(io.StringIO(body.decode())):
                    out.append({k: v for k, v in row.items() if v != ""})
            else:
                for record in json.loads(body).get("records", []):
                    record.pop("attributes", None)
                    out.append(record)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(emulator: Any, tmp_path: Path) -> Iterator[RecordingProxy]:
    recording = RecordingProxy(emulator, tmp_path / "proxy-tls")
    try:
        yield recording
    finally:
        recording.close()


@pytest.fixture
def ws(tmp_path: Path, emulator: Any, proxy: RecordingProxy) -> Workspace:
    workspace = Workspace(tmp_path / "project", emulator)
    workspace.env["SALESFORCE_INSTANCE_URL"] = proxy.url
    workspace.env["SALESFORCE_CA_BUNDLE"] = proxy.ca_bundle
    return workspace


def _accounts(ws: Workspace, rows: list[tuple[Any, ...]]) -> None:
    ws.sql("CREATE OR REPLACE TABLE accounts (id VARCHAR, name VARCHAR, rating VARCHAR, "
           "phone VARCHAR, industry VARCHAR, source VARCHAR)")  # fmt: skip
    for row in rows:
        ws.sql("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?)", list(row))


def _rep_edit(emulator: Any, record_id: str, **fields: Any) -> None:
    """A rep's hand edit in Salesforce (straight to the emulator, not through the proxy)."""
    response = emulator.session().patch(
        emulator.url(f"/services/data/v62.0/sobjects/Account/{record_id}"), json=fields, timeout=10
    )
    assert response.status_code == 204, response.text


def _rep_create(emulator: Any, **fields: Any) -> str:
    response = emulator.session().post(
        emulator.url("/services/data/v62.0/sobjects/Account"), json=fields, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


# --------------------------------------------------------------------------- model file


def test_long_form_loads_beside_the_short_form(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yml"
    path.write_text(
        "object: Account\noperation: upsert\nprimary_key: id\nexternal_id: External_Id__c\n"
        "query: select 1\nsend_fields: changed\nfields:\n  id: External_Id__c\n  name: Name\n"
        "  rating: {field: Rating, on_null: keep}\n"
        "  source: {field: AccountSource, set_if_empty: true}\n"
        "  phone: {field: Phone}\n"
    )
    spec = load_model(path)
    assert spec.fields == {
        "id": "External_Id__c", "name": "Name", "rating": "Rating",
        "source": "AccountSource", "phone": "Phone",
    }  # fmt: skip
    assert spec.field_options["Rating"].on_null == "keep"
    assert spec.field_options["AccountSource"].set_if_empty is True
    assert "Phone" not in spec.field_options and spec.send_fields == "changed"


def test_long_form_mistakes_are_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yml"
    path.write_text(
        "object: Account\noperation: upsert\nprimary_key: id\nexternal_id: External_Id__c\n"
        "query: select 1\nsend_fields: some\nfields:\n  id: External_Id__c\n"
        "  rating: {field: Rating, on_nul: keep}\n  phone: {field: Phone, on_null: wipe}\n"
        "  source: {set_if_empty: true}\n  name: {field: Name, set_if_empty: maybe}\n"
    )
    with pytest.raises(ModelError) as caught:
        load_model(path)
    text = "\n".join(caught.value.problems)
    where = str(path)
    assert any(p.endswith("fields.rating.on_nul: unknown key; allowed keys: on_null, "
                          "set_if_empty, field") for p in caught.value.problems), text  # fmt: skip
    assert "fields.phone.on_null: 'wipe' is not one of keep, clear" in text
    assert "fields.source.field: missing" in text
    assert "fields.name.set_if_empty: 'maybe' is not true or false" in text
    assert "send_fields: 'some' is not one of all, changed" in text
    assert all(where in p or "accounts.yml" in p for p in caught.value.problems)


# --------------------------------------------------------------------------- on_null


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_on_null_keep_leaves_a_value_while_another_fields_null_clears(
    ws: Workspace, proxy: RecordingProxy, transport: str
) -> None:
    ws.model(
        "accounts",
        f"""
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        transport: {transport}
        query: select * from accounts
        fields:
          id: External_Id__c
          name: Name
          rating:
            field: Rating
            on_null: keep
          phone: Phone
          industry: {{field: Industry, on_null: clear}}
        """,
    )
    _accounts(ws, [("A-1", "Acme", "Hot", "555-0100", "Energy", None)])
    ws.sync("accounts")
    _accounts(ws, [("A-1", "Acme", None, None, None, None)])
    summary = ws.sync("accounts")
    assert summary["succeeded"] == 1 and summary["transport"] == transport
    record = ws.records_by("Account")["A-1"]
    assert record["Rating"] == "Hot"  # keep: the null left it alone
    assert record["Phone"] is None and record["Industry"] is None  # clear (model, field)
    last = proxy.records_sent()[-1]
    assert "Rating" not in last
    if transport == "composite":
        assert last["Phone"] is None and last["Industry"] is None
    else:
        assert last["Phone"] == "#N/A" and last["Industry"] == "#N/A"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_on_null_clear_under_nulls_keep(ws: Workspace, transport: str) -> None:
    ws.model(
        "accounts",
        f"""
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        transport: {transport}
        nulls: keep
        query: select * from accounts
        fields:
          id: External_Id__c
          name: Name
          rating: {{field: Rating, on_null: clear}}
          phone: Phone
        """,
    )
    _accounts(ws, [("A-1", "Acme", "Hot", "555-0100", None, None)])
    ws.sync("accounts")
    _accounts(ws, [("A-1", "Acme", None, None, None, None)])
    ws.sync("accounts")
    record = ws.records_by("Account")["A-1"]
    assert record["Rating"] is None and record["Phone"] == "555-0100"


# --------------------------------------------------------------------------- send_fields


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_send_fields_changed_sends_only_changed_fields(
    ws: Workspace, emulator: Any, proxy: RecordingProxy, transport: str
) -> None:
    ws.model(
        "accounts",
        f"""
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        transport: {transport}
        send_fields: changed
        query: select * from accounts
        fields:
          id: External_Id__c
          name: Name
          rating: Rating
          phone: Phone
          industry: Industry
        """,
    )
    _accounts(ws, [("A-1", "Acme", "Hot", "555-0100", "Energy", None),
                   ("A-2", "Beta", "Cold", "555-0200", "Banking", None)])  # fmt: skip
    first = ws.sync("accounts")
    assert first["succeeded"] == 2
    # Added rows send every field.
    assert {r["External_Id__c"]: set(r) for r in proxy.records_sent()}["A-1"] == {
        "External_Id__c",
        "Name",
        "Rating",
        "Phone",
        "Industry",
    }
    held = ws.records_by("Account")
    _rep_edit(emulator, held["A-1"]["Id"], Industry="Retail")  # a rep's edit
    _rep_edit(emulator, held["A-2"]["Id"], Phone="555-9999")
    proxy.bodies.clear()
    # Name changes; A-2: Rating becomes null (a change to clear).
    _accounts(ws, [("A-1", "Acme Corp", "Hot", "555-0100", "Energy", None),
                   ("A-2", "Beta", None, "555-0200", "Banking", None)])  # fmt: skip
    second = ws.sync("accounts")
    assert second["changed"] == 2 and second["succeeded"] == 2
    sent = {r["External_Id__c"]: r for r in proxy.records_sent()}
    assert set(sent["A-1"]) == {"External_Id__c", "Name"}, sent
    assert sent["A-1"]["Name"] == "Acme Corp"
    assert set(sent["A-2"]) == {"External_Id__c", "Rating"}, sent
    now = ws.records_by("Account")
    assert now["A-1"]["Name"] == "Acme Corp"
    assert now["A-1"]["Industry"] == "Retail"  # the rep's edit to an unchanged field stays
    assert now["A-2"]["Rating"] is None and now["A-2"]["Phone"] == "555-9999"
    # Nothing changed: nothing sent.
    proxy.bodies.clear()
    third = ws.sync("accounts")
    assert third["unchanged"] == 2 and third["sent"] == 0 and proxy.bodies == []


def test_send_fields_changed_always_sends_redacted_fields(
    ws: Workspace, proxy: RecordingProxy
) -> None:
    """State keeps redacted values masked, so their change cannot be told: sent always."""
    ws.model(
        "accounts",
        """
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        send_fields: changed
        redact: [Phone]
        query: select * from accounts
        fields: {id: External_Id__c, name: Name, phone: Phone, rating: Rating}
        """,
    )
    _accounts(ws, [("A-1", "Acme", "Hot", "555-0100", None, None)])
    ws.sync("accounts")
    proxy.bodies.clear()
    _accounts(ws, [("A-1", "Acme", "Warm", "555-0100", None, None)])
    ws.sync("accounts")
    (sent,) = proxy.records_sent()
    assert set(sent) == {"External_Id__c", "Rating", "Phone"}


# --------------------------------------------------------------------------- set_if_empty


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_set_if_empty_keeps_a_reps_value_and_fills_empty_ones(
    ws: Workspace, emulator: Any, proxy: RecordingProxy, transport: str
) -> None:
    ws.model(
        "accounts",
        f"""
        object: Account
        operation: upsert
        primary_key: id
        external_id: External_Id__c
        transport: {transport}
        query: select * from accounts
        fields:
          id: External_Id__c
          name: Name
          source:
            field: AccountSource
            set_if_empty: true
        """,
    )
    # Records that exist before the model ever synced: upsert will match them by External
    # ID although state has no Id for them.
    _rep_create(emulator, Name="Rep A", External_Id__c="A-1", AccountSource="Web")
    _rep_create(emulator, Name="Rep B", External_Id__c="A-2")
    _accounts(ws, [("A-1", "Acme", None, None, None, "Partner Referral"),
                   ("A-2", "Beta", None, None, None, "Partner Referral"),
                   ("A-3", "Gamma", None, None, None, "Partner Referral")])  # fmt: skip
    first = ws.sync("accounts")
    assert first["succeeded"] == 3
    assert first["set_if_empty_reads"] == 1  # one SOQL query for the three rows
    held = ws.records_by("Account")
    assert held["A-1"]["AccountSource"] == "Web"  # the rep's value stays
    assert held["A-1"]["Name"] == "Acme"  # the other fields are written
    assert held["A-2"]["AccountSource"] == "Partner Referral"  # empty: filled in
    assert held["A-3"]["AccountSource"] == "Partner Referral"  # new record: gets it
    sent = {r["External_Id__c"]: r for r in proxy.records_sent()}
    assert "AccountSource" not in sent["A-1"] and sent["A-2"]["AccountSource"]
    # Later a rep sets A-3's source by hand, and the model changes A-3 (name and source).
    _rep_edit(emulator, held["A-3"]["Id"], AccountSource="Other")
    _accounts(ws, [("A-1", "Acme", None, None, None, "Partner Referral"),
                   ("A-2", "Beta", None, None, None, "Partner Referral"),
                   ("A-3", "Gamma 2", None, None, None, "Purchased List")])  # fmt: skip
    second = ws.sync("accounts")
    assert second["changed"] == 1 and second["set_if_empty_reads"] == 1
    record = ws.records_by("Account")["A-3"]
    assert record["Name"] == "Gamma 2" and record["AccountSource"] == "Other"


def test_set_if_empty_for_update_by_recorded_id(ws: Workspace, emulator: Any) -> None:
    """An insert model's changed rows are updated by the Id recorded at creation: the read
    goes by Id."""
    ws.model(
        "accounts",
        """
        object: Account
        operation: insert
        primary_key: id
        query: select * from accounts
        fields:
          id: External_Id__c
          name: Name
          rating: {field: Rating, set_if_empty: true}
        """,
    )
    _accounts(ws, [("A-1", "Acme", "Hot", None, None, None),
                   ("A-2", "Beta", None, None, None, None)])  # fmt: skip
    first = ws.sync("accounts")
    assert first["succeeded"] == 2 and first["set_if_empty_reads"] == 0  # creates only
    held = ws.records_by("Account")
    _rep_edit(emulator, held["A-1"]["Id"], Rating="Cold")
    _accounts(ws, [("A-1", "Acme 2", "Warm", None, None, None),
                   ("A-2", "Beta 2", "Warm", None, None, None)])  # fmt: skip
    second = ws.sync("accounts")
    assert second["succeeded"] == 2 and second["set_if_empty_reads"] == 1
    now = ws.records_by("Account")
    assert (now["A-1"]["Name"], now["A-1"]["Rating"]) == ("Acme 2", "Cold")
    assert (now["A-2"]["Name"], now["A-2"]["Rating"]) == ("Beta 2", "Warm")


def test_set_if_empty_needs_an_updateable_field(ws: Workspace) -> None:
    """An insert model may map a field Salesforce sets only on create (validate_mapping
    allows it); set_if_empty on it could never fill an existing record: refused."""
    ws.model(
        "opportunities",
        """
        object: Opportunity
        operation: insert
        primary_key: id
        query: select * from opportunities
        fields:
          id: External_Id__c
          name: Name
          stage: StageName
          close: CloseDate
          contact: {field: ContactId, set_if_empty: true}
        """,
    )
    ws.sql("CREATE TABLE opportunities (id VARCHAR, name VARCHAR, stage VARCHAR, "
           "close DATE, contact VARCHAR)")  # fmt: skip
    result = ws.run("validate", check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "fields.contact.set_if_empty: Opportunity.ContactId is not updateable" in out, out
