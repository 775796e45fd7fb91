"""Injected faults (`--faults`, `--latency-ms`), reproducible with `--seed`."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, fields
from typing import Literal

RequestFault = Literal["drop", "unavailable"]


@dataclass(frozen=True)
class FaultSpec:
    lock: float = 0.0  # share of records failing with UNABLE_TO_LOCK_ROW
    unavailable: float = 0.0  # share of API requests answered 503 SERVER_UNAVAILABLE
    drop: float = 0.0  # share of API requests whose connection is closed without an answer
    session_ttl: float | None = None  # seconds a token lives before 401 INVALID_SESSION_ID
    bulk_seconds: float = 0.0  # how long a Bulk job stays InProgress


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
        if value < 0 or (name in ("lock", "unavailable", "drop") and value > 1):
            raise ValueError(f"fault {name}={raw} is out of range")
        values[name] = value
    return FaultSpec(**values)


class Faults:
    """Draws faults from seeded generators: one for requests, one for records.

    Two generators keep the record-level sequence independent of how many requests
    came before, so the same batches see the same lock failures run after run.
    """

    def __init__(self, spec: FaultSpec, *, seed: int | None = None, latency_ms: float = 0) -> None:
        self.spec = spec
        self.latency_s = max(0.0, latency_ms) / 1000.0
        self._requests = random.Random(seed)
        self._records = random.Random(None if seed is None else seed + 1)
        self._lock = threading.Lock()

    def request_fault(self) -> RequestFault | None:
        spec = self.spec
        if not (spec.drop or spec.unavailable):
            return None
        with self._lock:
            draw = self._requests.random()
        if draw < spec.drop:
            return "drop"
        if draw < spec.drop + spec.unavailable:
            return "unavailable"
        return None

    def lock_failure(self) -> bool:
        if not self.spec.lock:
            return False
        with self._lock:
            return self._records.random() < self.spec.lock
