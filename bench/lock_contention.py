"""Parent-lock contention: the same Contacts sent grouped by Account vs. shuffled.

A real org locks a Contact's Account while the Contact is written, so parallel calls
carrying children of one Account collide (UNABLE_TO_LOCK_ROW). The emulator does the
same with `--faults parent_locks=1` (each call holds its locks for its processing time,
`--latency-ms`). This sends N Contacts spread at random over M Accounts in sObject
Collections calls of 200, `--concurrency` calls at a time, twice in one run:

- grouped: sorted by AccountId, as sf_activation's client sends them
  (`Plan.iter_to_send(group_by=lookups)`): a parent's children share a call, except
  where a parent straddles two calls;
- shuffled: in random order: nearly every call touches parents other calls in flight hold.

Records refused with UNABLE_TO_LOCK_ROW are sent again (same order policy) until all are
in, as a client retrying lock errors does. Reported per mode: lock errors on the first
pass and in total, passes, API calls and wall time; then the shuffled/grouped ratios.

    .venv/bin/python -m bench.lock_contention --contacts 20000 --accounts 200
    .venv/bin/python -m bench.lock_contention --lock-wait-ms 1000   # calls queue for locks
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from sf_activation.emulator.process import emulator_process

CALL_RECORDS = 200  # sObject Collections' maximum per call
MAX_PASSES = 50


@dataclass
class Outcome:
    mode: str
    records: int
    first_pass_lock_errors: int
    lock_errors: int
    other_errors: int
    passes: int
    api_calls: int
    wall_s: float
    saved: int


class Org:
    """Plain sObject Collections calls against the emulator (what any client sends)."""

    def __init__(self, info: dict[str, Any], concurrency: int) -> None:
        self.base = info["instance_url"]
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
        self.session.verify = info["ca_bundle"]
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
        self.session.mount("https://", adapter)
        self.session.headers["Authorization"] = f"Bearer {info['access_token']}"

    def create(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = self.session.post(
            f"{self.base}/services/data/v62.0/composite/sobjects",
            json={"allOrNone": False, "records": records},
            timeout=120,
        )
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.session.post(f"{self.base}/__emulator/reset", timeout=60).raise_for_status()

    def count(self, object_name: str) -> int:
        response = self.session.get(f"{self.base}/__emulator/records/{object_name}", timeout=120)
        response.raise_for_status()
        return len(response.json())


def accounts(org: Org, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, CALL_RECORDS):
        batch = [
            {"attributes": {"type": "Account"}, "Name": f"Parent {i}"}
            for i in range(start, min(n, start + CALL_RECORDS))
        ]
        results = org.create(batch)
        assert all(r["success"] for r in results), results
        ids.extend(r["id"] for r in results)
    return ids


def send(
    org: Org, mode: str, rows: list[tuple[int, int]], parents: int, concurrency: int
) -> Outcome:
    """Send every (contact number, account number) row; lock-refused ones again until in."""
    org.reset()  # each mode starts from an empty org: same parents, no earlier contacts
    account_ids = accounts(org, parents)
    pending = list(rows)
    first = total = other = calls = passes = 0
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        while pending and passes < MAX_PASSES:
            passes += 1
            chunks = [pending[i : i + CALL_RECORDS] for i in range(0, len(pending), CALL_RECORDS)]
            bodies = [
                [
                    {
                        "attributes": {"type": "Contact"},
                        "LastName": f"Child {n}",
                        "AccountId": account_ids[parent],
                    }
                    for n, parent in chunk
                ]
                for chunk in chunks
            ]
            answers = list(pool.map(org.create, bodies))
            calls += len(bodies)
            retry: list[tuple[int, int]] = []
            for chunk, results in zip(chunks, answers, strict=True):
                for row, result in zip(chunk, results, strict=True):
                    if result["success"]:
                        continue
                    if result["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW":
                        retry.append(row)
                    else:
                        other += 1
            if passes == 1:
                first = len(retry)
            total += len(retry)
            pending = retry  # kept in this mode's order
    wall = time.perf_counter() - began
    return Outcome(mode, len(rows), first, total, other, passes, calls, round(wall, 2),
                   org.count("Contact"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--latency-ms", type=int, default=100, help="each call's processing time (lock hold)"
    )
    parser.add_argument(
        "--lock-wait-ms",
        type=int,
        default=0,
        help="how long a call waits for a held parent before failing (0: fails at once)",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # Contacts spread at random over the Accounts (a few dozen to ~130 children each).
    rows = [(n, rng.randrange(args.accounts)) for n in range(args.contacts)]
    grouped = sorted(rows, key=lambda row: (row[1], row[0]))
    shuffled = list(rows)
    rng.shuffle(shuffled)
    faults = f"parent_locks=1,lock_wait_ms={args.lock_wait_ms}"
    flags = ["--faults", faults, "--latency-ms", str(args.latency_ms)]
    flags += ["--daily-api-limit", "100000000"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-locks-") as tmp,
        emulator_process(Path(tmp), *flags) as info,
    ):
        org = Org(info, args.concurrency)
        results = [
            send(org, "grouped", grouped, args.accounts, args.concurrency),
            send(org, "shuffled", shuffled, args.accounts, args.concurrency),
        ]
    by_mode = {r.mode: r for r in results}
    g, s = by_mode["grouped"], by_mode["shuffled"]
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "accounts": args.accounts,
                "concurrency": args.concurrency,
                "latency_ms": args.latency_ms,
                "lock_wait_ms": args.lock_wait_ms,
                "results": [asdict(r) for r in results],
                "ratio_shuffled_to_grouped": {
                    "wall": round(s.wall_s / g.wall_s, 2) if g.wall_s else None,
                    "lock_errors": round(s.lock_errors / g.lock_errors, 1)
                    if g.lock_errors
                    else None,
                    "first_pass_lock_errors": round(
                        s.first_pass_lock_errors / g.first_pass_lock_errors, 1
                    )
                    if g.first_pass_lock_errors
                    else None,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
