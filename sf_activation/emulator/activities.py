"""What a real org derives on Task and Event records when they are saved.

Salesforce's Object Reference ("Task", "Event") describes these fields as set by the
org, not by clients:

- `AccountId`: the account the activity belongs to: WhatId when it is an Account, the
  account of the Opportunity/Case in WhatId, else the account of the Contact in WhoId.
- Task `IsClosed` / `CompletedDateTime` follow a closed Status (`Completed`), and
  `IsHighPriority` follows `Priority = High`.
- Event times: a timed event needs a start (`ActivityDateTime` or `StartDateTime`) and a
  length (`DurationInMinutes` or `EndDateTime`); the org fills in the other of each pair,
  plus `ActivityDate` / `EndDate`. An all-day event needs `ActivityDate` (or a start).
  Missing ones are REQUIRED_FIELD_MISSING even though describe marks each of them
  nillable: the rule is across fields, which describe cannot express.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sf_activation.emulator.schema import RecordError, format_datetime

ACTIVITY_OBJECTS = frozenset({"Task", "Event"})
CLOSED_TASK_STATUSES = frozenset({"Completed"})
# Objects whose records carry an AccountId the activity inherits through WhatId.
_WHAT_WITH_ACCOUNT = ("Opportunity", "Case", "Contract", "Order", "Asset")


class _OrgLike(Protocol):
    def object_for_id(self, record_id: str) -> str | None: ...

    def get(self, object_name: str, record_id: str) -> dict[str, Any] | None: ...


def derive_activity(org: _OrgLike, object_name: str, record: dict[str, Any], now: str) -> None:
    """Fill the org-derived fields of a Task/Event record in place; RecordError if invalid."""
    record["AccountId"] = _account_of(org, record)
    if object_name == "Task":
        closed = record.get("Status") in CLOSED_TASK_STATUSES
        if closed and not record.get("IsClosed"):
            record["CompletedDateTime"] = now
        elif not closed:
            record["CompletedDateTime"] = None
        record["IsClosed"] = closed
        record["IsHighPriority"] = record.get("Priority") == "High"
    elif object_name == "Event":
        _event_times(record)


def _account_of(org: _OrgLike, record: dict[str, Any]) -> str | None:
    what = record.get("WhatId")
    if what:
        kind = org.object_for_id(what)
        if kind == "Account":
            return what
        if kind in _WHAT_WITH_ACCOUNT:
            parent = _safe_get(org, kind, what)
            if parent is not None and parent.get("AccountId"):
                return parent["AccountId"]
    who = record.get("WhoId")
    if who and org.object_for_id(who) == "Contact":
        contact = _safe_get(org, "Contact", who)
        if contact is not None:
            return contact.get("AccountId")
    return None


def _safe_get(org: _OrgLike, object_name: str, record_id: str) -> dict[str, Any] | None:
    try:
        return org.get(object_name, record_id)
    except KeyError:  # an object this org does not model
        return None


def _parse(value: str) -> datetime:
    # Stored datetimes are `2024-05-01T12:00:00.000+0000` (format_datetime).
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)


def _missing(name: str) -> RecordError:
    return RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name])


def _event_times(record: dict[str, Any]) -> None:
    if record.get("IsAllDayEvent"):
        start_day = record.get("ActivityDate")
        if start_day is None and record.get("StartDateTime"):
            start_day = _parse(record["StartDateTime"]).date().isoformat()
        if start_day is None:
            raise _missing("ActivityDate")
        day = date.fromisoformat(start_day)
        duration = record.get("DurationInMinutes") or 1440
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(minutes=int(duration))
        record["ActivityDate"] = start_day
        record["ActivityDateTime"] = record["StartDateTime"] = format_datetime(start)
        record["DurationInMinutes"] = int(duration)
        record["EndDateTime"] = format_datetime(end)
        record["EndDate"] = (end - timedelta(minutes=1)).date().isoformat()
        return
    start_text = record.get("ActivityDateTime") or record.get("StartDateTime")
    if not start_text:
        raise _missing("ActivityDateTime")
    start = _parse(start_text)
    if record.get("DurationInMinutes") is not None:
        end = start + timedelta(minutes=int(record["DurationInMinutes"]))
    elif record.get("EndDateTime"):
        end = _parse(record["EndDateTime"])
    else:
        raise _missing("DurationInMinutes")
    if end < start:
        raise RecordError(
            "FIELD_INTEGRITY_EXCEPTION",
            "End Date Time: The event end time can't be earlier than the start time.",
            ["EndDateTime"],
        )
    record["ActivityDateTime"] = record["StartDateTime"] = format_datetime(start)
    record["EndDateTime"] = format_datetime(end)
    record["DurationInMinutes"] = int((end - start).total_seconds() // 60)
    record["ActivityDate"] = start.date().isoformat()
    record["EndDate"] = end.date().isoformat()
