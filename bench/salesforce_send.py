"""Client CPU and throughput of both transports against a local emulator.

    PYTHONPATH=. .venv/bin/python bench/salesforce_send.py [ROWS]

Starts the emulator in a subprocess (its CPU is not counted), coerces ROWS synthetic
Account rows and upserts them by Composite and by Bulk 2.0, printing rows/s, the
client process's CPU seconds per 100k rows (coercion included) and API calls.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from sf_activation.salesforce import SendRequest, coerce_batch
from sf_activation_tests.support.emulator import start_emulator
from sf_activation_tests.support.salesforce_fixtures import fast_client

for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(name, None)


def warehouse_batches(n: int, offset: int, size: int = 50_000):
    for start in range(0, n, size):
        stop = min(n, start + size)
        ids = range(offset + start, offset + stop)
        yield pa.RecordBatch.from_pydict(
            {
                "account_id": [f"B-{i}" for i in ids],
                "name": [f"Account {i}, Inc." for i in ids],
                "employees": pa.array(ids, pa.int64()),
                "revenue": pa.array([i * 1.5 for i in ids]),
                "city": ["Zürich" if i % 2 else "Paris" for i in ids],
                "industry": ["Banking" if i % 3 else "Energy" for i in ids],
            }
        )


MAPPING = {
    "account_id": "External_Id__c",
    "name": "Name",
    "employees": "NumberOfEmployees",
    "revenue": "AnnualRevenue",
    "city": "BillingCity",
    "industry": "Industry",
}


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp, start_emulator(Path(tmp)) as em:
        client = fast_client(em)
        describe = client.describe("Account")
        for offset, transport in ((0, "composite"), (10**8, "bulk")):

            def keyed(offset: int = offset):
                for raw in warehouse_batches(rows, offset):
                    out = coerce_batch(
                        raw, primary_key="account_id", field_map=MAPPING, describe=describe
                    )
                    cols = [n for n in out.schema.names if not n.startswith("__")]
                    yield pa.RecordBatch.from_arrays(
                        [out.column("__pk"), *(out.column(c) for c in cols)], names=["__key", *cols]
                    )

            ok = 0

            def count(outcomes):
                nonlocal ok
                ok += sum(o.success for o in outcomes)

            cpu0, wall0 = time.process_time(), time.perf_counter()
            report = client.send(
                SendRequest(
                    object="Account",
                    operation="upsert",
                    external_id="External_Id__c",
                    transport=transport,
                ),
                keyed(),
                count,
            )
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            print(
                f"{transport:9s} rows={rows} ok={ok} wall={wall:.1f}s rows/s={rows / wall:,.0f} "
                f"client_cpu={cpu:.2f}s cpu_per_100k={cpu * 100_000 / rows:.2f}s "
                f"api_calls={report.api_calls} jobs={len(report.bulk_job_ids)}"
            )


if __name__ == "__main__":
    main()
