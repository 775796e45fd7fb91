"""Request paths as clients really send them: repeated slashes (an instance URL kept with a
trailing slash, as the Salesforce CLI and jsforce do) and trailing slashes.

A real org serves these: the recorded exchanges in shared/data/real-org include
`GET //services/async/62.0/job/…/batch/…/result` answered 200, and REST resources are
recorded with a trailing slash (`/services/data/vxx.0/query/?q=…`).
"""

from __future__ import annotations

from simple_salesforce import Salesforce

from sf_activation_tests.support.emulator import EmulatorHandle

V = "62.0"


def test_repeated_slashes_reach_the_resource(emulator: EmulatorHandle) -> None:
    created = emulator.http.post(
        emulator.url(f"/services/data/v{V}/sobjects/Account"), json={"Name": "Acme"}
    )
    account_id = created.json()["id"]

    query = emulator.http.get(
        emulator.url(f"//services/data/v{V}/query"), params={"q": "SELECT Id, Name FROM Account"}
    )
    assert query.status_code == 200, query.text
    assert [(r["Id"], r["Name"]) for r in query.json()["records"]] == [(account_id, "Acme")]

    record = emulator.http.get(
        emulator.url(f"/services//data/v{V}//sobjects/Account/{account_id}//")
    )
    assert record.status_code == 200, record.text
    assert record.json()["Name"] == "Acme"

    versions = emulator.http.get(emulator.url("//services/data//"))
    assert versions.status_code == 200
    assert {"label": f"v{V}", "url": f"/services/data/v{V}", "version": V} in versions.json()

    patched = emulator.http.patch(
        emulator.url(f"//services/data/v{V}/sobjects/Account/{account_id}"), json={"Name": "Acme 2"}
    )
    assert patched.status_code == 204
    assert emulator.records("Account")[0]["Name"] == "Acme 2"

    # Tidying slashes does not make up resources: an unknown one is still a 404.
    missing = emulator.http.get(emulator.url(f"//services/data/v{V}/nothing-here"))
    assert missing.status_code == 404
    assert missing.json()[0]["errorCode"] == "NOT_FOUND"


def test_trailing_slash_on_bulk_routes(emulator: EmulatorHandle) -> None:
    job = emulator.http.post(
        emulator.url(f"/services/data/v{V}/jobs/query/"),
        json={"operation": "query", "query": "SELECT Id FROM Account"},
    )
    assert job.status_code == 200, job.text
    info = emulator.http.get(emulator.url(f"//services/data/v{V}/jobs/query/{job.json()['id']}/"))
    assert info.status_code == 200 and info.json()["id"] == job.json()["id"]


def test_a_client_with_a_trailing_slash_instance_url(emulator: EmulatorHandle) -> None:
    """simple-salesforce keeps whatever instance it is given; with `host:port/` every URL
    it builds starts `https://host:port//services/…`."""
    sf = Salesforce(
        instance=emulator.instance_url.removeprefix("https://") + "/",
        session_id=emulator.access_token,
        session=emulator.session(),
        version=V,
    )
    assert "//services/data" in sf.base_url
    created = sf.Account.create({"Name": "Slashy"})
    assert created["success"] is True
    assert sf.query("SELECT Name FROM Account")["records"][0]["Name"] == "Slashy"
    bulk_rows = sf.bulk.Account.query("SELECT Name FROM Account")
    assert [r["Name"] for r in bulk_rows] == ["Slashy"]
