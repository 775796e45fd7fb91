"""Run the Salesforce emulator in a subprocess for tests: `start_emulator(tmp_path, *flags)`.

The emulator runs exactly as users run it (`python -m sf_activation emulator`), over
real HTTP(S) on a free loopback port; tests talk to it like any client would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

START_TIMEOUT_S = 20.0
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# Describe files for tests: Widget__c (every field type and flag the write path checks)
# and Gadget__c in the `sf sobject describe --json` wrapper.
TEST_SCHEMA_FLAGS = (
    "--schema",
    str(DATA_DIR / "schemas"),
    "--schema",
    str(DATA_DIR / "schemas_cli"),
)


@dataclass
class EmulatorHandle:
    instance_url: str
    access_token: str
    ca_bundle: str | None
    process: subprocess.Popen[bytes]
    log_path: Path
    _http: requests.Session | None = field(default=None, repr=False)

    def session(self, token: str | None = None) -> requests.Session:
        """A requests session that trusts the emulator's certificate and sends a token."""
        session = requests.Session()
        session.verify = self.ca_bundle or True
        session.headers["Authorization"] = f"Bearer {token or self.access_token}"
        return session

    @property
    def http(self) -> requests.Session:
        if self._http is None:
            self._http = self.session()
        return self._http

    def salesforce(self, version: str = "62.0") -> Any:
        """A simple-salesforce client on this emulator (an independent client)."""
        from simple_salesforce import Salesforce

        return Salesforce(
            instance_url=self.instance_url,
            session_id=self.access_token,
            session=self.session(),
            version=version,
        )

    def url(self, path: str) -> str:
        return self.instance_url + path

    def stats(self) -> dict[str, Any]:
        response = self.http.get(self.url("/__emulator/stats"), timeout=10)
        response.raise_for_status()
        return response.json()

    def records(self, object_name: str) -> list[dict[str, Any]]:
        response = self.http.get(self.url(f"/__emulator/records/{object_name}"), timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.http.post(self.url("/__emulator/reset"), timeout=10).raise_for_status()

    def set_faults(self, spec: str, seed: int | None = None) -> None:
        """Change the emulator's faults while it runs (`""` clears them)."""
        body: dict[str, Any] = {"faults": spec}
        if seed is not None:
            body["seed"] = seed
        response = self.http.post(self.url("/__emulator/faults"), json=body, timeout=10)
        response.raise_for_status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the emulator (SIGTERM: clean shutdown) and return its exit status."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


@contextlib.contextmanager
def start_emulator(tmp_path: Path, *extra_flags: str) -> Iterator[EmulatorHandle]:
    """Start `sf-activation emulator --port 0` and yield once it accepts requests.

    Its certificate goes under tmp_path unless extra_flags name a --tls-dir; the
    process is stopped (SIGTERM, then SIGKILL) when the block ends.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    ready = tmp_path / f"emulator-ready-{token}.json"
    log_path = tmp_path / f"emulator-{token}.log"
    flags = list(extra_flags)
    if "--tls-dir" not in flags:
        flags += ["--tls-dir", str(tmp_path / "emulator-tls")]
    command = [sys.executable, "-m", "sf_activation", "emulator", "--port", "0"]
    command += ["--ready-file", str(ready), *flags]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=dict(os.environ)
        )
    handle: EmulatorHandle | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            if process.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with {process.returncode}: {log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator not ready after {START_TIMEOUT_S}s")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        handle = EmulatorHandle(
            instance_url=info["instance_url"],
            access_token=info["access_token"],
            ca_bundle=info["ca_bundle"],
            process=process,
            log_path=log_path,
        )
        yield handle
    finally:
        if handle is not None:
            handle.stop()
        elif process.poll() is None:
            process.kill()
            process.wait(10)
