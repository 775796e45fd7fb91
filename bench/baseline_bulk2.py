"""Baseline B: a full reload of the whole table through simple-salesforce's bulk2 upsert.

What a destination without a diff does (Airbyte's Salesforce destination reloads everything).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

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
    args = parser.parse_args()

    session = requests.Session()
    session.verify = args.ca_bundle
    sf = Salesforce(instance_url=args.instance_url, session_id=args.token, session=session)
    con = duckdb.connect(args.warehouse, read_only=True)
    select = ", ".join(f'{col} AS "{field}"' for col, field in ACCOUNT_FIELDS.items())
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "accounts.csv"
        con.execute(f"COPY (SELECT {select} FROM accounts) TO '{csv_path}' (HEADER, DELIMITER ',')")
        results = sf.bulk2.Account.upsert(
            csv_file=str(csv_path), external_id_field="External_Id__c"
        )
    sent = sum(int(r.get("numberRecordsProcessed", 0)) for r in results)
    failed = sum(int(r.get("numberRecordsFailed", 0)) for r in results)
    print(json.dumps({"sent": sent, "succeeded": sent - failed, "jobs": len(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
