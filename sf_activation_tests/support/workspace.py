"""A user's project for end-to-end tests: model files, a DuckDB warehouse, state, rejects.

Runs the real command (`python -m sf_activation sync MODEL --json`) in a subprocess with
environment variables, exactly as a user or a scheduler would, against the emulator over
real HTTPS. Same pattern as `test_sync_end_to_end.Workspace`, plus what the reliability
tests need: extra environment per run (kill points, credentials), reading every reject
file of a model (S3 or local), and the records Salesforce holds by external id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import duckdb

WRITE_ROUTE_MARKERS = ("composite", "jobs/ingest")


class Workspace:
    """Models, a DuckDB warehouse, local state and rejects (S3 or a directory)."""

    def __init__(
        self,
        root: Path,
        emulator: Any,
        rejects_url: str | None = None,
        *,
        auth: str = "access_token",
    ) -> None:
        self.root = root
        self.emulator = emulator
        root.mkdir(parents=True, exist_ok=True)
        self.models = root / "models"
        self.models.mkdir(exist_ok=True)
        self.warehouse = root / "warehouse.duckdb"
        self.rejects_url = rejects_url or str(root / "rejects")
        self.state_url = str(root / "state")
        self.env: dict[str, str] = {
            k: v
            for k, v in os.environ.items()
            # DAGSTER_HOME too: a CLI sync reports to that instance (tests opt in).
            if not k.startswith(("SALESFORCE_", "SF_ACTIVATION_")) and k != "DAGSTER_HOME"
        }
        self.env.update(
            {
                "SF_ACTIVATION_WAREHOUSE_URL": f"duckdb:///{self.warehouse}",
                "SF_ACTIVATION_MODELS_DIR": str(self.models),
                "SF_ACTIVATION_STATE_URL": self.state_url,
                "SF_ACTIVATION_REJECTS_URL": self.rejects_url,
                # A create whose answer was lost and that the emulator does not hold was
                # not applied (the emulator answers or drops at once): release it after
                # a second rather than waiting out Salesforce's 10 minutes.
                "SF_ACTIVATION_UNKNOWN_OUTCOME_GRACE_S": "1",
            }
        )
        self.use_emulator(emulator, auth=auth)

    def use_emulator(self, emulator: Any, *, auth: str = "access_token") -> None:
        """Point the workspace at `emulator` with one auth flow: `access_token` (a ready
        session, cannot renew) or `refresh_token` (renews itself when the session expires)."""
        self.emulator = emulator
        for name in [k for k in self.env if k.startswith("SALESFORCE_")]:
            del self.env[name]
        self.env["SALESFORCE_CA_BUNDLE"] = str(emulator.ca_bundle)
        if auth == "access_token":
            self.env["SALESFORCE_INSTANCE_URL"] = emulator.instance_url
            self.env["SALESFORCE_ACCESS_TOKEN"] = emulator.access_token
        elif auth == "refresh_token":
            self.env["SALESFORCE_LOGIN_URL"] = emulator.instance_url
            self.env["SALESFORCE_CLIENT_ID"] = "reliability-client"
            self.env["SALESFORCE_CLIENT_SECRET"] = "client-secret-value-for-tests"
            self.env["SALESFORCE_REFRESH_TOKEN"] = "refresh-token-value-for-tests"
        else:
            raise ValueError(auth)

    # -- warehouse and models ------------------------------------------------------------

    def sql(self, statement: str, params: list[Any] | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse))
        try:
            return con.execute(statement, params or []).fetchall()
        finally:
            con.close()

    def model(self, name: str, body: str) -> Path:
        path = self.models / f"{name}.yml"
        path.write_text(textwrap.dedent(body))
        return path

    # -- running -------------------------------------------------------------------------

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: int = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sf_activation", *args],
            env={**self.env, **(env or {})},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"sf-activation {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def sync(self, model: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        result = self.run("sync", model, "--json", *extra, env=env)
        return json.loads(result.stdout)

    # -- what Salesforce and the reject store hold ------------------------------------------

    def write_calls(self) -> int:
        routes = self.emulator.stats()["requests_by_route"]
        return sum(n for route, n in routes.items() if any(m in route for m in WRITE_ROUTE_MARKERS))

    def records_by(self, object_name: str, key: str = "External_Id__c") -> dict[str, dict]:
        """Records keyed by `key`; fails on duplicates (the promise: no duplicates)."""
        records = self.emulator.records(object_name)
        counts = Counter(r.get(key) for r in records)
        dupes = {k: n for k, n in counts.items() if n > 1}
        assert not dupes, f"duplicates in Salesforce by {key}: {list(dupes.items())[:5]}"
        return {r[key]: r for r in records}

    def reject_file(self, url: str | None) -> list[dict[str, Any]]:
        """The rows of one reject file (a summary's `rejects_url`)."""
        if not url:
            return []
        if url.startswith("s3://"):
            bucket, _, key = url.removeprefix("s3://").partition("/")
            body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        else:
            body = Path(url).read_text(encoding="utf-8")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def rejects(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        return self.reject_file(summary.get("rejects_url"))

    def all_reject_files(self) -> list[Path]:
        """Every local reject file (when rejects go to a directory)."""
        return sorted(Path(self.rejects_url).glob("**/*.jsonl"))
