"""The emulator as a process: start-up, ready file, TLS, shutdown, state across restarts."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sf_activation_tests.support.emulator import EmulatorHandle, start_emulator

V = "62.0"


def api(emu: EmulatorHandle, path: str) -> str:
    return emu.url(f"/services/data/v{V}/{path}")


def test_starts_quickly_with_tls_and_a_usable_ready_file(tmp_path: Path) -> None:
    started = time.monotonic()
    with start_emulator(tmp_path) as emu:
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, f"start-up took {elapsed:.2f}s"
        ready = json.loads(next(tmp_path.glob("emulator-ready-*.json")).read_text())
        assert set(ready) == {"instance_url", "access_token", "ca_bundle"}
        assert ready["instance_url"].startswith("https://127.0.0.1:")
        assert ready["access_token"].startswith("00D") and "!" in ready["access_token"]
        # The certificate is a CA bundle that verifies the server for 127.0.0.1 and localhost.
        context = ssl.create_default_context(cafile=ready["ca_bundle"])
        port = int(ready["instance_url"].rsplit(":", 1)[1])
        for host in ("127.0.0.1", "localhost"):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                assert tls.version() is not None
        # Without the bundle a client refuses it, as it should.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(emu.url("/services/data/"), verify=True, timeout=10)


def test_no_tls_serves_plain_http(tmp_path: Path) -> None:
    with start_emulator(tmp_path, "--no-tls") as emu:
        assert emu.instance_url.startswith("http://127.0.0.1:")
        assert emu.ca_bundle is None
        r = requests.get(
            api(emu, "limits/"), headers={"Authorization": f"Bearer {emu.access_token}"}, timeout=10
        )
        assert r.status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signals(tmp_path: Path, sig: int) -> None:
    with start_emulator(tmp_path) as emu:
        http = emu.session()  # an idle keep-alive TLS connection must not hold shutdown up
        assert http.get(api(emu, "limits/")).status_code == 200
        started = time.monotonic()
        assert emu.stop(sig) == 0
        assert time.monotonic() - started < 3
        assert "Traceback" not in emu.log()


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state" / "emulator.pickle"
    with start_emulator(tmp_path / "one", "--state", str(state)) as emu:
        http = emu.session()
        token = emu.access_token
        rows = [
            {"attributes": {"type": "Account"}, "Name": n, "External_Id__c": n}
            for n in ("A", "B", "C")
        ]
        ids = [
            r["id"]
            for r in http.post(api(emu, "composite/sobjects"), json={"records": rows}).json()
        ]
        assert http.delete(api(emu, f"sobjects/Account/{ids[2]}")).status_code == 204
        api_calls = emu.stats()["api_calls"]
        assert emu.stop() == 0
    assert state.exists()
    with start_emulator(tmp_path / "two", "--state", str(state)) as emu:
        http = emu.session(token)  # a token issued before the restart still works
        assert sorted(r["Name"] for r in emu.records("Account")) == ["A", "B"]
        assert emu.stats()["api_calls"] == api_calls
        r = http.get(api(emu, f"sobjects/Account/{ids[2]}"))
        assert r.status_code == 404 and r.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
        # Upsert matches what was saved; new ids do not collide with old ones.
        r = http.patch(api(emu, "sobjects/Account/External_Id__c/A"), json={"Name": "A2"})
        assert r.status_code == 200 and r.json()["id"] == ids[0]
        created = http.post(api(emu, "sobjects/Account"), json={"Name": "D"}).json()["id"]
        assert created not in ids


def test_state_is_saved_while_running(tmp_path: Path) -> None:
    """A kill -9 loses at most the last second or so: snapshots are written as it runs."""
    state = tmp_path / "emulator.pickle"
    with start_emulator(tmp_path / "one", "--state", str(state)) as emu:
        emu.session().post(api(emu, "sobjects/Account"), json={"Name": "kept"})
        deadline = time.monotonic() + 10
        while not state.exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        emu.stop(signal.SIGKILL)
    with start_emulator(tmp_path / "two", "--state", str(state)) as emu:
        assert [r["Name"] for r in emu.records("Account")] == ["kept"]


def _run_cli(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sf_activation", "emulator", *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )


def test_bad_flags_exit_with_a_one_line_reason(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Thing.json").write_text('{"label": "no name"}')
    (tmp_path / "state.pickle").write_bytes(b"not a pickle")
    cases = [
        (["--schema", str(tmp_path / "missing")], "not a directory"),
        (["--schema", str(tmp_path / "bad")], "Thing.json: not a describe"),
        (["--faults", "lock=abc"], "fault lock needs a number"),
        (["--state", str(tmp_path / "state.pickle")], "cannot read emulator state"),
        (["--credentials", str(tmp_path / "nope.json")], "--credentials"),
    ]
    for flags, message in cases:
        result = _run_cli(tmp_path, "--port", "0", *flags)
        assert result.returncode == 2, (flags, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_help_documents_the_flags(tmp_path: Path) -> None:
    result = _run_cli(tmp_path, "--help")
    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--schema",
        "--latency-ms",
        "--faults",
        "--seed",
        "--daily-api-limit",
        "--ready-file",
        "--no-tls",
        "--state",
        "--credentials",
        "session_ttl",
        "bulk_seconds",
    ):
        assert flag in result.stdout


def test_bad_input_never_takes_it_down(emulator: EmulatorHandle) -> None:
    http = emulator.session()
    nasty = [
        ("post", api(emulator, "composite/sobjects"), b"\xff\xfe\x00garbage", "application/json"),
        (
            "post",
            api(emulator, "composite/sobjects"),
            b'{"records": [' + b"[" * 5000,
            "application/json",
        ),
        (
            "patch",
            api(emulator, "composite/sobjects"),
            b'{"records": [{"attributes": 5}]}',
            "application/json",
        ),
        ("post", api(emulator, "sobjects/Account"), b"[]", "application/json"),
        ("post", api(emulator, "sobjects/Account"), b"Name=x", "application/x-www-form-urlencoded"),
        (
            "post",
            emulator.url("/services/oauth2/token"),
            b"\x00\x01",
            "application/x-www-form-urlencoded",
        ),
        ("get", api(emulator, "query?q=SELECT"), b"", "text/plain"),
        ("get", api(emulator, "sobjects/Account/" + "9" * 5000), b"", "text/plain"),
    ]
    for method, target, body, content_type in nasty:
        r = getattr(http, method)(target, data=body, headers={"Content-Type": content_type})
        assert 400 <= r.status_code < 500, (target, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json")
    r = http.get(
        api(emulator, "query"),
        params={"q": "SELECT Id FROM Account WHERE Name = '" + "x" * 17000 + "'"},
    )
    assert r.status_code == 414
    # A value of the wrong shape is a record error, not a crash.
    r = http.patch(
        api(emulator, "composite/sobjects/Account/External_Id__c"),
        json={"records": [{"External_Id__c": "N", "Name": {"nested": {}}}]},
    )
    assert r.status_code == 200
    assert r.json()[0]["errors"][0]["statusCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    # A 5 MB record list is refused by count, not by falling over.
    rows = [{"attributes": {"type": "Account"}, "Name": "x" * 200} for _ in range(20000)]
    r = http.post(api(emulator, "composite/sobjects"), json={"records": rows})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert http.get(api(emulator, "limits/")).status_code == 200
    assert emulator.process.poll() is None
