"""What a send is asked to do and what became of every record.

Shared by `composite.py`, `bulk.py` and `client.py`; callers (the sync) read these types.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Operation = Literal["insert", "update", "upsert", "delete"]
StopKind = Literal["budget", "unreachable", "auth", "interrupted"]
Transport = Literal["composite", "bulk"]

KEY_COLUMN = "__key"
# Optional: each record's fields as one JSON object text, nulls as JSON null (the sync's
# canonical payload). Composite sends it as is when the layout is plain (`nulls: clear`,
# no lookups) instead of encoding the columns again.
FIELDS_JSON_COLUMN = "__fields_json"

# Outcome codes the client itself assigns (Salesforce's codes are used where they exist).
API_BUDGET_REACHED = "API_BUDGET_REACHED"
NOT_SENT = "NOT_SENT"
MISSING_ARGUMENT = "MISSING_ARGUMENT"
BULK_JOB_FAILED = "BULK_JOB_FAILED"
BULK_RESULT_MISSING = "BULK_RESULT_MISSING"
# A create whose answer was lost after it reached Salesforce: it may exist. Never sent
# again blindly; the sync's ledger reconciliation finds out (sf_activation/ledger.py).
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"

Dispatch = Callable[[list[Any], "str | None"], None]
"""on_dispatch(keys, bulk_job_id): called in the caller's thread just before records that
Salesforce could apply are sent (a create call, a Bulk job's upload). The sync records
them in its ledger then; an exception raised here stops the send before anything leaves."""


# A column mapped to `RecordType.DeveloperName` names each row's record type; the client
# sends it as `RecordTypeId` (Salesforce cannot look a record type up by name itself).
RECORD_TYPE_NAME_COLUMN = "RecordType.DeveloperName"
DUPLICATES_DETECTED = "DUPLICATES_DETECTED"


class WriteSwitches(BaseModel):
    """How Salesforce should treat the records of a send beyond their fields: the model
    file's `record_type`, `assignment_rules`, `duplicate_rules` and `delete_mode`."""

    model_config = ConfigDict(frozen=True)

    # False: no assignment rule; True: the active one; text: that AssignmentRule Id.
    assignment_rule: bool | str = False
    allow_save: bool = False  # duplicate rules with an alert let the record be saved
    hard_delete: bool = False  # Bulk 2.0 hardDelete: records skip the recycle bin
    record_type_id: str | None = None  # sent as RecordTypeId on insert and upsert
    record_type_ids: dict[str, str] = Field(default_factory=dict)  # DeveloperName -> Id
    record_type_names: tuple[str, ...] = ()  # every DeveloperName, for messages

    def rest_headers(self, operation: str) -> dict[str, str]:
        """Headers of a REST write. Salesforce runs the active assignment rules when
        `Sforce-Auto-Assign` is absent, so `false` must say FALSE out loud."""
        if operation == "delete":
            return {}
        rule = self.assignment_rule
        headers = {"Sforce-Auto-Assign": rule if isinstance(rule, str) else str(rule).upper()}
        if self.allow_save:
            headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
        return headers


def explain_duplicates(message: str | None, rule: str | None = None) -> str:
    """A DUPLICATES_DETECTED reject's message: Salesforce's text, the rule, the way out."""
    text = message or "duplicate record detected"
    if rule:
        text += f" (duplicate rule {rule})"
    return (
        f"{text}; a duplicate rule blocked the save. If these records are meant to exist, "
        "set duplicate_rules: allow_save in the model file (rules set to Block stay blocked)"
    )


class SendRequest(BaseModel):
    """One object/operation to send, as the model file configures it."""

    model_config = ConfigDict(frozen=True)

    object: str
    operation: Operation
    external_id: str | None = None
    transport: Transport = "composite"
    nulls: Literal["clear", "keep"] = "clear"
    # Fields whose null goes the other way than `nulls` (a model's `on_null:` per field).
    field_nulls: dict[str, Literal["clear", "keep"]] = Field(default_factory=dict)
    concurrency: int = Field(default=8, ge=1, le=64)
    switches: WriteSwitches = Field(default_factory=WriteSwitches)


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


@dataclass(slots=True)
class Outcomes:
    """What became of a group of records, column by column: entry i is record i.

    Senders fill the columns straight from Salesforce's answers and the sync reads them as
    arrays, because an object per record was a fifth of the client's CPU per million rows.
    Iterating yields one `RecordOutcome` per record, for code where rows are few (rejects,
    tests). Entries are in no particular order; `keys` say which record each one is.
    """

    keys: list[Any]
    success: list[bool]
    sf_ids: list[str | None]
    created: list[bool | None]
    error_codes: list[str | None]
    messages: list[str | None]
    fields: list[Sequence[str]]
    retryable: list[bool]
    attempts: list[int]

    @classmethod
    def succeeded(
        cls, keys: list[Any], sf_ids: list[str | None], created: list[bool | None], attempts: int
    ) -> Outcomes:
        n = len(keys)
        return cls(
            keys, [True] * n, sf_ids, created, [None] * n, [None] * n, [()] * n,
            [False] * n, [attempts] * n,
        )  # fmt: skip

    @classmethod
    def failed(
        cls,
        keys: list[Any],
        error_code: str,
        message: str,
        *,
        retryable: bool,
        attempts: int,
        sf_ids: list[str | None] | None = None,
    ) -> Outcomes:
        """The same failure for every key (a job that failed, a budget reached)."""
        n = len(keys)
        return cls(
            keys, [False] * n, sf_ids or [None] * n, [None] * n, [error_code] * n,
            [message] * n, [()] * n, [retryable] * n, [attempts] * n,
        )  # fmt: skip

    @classmethod
    def of(cls, records: Iterable[RecordOutcome]) -> Outcomes:
        out = cls.empty()
        for r in records:
            out.append(r)
        return out

    @classmethod
    def empty(cls) -> Outcomes:
        return cls([], [], [], [], [], [], [], [], [])

    @classmethod
    def concat(cls, parts: Iterable[Outcomes]) -> Outcomes:
        """The parts in one; a single part is returned as it is, not copied."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        out = cls.empty()
        for part in parts:
            out.extend(part)
        return out

    def append(self, r: RecordOutcome) -> None:
        self.keys.append(r.key)
        self.success.append(r.success)
        self.sf_ids.append(r.sf_id)
        self.created.append(r.created)
        self.error_codes.append(r.error_code)
        self.messages.append(r.message)
        self.fields.append(tuple(r.fields))
        self.retryable.append(r.retryable)
        self.attempts.append(r.attempts)

    def extend(self, other: Outcomes) -> None:
        for mine, theirs in zip(self._columns(), other._columns(), strict=True):
            mine.extend(theirs)

    def take(self, indices: Iterable[int]) -> Outcomes:
        chosen = list(indices)
        return Outcomes(*([column[i] for i in chosen] for column in self._columns()))

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.keys, self.success, self.sf_ids, self.created, self.error_codes,
            self.messages, self.fields, self.retryable, self.attempts,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> RecordOutcome:
        return RecordOutcome(
            self.keys[i], self.success[i], self.sf_ids[i], self.created[i],
            self.error_codes[i], self.messages[i], list(self.fields[i]), self.retryable[i],
            self.attempts[i],
        )  # fmt: skip

    def __iter__(self) -> Iterator[RecordOutcome]:
        return (self[i] for i in range(len(self)))

    def success_mask(self) -> np.ndarray:
        return np.asarray(self.success, dtype=bool)

    def retryable_mask(self) -> np.ndarray:
        """Not done, not the row's fault: failed and retryable."""
        return np.asarray(self.retryable, dtype=bool) & ~self.success_mask()


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
    stopped_kind: StopKind | None = None

    def add(self, outcomes: Outcomes) -> None:
        n = len(outcomes)
        succeeded = int(np.count_nonzero(outcomes.success_mask()))
        retryable = int(np.count_nonzero(outcomes.retryable_mask()))
        self.sent += n
        self.succeeded += succeeded
        self.retryable += retryable
        self.failed += n - succeeded - retryable
        self.retried += int(np.count_nonzero(np.asarray(outcomes.attempts) > 1))

    def check(self) -> None:
        """Every record accounted for: raise if the totals do not add up."""
        if self.sent != self.succeeded + self.failed + self.retryable:
            raise AssertionError(
                f"outcomes do not add up: sent {self.sent} != succeeded {self.succeeded} "
                f"+ failed {self.failed} + retryable {self.retryable}"
            )


class StopSignal:
    """Set once when the run must stop sending; remembers why.

    `kind`: `budget` (the API share reached: a clean stop), `unreachable` (Salesforce
    stopped answering), `auth` (credentials refused; `error` is raised after the calls in
    flight are handed back), `interrupted` (SIGINT/SIGTERM).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.kind: StopKind | None = None
        self.error: BaseException | None = None

    def set(
        self, reason: str, kind: StopKind = "budget", error: BaseException | None = None
    ) -> None:
        if not self._event.is_set():
            self.reason = reason
            self.kind = kind
            self.error = error
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def not_sent(self, keys: list[Any], attempts: int = 0) -> Outcomes:
        """Outcomes of rows left unsent because of this stop: pending, sent next run."""
        code = API_BUDGET_REACHED if self.kind in (None, "budget") else NOT_SENT
        message = f"not sent: {self.reason or 'the run stopped'}"
        return Outcomes.failed(keys, code, message, retryable=True, attempts=attempts)


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
