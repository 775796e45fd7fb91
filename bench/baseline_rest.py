"""Baseline A: one REST upsert per record through simple-salesforce, 8 threads.

What per-event tools do (one or two API calls per row). Reads the whole table and sends
every row: these tools have no diff against what Salesforce already holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import duckdb
import requests
from simple_salesforce import Salesforce

from bench.harness import ACCOUNT_FIELDS


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--instance-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ca-bundle", required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    session = requests.Session()
    session.verify = args.ca_bundle
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=args.threads)
    session.mount("https://", adapter)
    sf = Salesforce(instance_url=args.instance_url, session_id=args.token, session=session)
    con = duckdb.connect(args.warehouse, read_only=True)
    columns = list(ACCOUNT_FIELDS)
    rows = con.execute(f"SELECT {', '.join(columns)} FROM accounts").fetchall()

    def upsert(row: tuple) -> bool:
        record = {ACCOUNT_FIELDS[c]: v for c, v in zip(columns, row, strict=True)}
        external_id = record.pop("External_Id__c")
        try:
            sf.Account.upsert(f"External_Id__c/{external_id}", record)
            return True
        except Exception:
            return False

    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(upsert, rows))
    print(json.dumps({"sent": len(results), "succeeded": sum(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
