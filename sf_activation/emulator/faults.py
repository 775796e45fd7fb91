"""Injected faults (`--faults`, `--latency-ms`), reproducible with `--seed`.

Two kinds. Before-faults fire before a request reaches the routes (`drop`,
`unavailable`, and `bulk_results` on Bulk result downloads): nothing is applied.
After-faults fire once the route has applied a write (`lost`: no answer at all;
`slow`: the answer held back `slow_seconds`), which is what a read timeout, a reset
after send or a load-balancer drop looks like to a client.

Two more shape what a Bulk API 2.0 ingest job reports (counts of rows, not shares; read
when a job starts processing, so a job keeps them whatever is set later):
`missing_results=N` leaves the job's first N uploaded rows out of every result file
(successful, failed and unprocessed) while what the job did with them stands — results
that do not add up; `stop_after_rows=K` makes a job with more rows apply its first K only
and end Failed, its other rows unprocessed. Together they make a job that failed midway
and does not list some rows it created.
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

RequestFault = Literal["drop", "unavailable"]
WriteFault = Literal["lost", "slow"]
# The faults counted in /__emulator/stats (lock is per record, and not counted).
COUNTED = ("lost", "bulk_results", "slow", "drop", "unavailable")
SHARES = ("lock", "unavailable", "drop", "lost", "bulk_results", "slow", "parent_locks")
# Whole numbers of rows.
ROW_COUNTS = ("missing_results", "stop_after_rows")
# Listed by as_dict() only when set: the spec GET /__emulator/faults answers keeps the
# shape it had before them.
_LISTED_WHEN_SET = ROW_COUNTS


@dataclass(frozen=True)
class FaultSpec:
    lock: float = 0.0  # share of records failing with UNABLE_TO_LOCK_ROW
    unavailable: float = 0.0  # share of API requests answered 503 SERVER_UNAVAILABLE
    drop: float = 0.0  # share of API requests whose connection is closed without an answer
    session_ttl: float | None = None  # seconds a token lives before 401 INVALID_SESSION_ID
    bulk_seconds: float = 0.0  # how long a Bulk job stays InProgress
    lost: float = 0.0  # share of write requests applied, then closed without an answer
    bulk_results: float = 0.0  # share of Bulk result downloads closed without an answer
    slow: float = 0.0  # share of write requests applied, answered after slow_seconds
    slow_seconds: float = 5.0  # how long a `slow` answer is held back
    # Row locks like an org's (locks.py): 1 turns them on; writes lock the parents they
    # look up for lock_ms (default: the latency, else 50 ms); a write finding a row held
    # waits up to lock_wait_ms (default 0) for it, then fails with UNABLE_TO_LOCK_ROW.
    parent_locks: float = 0.0
    lock_ms: float = 0.0
    lock_wait_ms: float = 0.0  # how long a write waits for a held row before failing
    # Bulk 2.0 ingest jobs: the first N uploaded rows are in none of the result files.
    missing_results: float = 0.0
    # Bulk 2.0 ingest jobs with more rows apply the first K, then end Failed.
    stop_after_rows: float | None = None

    def to_string(self) -> str:
        """The `name=value,…` form of what differs from the defaults (parse_faults' input)."""
        default = FaultSpec()
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                parts.append(f"{f.name}={_number(value)}")
        return ",".join(parts)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        default = FaultSpec()
        for name in _LISTED_WHEN_SET:
            if out[name] == getattr(default, name):
                del out[name]
        return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def parse_faults(spec: str | None) -> FaultSpec:
    """`lock=0.03,unavailable=0.01,session_ttl=20` -> FaultSpec; ValueError names the bad part."""
    if not spec:
        return FaultSpec()
    known = {f.name for f in fields(FaultSpec)}
    values: dict[str, float] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(f"unknown fault {part!r}; known: {', '.join(sorted(known))}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"fault {name} needs a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (name in SHARES and value > 1):
            bounds = "a share from 0 to 1" if name in SHARES else "a number >= 0"
            raise ValueError(f"fault {name}={raw.strip()} is out of range (needs {bounds})")
        if name in ROW_COUNTS and not value.is_integer():
            raise ValueError(f"fault {name}={raw.strip()} needs a whole number of rows")
        values[name] = value
    return FaultSpec(**values)


class Faults:
    """Draws faults from seeded generators: requests, records, and after-apply faults.

    Separate generators keep each sequence independent of the others: the record-level
    one of how many requests came before, so the same batches see the same lock
    failures run after run; the after-apply one (`lost`, `slow`, `bulk_results`) so
    that adding those faults leaves a seed's `drop`/`unavailable` sequence unchanged.
    """

    def __init__(self, spec: FaultSpec, *, seed: int | None = None, latency_ms: float = 0) -> None:
        self.spec = spec
        self.latency_s = max(0.0, latency_ms) / 1000.0
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self.seed = seed
            self._requests = random.Random(seed)
            self._records = random.Random(None if seed is None else seed + 1)
            self._after = random.Random(None if seed is None else seed + 2)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {name: self.counts[name] for name in COUNTED}

    def request_fault(self) -> RequestFault | None:
        spec = self.spec
        if not (spec.drop or spec.unavailable):
            return None
        with self._lock:
            draw = self._requests.random()
            fault: RequestFault | None = None
            if draw < spec.drop:
                fault = "drop"
            elif draw < spec.drop + spec.unavailable:
                fault = "unavailable"
            if fault is not None:
                self.counts[fault] += 1
        return fault

    def write_fault(self) -> WriteFault | None:
        """For a write request about to be applied: lose or delay its answer? One draw."""
        spec = self.spec
        if not (spec.lost or spec.slow):
            return None
        with self._lock:
            draw = self._after.random()
            fault: WriteFault | None = None
            if draw < spec.lost:
                fault = "lost"
            elif draw < spec.lost + spec.slow:
                fault = "slow"
            if fault is not None:
                self.counts[fault] += 1
        return fault

    def bulk_results_fault(self) -> bool:
        """For a Bulk result download: close the connection without an answer?"""
        share = self.spec.bulk_results
        if not share:
            return False
        with self._lock:
            failed = self._after.random() < share
            if failed:
                self.counts["bulk_results"] += 1
        return failed

    def lock_failure(self) -> bool:
        if not self.spec.lock:
            return False
        with self._lock:
            return self._records.random() < self.spec.lock
