"""What a send is asked to do and what became of every record.

Shared by `composite.py`, `bulk.py` and `client.py`; callers (the sync) read these types.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Operation = Literal["insert", "update", "upsert", "delete"]
Transport = Literal["composite", "bulk"]

KEY_COLUMN = "__key"

# Outcome codes the client itself assigns (Salesforce's codes are used where they exist).
API_BUDGET_REACHED = "API_BUDGET_REACHED"
NOT_SENT = "NOT_SENT"
MISSING_ARGUMENT = "MISSING_ARGUMENT"
BULK_JOB_FAILED = "BULK_JOB_FAILED"
BULK_RESULT_MISSING = "BULK_RESULT_MISSING"


class SendRequest(BaseModel):
    """One object/operation to send, as the model file configures it."""

    model_config = ConfigDict(frozen=True)

    object: str
    operation: Operation
    external_id: str | None = None
    transport: Transport = "composite"
    nulls: Literal["clear", "keep"] = "clear"
    concurrency: int = Field(default=8, ge=1, le=64)


@dataclass(slots=True)
class RecordOutcome:
    """Exactly one per input record.

    `retryable=True` means "not done, not the row's fault" (retries exhausted, a failed
    Bulk job, the API budget reached): leave the row pending and send it next run.
    """

    key: str
    success: bool
    sf_id: str | None = None
    created: bool | None = None
    error_code: str | None = None
    message: str | None = None
    fields: list[str] = field(default_factory=list)
    retryable: bool = False
    attempts: int = 1


@dataclass
class SendReport:
    """Totals of one `SalesforceClient.send`; `sent = succeeded + failed + retryable`."""

    transport: Transport
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    retryable: int = 0
    retried: int = 0  # records sent more than once within this call
    api_calls: int = 0
    bulk_job_ids: list[str] = field(default_factory=list)
    stopped_reason: str | None = None

    def add(self, outcomes: list[RecordOutcome]) -> None:
        for outcome in outcomes:
            self.sent += 1
            if outcome.success:
                self.succeeded += 1
            elif outcome.retryable:
                self.retryable += 1
            else:
                self.failed += 1
            if outcome.attempts > 1:
                self.retried += 1

    def check(self) -> None:
        """Every record accounted for: raise if the totals do not add up."""
        if self.sent != self.succeeded + self.failed + self.retryable:
            raise AssertionError(
                f"outcomes do not add up: sent {self.sent} != succeeded {self.succeeded} "
                f"+ failed {self.failed} + retryable {self.retryable}"
            )


class StopSignal:
    """Set once when the run must stop sending (API budget, credentials); remembers why."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class RetryPolicy(BaseModel):
    """Bounded retries with exponential backoff and full jitter."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=6, ge=1)
    base_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=30.0, ge=0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        # Full jitter spreads the writers that hit the same lock apart.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def choose_transport(rows_to_send: int, transport: str, bulk_threshold: int) -> Transport:
    """`auto` → Bulk 2.0 when at least `bulk_threshold` rows are to be sent, else Composite."""
    if transport == "composite":
        return "composite"
    if transport == "bulk":
        return "bulk"
    if transport != "auto":
        raise ValueError(f"transport must be auto, composite or bulk, not {transport!r}")
    return "bulk" if rows_to_send >= bulk_threshold else "composite"
