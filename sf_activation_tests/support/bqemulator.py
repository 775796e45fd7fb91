"""A local BigQuery for the warehouse tests: bqemulator (from the package registry).

`start_bq_emulator()` runs `bqemulator start --ephemeral` (in-memory DuckDB, nothing on
disk) as a subprocess on free loopback ports and yields a `BigQueryEmulator` handle. The
session-scoped fixture `bq_emulator` wraps it; a test module uses it with
`from sf_activation_tests.support.bqemulator import bq_emulator as bq_emulator`.
The process is shared by every module that imports the fixture and stopped at the end
of the session; each module works in its own dataset (`create_dataset`).

Point the product's reader at it with `SF_ACTIVATION_BIGQUERY_API_ENDPOINT=<endpoint>`
(the BigQuery backend then uses anonymous credentials) and `bigquery://<project>/<dataset>`
(`handle.url(dataset)`).

Offline start: at startup the emulator runs DuckDB's `INSTALL spatial`, which downloads
the extension from DuckDB's server (not a package registry) and fails without internet.
The wrapper below (`_MAIN`) replaces that step with a no-op before calling bqemulator's
CLI, so GEOGRAPHY / `ST_*` functions are unavailable; nothing here needs them.

bqemulator's own pytest plugin (`bqemu_*` fixtures) is disabled in pyproject's addopts
(`-p no:bqemulator`): it imports `testcontainers`, which is not installed, and would run
the emulator inside the test process.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

PROJECT = "sfa-test"
START_TIMEOUT_S = 60.0

# Run as `python -c _MAIN start …`: bqemulator's CLI with the spatial extension load skipped.
_MAIN = """\
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None  # INSTALL spatial downloads; not offline
from bqemulator.cli import main
main(sys.argv[1:], prog_name="bqemulator")
"""


_REQUESTS_METRIC = re.compile(
    r"^bqemulator_rest_requests_total\{(?P<labels>.*)\} (?P<value>\S+)$", re.MULTILINE
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BigQueryEmulator:
    """A running emulator: `endpoint` is the client's `api_endpoint`, `project` its project."""

    endpoint: str
    project: str
    process: subprocess.Popen[bytes]
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        """A google-cloud-bigquery Client on the emulator (anonymous credentials)."""
        if self._client is None:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import bigquery

            self._client = bigquery.Client(
                project=self.project,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=self.endpoint),
            )
        return self._client

    def url(self, dataset: str) -> str:
        """The product's warehouse URL for a dataset: `bigquery://<project>/<dataset>`."""
        return f"bigquery://{self.project}/{dataset}"

    def create_dataset(self, name: str) -> str:
        """A new, empty dataset (one of that name is dropped first); returns `project.name`."""
        dataset_id = f"{self.project}.{name}"
        self.client.delete_dataset(dataset_id, delete_contents=True, not_found_ok=True)
        self.client.create_dataset(dataset_id)
        return dataset_id

    def sql(
        self,
        statement: str,
        *,
        dataset: str | None = None,
        params: Sequence[Any] = (),
    ) -> list[dict[str, Any]]:
        """Run one BigQuery (GoogleSQL) statement; returns its rows (none for DDL/DML).

        `dataset` is the default dataset for bare table names; `params` are
        `google.cloud.bigquery.ScalarQueryParameter`/`ArrayQueryParameter`s for `@name`.
        """
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=list(params))
        if dataset:
            config.default_dataset = f"{self.project}.{dataset}"
        rows = self.client.query(statement, job_config=config).result()
        return [dict(row.items()) for row in rows]

    def request_counts(self) -> dict[tuple[str, str, str], int]:
        """REST requests served so far by (method, route template, status class), from
        the emulator's `/metrics` (its own `/metrics` and `/readyz` calls left out).

        A route looks like `/bigquery/v2/projects/{project_id}/queries/{job_id}` and a
        status class like `2xx`; take the difference of two snapshots to see what one
        call sent.
        """
        with urllib.request.urlopen(f"{self.endpoint}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        counts: dict[tuple[str, str, str], int] = {}
        for match in _REQUESTS_METRIC.finditer(text):
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("route") in ("/metrics", "/readyz"):
                continue
            key = (labels.get("method", ""), labels.get("route", ""), labels.get("status", ""))
            counts[key] = counts.get(key, 0) + int(float(match["value"]))
        return counts

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


def _tail(log: IO[bytes], limit: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def _ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/readyz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def start_bq_emulator(project: str = PROJECT) -> Iterator[BigQueryEmulator]:
    """Start an ephemeral emulator on free loopback ports; stop it on exit."""
    # Its own empty working directory: bqemulator reads `.bqemu.toml` from the current
    # directory, and BQEMU_* variables are dropped too, so only the flags below count.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    with (
        tempfile.TemporaryDirectory(prefix="sfa-bqemu-") as cwd,
        tempfile.TemporaryFile() as log,
    ):
        process: subprocess.Popen[bytes] | None = None
        endpoint = ""
        for _attempt in range(3):  # a free port may be taken before the server binds it
            rest_port, grpc_port = free_port(), free_port()
            endpoint = f"http://127.0.0.1:{rest_port}"
            log.seek(0)
            log.truncate()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _MAIN,
                    "start",
                    "--ephemeral",
                    "--rest-host=127.0.0.1",
                    f"--rest-port={rest_port}",
                    "--grpc-host=127.0.0.1",
                    f"--grpc-port={grpc_port}",
                    f"--project={project}",
                    "--log-level=warning",
                    "--log-format=console",
                ],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline:
                if _ready(endpoint):
                    break
                time.sleep(0.1)
            else:
                if process.poll() is None:  # still starting after the timeout
                    _stop(process)
                    pytest.fail(
                        f"bqemulator did not become ready at {endpoint}/readyz within "
                        f"{START_TIMEOUT_S:.0f}s; its output ends:\n{_tail(log)}"
                    )
                if "address already in use" in _tail(log).lower():
                    continue
                pytest.fail(
                    f"bqemulator exited with code {process.returncode} before it was ready; "
                    f"its output ends:\n{_tail(log)}"
                )
            break
        else:
            pytest.fail(f"bqemulator found no free port in 3 tries; its output ends:\n{_tail(log)}")
        assert process is not None
        handle = BigQueryEmulator(endpoint=endpoint, project=project, process=process)
        try:
            yield handle
        finally:
            handle.close()
            _stop(process)


_shared: dict[str, Any] = {"cm": None, "handle": None, "users": 0}


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[BigQueryEmulator]:
    """One emulator for the session, shared by every test module that imports this fixture."""
    # Each importing module gets its own copy of a session fixture from pytest; the
    # process behind it is started once and stopped when the last copy is torn down.
    if _shared["handle"] is None:
        cm = start_bq_emulator()
        _shared["handle"] = cm.__enter__()
        _shared["cm"] = cm
    _shared["users"] += 1
    try:
        yield _shared["handle"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            cm, _shared["cm"], _shared["handle"] = _shared["cm"], None, None
            with contextlib.suppress(Exception):
                cm.__exit__(None, None, None)
