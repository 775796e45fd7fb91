"""Shared pieces of the benchmarks: an emulator with latency, an Account-like warehouse,
and a way to run a command as a separate process and measure it.

Every figure is measured in the same run on the same machine, so ratios are what count
(absolute times drift on a shared machine).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import requests

from sf_activation.emulator.process import emulator_process

ROOT = Path(__file__).resolve().parent.parent

# Ten mapped fields, as the benchmark brief asks.
ACCOUNT_FIELDS = {
    "account_id": "External_Id__c",
    "name": "Name",
    "annual_revenue": "AnnualRevenue",
    "employees": "NumberOfEmployees",
    "industry": "Industry",
    "website": "Website",
    "phone": "Phone",
    "billing_city": "BillingCity",
    "billing_country": "BillingCountry",
    "description": "Description",
}


@dataclass
class Emulator:
    instance_url: str
    access_token: str
    ca_bundle: str

    def _get(self, path: str) -> Any:
        response = requests.get(
            f"{self.instance_url}{path}",
            headers={"Authorization": f"Bearer {self.access_token}"},
            verify=self.ca_bundle,
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    def api_calls(self) -> int:
        return int(self._get("/__emulator/stats")["api_calls"])

    def count(self, object_name: str = "Account") -> int:
        return len(self._get(f"/__emulator/records/{object_name}"))

    def reset(self) -> None:
        requests.post(
            f"{self.instance_url}/__emulator/reset",
            headers={"Authorization": f"Bearer {self.access_token}"},
            verify=self.ca_bundle,
            timeout=60,
        ).raise_for_status()


@contextlib.contextmanager
def emulator(latency_ms: int = 50, *extra: str) -> Iterator[Emulator]:
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        flags = ["--latency-ms", str(latency_ms), *extra]
        # Baseline A alone spends more than a real org's default daily allowance.
        flags += ["--daily-api-limit", "100000000"]
        with emulator_process(Path(tmp), *flags) as info:
            yield Emulator(info["instance_url"], info["access_token"], info["ca_bundle"])


def build_accounts(path: Path, rows: int) -> None:
    """An Account-like table with ten mapped fields, generated in DuckDB."""
    con = duckdb.connect(str(path))
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TABLE accounts AS
            SELECT 'B-' || lpad(i::VARCHAR, 9, '0') AS account_id,
                   'Account ' || i AS name,
                   round((hash(i) % 100000000)::DOUBLE / 100, 2) AS annual_revenue,
                   (hash(i, 'e') % 10000)::INTEGER AS employees,
                   (['Banking', 'Energy', 'Retail', 'Technology'])[1 + i % 4] AS industry,
                   'https://a' || i || '.example.com' AS website,
                   '+1 555 ' || lpad((i % 10000)::VARCHAR, 4, '0') AS phone,
                   (['Berlin', 'Lyon', 'Austin', 'Osaka', 'Quito'])[1 + i % 5] AS billing_city,
                   (['DE', 'FR', 'US', 'JP', 'EC'])[1 + i % 5] AS billing_country,
                   'Customer since ' || (2000 + i % 25) || ', "tier" ' || (i % 3) AS description
            FROM range({rows}) t(i)
            """
        )
    finally:
        con.close()


def change_accounts(path: Path, changed: float, added: float, removed: float) -> dict[str, int]:
    """Edit, add and remove shares of the rows (a day's activity)."""
    con = duckdb.connect(str(path))
    try:
        total = con.execute("SELECT count(*) FROM accounts").fetchone()[0]
        n_changed, n_added, n_removed = (max(1, int(total * s)) for s in (changed, added, removed))
        con.execute(
            f"UPDATE accounts SET annual_revenue = annual_revenue + 1 "
            f"WHERE account_id IN (SELECT account_id FROM accounts ORDER BY hash(account_id) "
            f"LIMIT {n_changed})"
        )
        con.execute(
            f"DELETE FROM accounts WHERE account_id IN (SELECT account_id FROM accounts "
            f"ORDER BY hash(account_id, 'r') LIMIT {n_removed})"
        )
        con.execute(
            f"""
            INSERT INTO accounts SELECT 'N-' || lpad(i::VARCHAR, 9, '0'), 'New ' || i, 1.0, 1,
                   'Retail', NULL, NULL, 'Lyon', 'FR', NULL FROM range({n_added}) t(i)
            """
        )
    finally:
        con.close()
    return {"changed": n_changed, "added": n_added, "removed": n_removed}


def write_model(models_dir: Path, name: str, operation: str, transport: str) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    fields = "\n".join(f"  {col}: {field}" for col, field in ACCOUNT_FIELDS.items())
    body = textwrap.dedent(
        f"""\
        object: Account
        operation: {operation}
        primary_key: account_id
        external_id: External_Id__c
        query: SELECT * FROM accounts
        transport: {transport}
        bulk_threshold: 10000
        max_delete_rate: 0.5
        fields:
        """
    )
    (models_dir / f"{name}.yml").write_text(body + fields + "\n")


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str


def measure(command: list[str], env: dict[str, str], cwd: Path | None = None) -> Measured:
    """Run a command as its own process; wall time, its CPU seconds and peak RSS."""
    start = time.perf_counter()
    # ru_maxrss of children is the peak of the largest child ever waited for, so each
    # measured command runs in a wrapper process that reports its own rusage.
    wrapped = [sys.executable, str(Path(__file__).with_name("rusage_wrapper.py")), *command]
    result = subprocess.run(wrapped, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    out, _, usage_line = result.stdout.rpartition("RUSAGE ")
    usage = json.loads(usage_line)
    return Measured(wall, usage["cpu_s"], usage["maxrss_mb"], out)
