"""Records per second the emulator takes through sObject Collections (it must never be
what a benchmark measures): 40,000 upserts in 200-record calls from 8 threads, no latency.

    .venv/bin/python -m bench.emulator_speed
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from sf_activation.emulator.process import emulator_process

RECORDS = 40_000


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(Path(tmp), "--daily-api-limit", "10000000") as info,
    ):
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
        session.verify = info["ca_bundle"]
        session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=8))
        headers = {
            "Authorization": f"Bearer {info['access_token']}",
            "Content-Type": "application/json",
        }
        url = (
            f"{info['instance_url']}/services/data/v62.0/composite/sobjects/Account/External_Id__c"
        )
        bodies = [
            json.dumps(
                {
                    "allOrNone": False,
                    "records": [
                        {
                            "attributes": {"type": "Account"},
                            "External_Id__c": f"S-{i}",
                            "Name": f"Speed {i}",
                            "AnnualRevenue": i * 1.5,
                            "NumberOfEmployees": i % 1000,
                            "Industry": "Banking",
                        }
                        for i in range(start, start + 200)
                    ],
                }
            )
            for start in range(0, RECORDS, 200)
        ]
        began = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda b: session.patch(url, data=b, headers=headers).status_code, bodies)
            )
        seconds = time.perf_counter() - began
        assert set(statuses) == {200}, statuses
        print(json.dumps({"records": RECORDS, "seconds": round(seconds, 2),
                          "records_per_s": round(RECORDS / seconds)}))  # fmt: skip


if __name__ == "__main__":
    main()
