"""Run history: one small JSON record per sync run, beside the model's state.

Every `SyncRun.execute()` (the command, a Dagster step, anything else) writes
``{state_url}/{model}/runs/{stamp}-{run_id}.json`` when it ends, succeeded or failed, and
its request log (`inspector.py`) beside it as ``{stamp}-{run_id}.requests.jsonl``. The
stamp is the run's start (UTC, milliseconds), so the files' lexical order is the order
the runs started, on any worker. Records older than `SF_ACTIVATION_RUN_HISTORY_DAYS` are
pruned each time one is written (no separate clean-up job to forget).

Why beside the state and not in Dagster: a run started from cron or a shell has no
Dagster run to look at, and the state store is the one place every worker can write.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from sf_activation.inspector import RequestLog
from sf_activation.state import StateError, StateStore

if TYPE_CHECKING:
    from sf_activation.sync import SyncRun

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
RECORD_SUFFIX = ".json"
REQUESTS_SUFFIX = ".requests.jsonl"
STAMP_FORMAT = "%Y%m%dT%H%M%S"
_SAFE_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")
_STAMP_RE = re.compile(r"^(\d{8}T\d{6})\.(\d{3})Z-")
ERROR_CHARS = 300

# The SyncSummary counts a record keeps (what `runs` and an alert need, not the samples).
COUNT_FIELDS = (
    "rows",
    "invalid",
    "added",
    "changed",
    "unchanged",
    "pending",
    "removed",
    "sent",
    "succeeded",
    "failed",
    "retried",
    "deleted",
    "rejected",
    "superseded",
    "delete_failed",
    "reconciled",
    "unconfirmed",
    "held",
)


class RunRecord(BaseModel):
    """What one run did, as `sf-activation runs` lists it."""

    version: int = 1
    model: str
    run_id: str
    # "cli", or the Dagster run id when a Dagster step ran it ("api" for other callers).
    trigger: str
    trigger_kind: Literal["cli", "dagster", "api"]
    started_at: dt.datetime
    duration_s: float
    object: str
    operation: str
    transport: str
    full_resync: bool = False
    counts: dict[str, int] = Field(default_factory=dict)
    api_calls: int = 0
    rejects: int = 0
    rejects_url: str | None = None
    reject_codes: dict[str, int] = Field(default_factory=dict)
    bulk_job_ids: list[str] = Field(default_factory=list)
    stopped: str | None = None
    stopped_reason: str | None = None
    outcome: Literal["succeeded", "failed"]
    error: str | None = None  # one line, secrets removed
    requests_file: str | None = None  # the request log beside this record (a file name)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def trigger_of(run_id: str, trigger: str | None) -> tuple[str, Literal["cli", "dagster", "api"]]:
    """(trigger, kind): the CLI says "cli"; a Dagster step passes its run id (a UUID) as
    the sync's run id, so a UUID run id without a stated trigger is a Dagster run."""
    if trigger == "cli":
        return "cli", "cli"
    if trigger:
        return trigger, "dagster" if _is_uuid(trigger) else "api"
    if _is_uuid(run_id):
        return run_id, "dagster"
    return "api", "api"


def stamp_of(when: dt.datetime) -> str:
    when = when.astimezone(dt.UTC)
    return f"{when.strftime(STAMP_FORMAT)}.{when.microsecond // 1000:03d}Z"


def started_from_name(name: str) -> dt.datetime | None:
    match = _STAMP_RE.match(name)
    if match is None:
        return None
    when = dt.datetime.strptime(match.group(1), STAMP_FORMAT).replace(tzinfo=dt.UTC)
    return when + dt.timedelta(milliseconds=int(match.group(2)))


def safe_id(run_id: str) -> str:
    """A run id as it may appear in a file name (as StateStore keeps it)."""
    return _SAFE_ID_RE.sub("_", run_id)[:64]


def one_line(exc: BaseException, scrub: Callable[[str], str] | None = None) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    if scrub is not None:
        line = scrub(line)
    return line[:ERROR_CHARS]


class _RecordStore(StateStore):
    """The model's state store for run records only. A record holds no primary key, so
    writing one never needs the key salt: it neither creates a salt (a model whose key is
    redacted must not get one from a run that failed before sending) nor checks
    SF_ACTIVATION_STATE_KEY against it (a worker refused for a wrong key says so once,
    from the run, and its failed run is still recorded)."""

    def _before_write(self, metadata: dict | None) -> dict | None:
        return metadata


class RunHistory:
    """The run records of one model (local directory or S3, through `StateStore`)."""

    def __init__(self, state_url: str, model: str, *, retention_days: float = 30.0) -> None:
        self.store = _RecordStore(state_url, model)
        self.model = model
        self.retention_days = retention_days

    def url(self, name: str) -> str:
        return f"{self.store.url}/{RUNS_DIR}/{name}"

    def names(self) -> list[str]:
        """Record file names, newest first."""
        return sorted(self.store.list_files(RUNS_DIR, RECORD_SUFFIX), reverse=True)

    def read(self, name: str) -> RunRecord:
        return RunRecord.model_validate_json(self.store.read_bytes(f"{RUNS_DIR}/{name}"))

    def records(self, limit: int | None = None) -> tuple[list[RunRecord], int]:
        """(the newest `limit` records, how many there are)."""
        names = self.names()
        chosen = names if limit is None else names[: max(limit, 0)]
        out = []
        for name in chosen:
            try:
                out.append(self.read(name))
            except (FileNotFoundError, ValueError) as exc:  # pruned meanwhile, or torn
                log.warning("%s: skipping run record %s (%s)", self.model, name, exc)
        return out, len(names)

    def find(self, run_id: str | None) -> str | None:
        """The record file of `run_id` (the latest when None)."""
        names = self.names()
        if run_id is None:
            return names[0] if names else None
        for name in names:
            if name.removesuffix(RECORD_SUFFIX).endswith(f"-{safe_id(run_id)}"):
                return name
        return None

    def write(self, record: RunRecord, requests: bytes | None) -> str:
        """Write the request log, then the record naming it; prune; the record's URL."""
        base = f"{stamp_of(record.started_at)}-{safe_id(record.run_id)}"
        if requests is not None:
            self.store.write_bytes(f"{RUNS_DIR}/{base}{REQUESTS_SUFFIX}", requests)
            record = record.model_copy(update={"requests_file": base + REQUESTS_SUFFIX})
        name = base + RECORD_SUFFIX
        self.store.write_bytes(f"{RUNS_DIR}/{name}", record.model_dump_json().encode())
        try:
            self.prune()
        except (StateError, OSError) as exc:
            log.warning("%s: could not prune old run records: %s", self.model, exc)
        return self.url(name)

    def prune(self, now: dt.datetime | None = None) -> list[str]:
        """Delete records and request logs older than the retention; the names deleted."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=self.retention_days)
        old = [
            name
            for name in self.store.list_files(RUNS_DIR, "")
            if (started := started_from_name(name)) is not None and started < cutoff
        ]
        self.store.delete_files([f"{RUNS_DIR}/{name}" for name in old])
        return old


class RunRecorder:
    """Started by `SyncRun.execute()`: keeps the run's request log while it runs and writes
    its record when it ends. Writing never raises: a store that cannot take the record is
    logged, and the run's own outcome (or error) is what the caller sees."""

    def __init__(self, run: SyncRun) -> None:
        self.run = run
        self.started_at = dt.datetime.now(dt.UTC)
        self._t0 = time.monotonic()
        session = getattr(run.client, "session", None)
        self._scrub = getattr(session, "redact", None)
        self.requests = RequestLog(
            redact=set(run.spec.redact),
            scrub=self._scrub,
        )
        try:
            self.requests.attach(session)
        except Exception as exc:  # a test double without a real session
            log.debug("%s: request log not attached: %s", run.spec.name, exc)

    def finish(self, error: BaseException | None) -> str | None:
        run = self.run
        try:
            self.requests.detach()
            summary = run.summary
            trigger, kind = trigger_of(run.run_id, getattr(run, "trigger", None))
            failed = error is not None or summary.stopped == "unreachable"
            message = None
            if error is not None:
                message = one_line(error, self._scrub)
            elif failed:
                message = (summary.stopped_reason or "Salesforce unreachable")[:ERROR_CHARS]
            record = RunRecord(
                model=run.spec.name,
                run_id=run.run_id,
                trigger=trigger,
                trigger_kind=kind,
                started_at=self.started_at,
                duration_s=round(time.monotonic() - self._t0, 3),
                object=run.spec.object,
                operation=run.spec.operation,
                transport=summary.transport,
                full_resync=summary.full_resync,
                counts={name: int(getattr(summary, name, 0) or 0) for name in COUNT_FIELDS},
                api_calls=int(run.client.api_calls - run._api_calls_at_start),
                rejects=max(summary.rejected, sum(summary.reject_codes.values())),
                rejects_url=summary.rejects_url,
                reject_codes=dict(summary.reject_codes),
                bulk_job_ids=list(summary.bulk_job_ids),
                stopped=summary.stopped,
                stopped_reason=summary.stopped_reason,
                outcome="failed" if failed else "succeeded",
                error=message,
            )
            history = RunHistory(
                run.settings.state_url,
                run.spec.name,
                retention_days=run.settings.run_history_days,
            )
            url = history.write(record, self.requests.to_jsonl())
            summary.run_record_url = url
            return url
        except Exception as exc:
            # Never masks the run's own error, nor fails a run that succeeded. A run that
            # already failed (often on the same store) says so in its own one line.
            level = logging.DEBUG if error is not None else logging.WARNING
            log.log(level, "%s: could not write the run record: %s", run.spec.name, exc)
            return None


# ------------------------------------------------------------------ `sf-activation runs`

RUN_COLUMNS = ("started", "trigger", "outcome", "transport", "sent", "ok", "rejected", "calls",
               "secs", "run_id")  # fmt: skip
# started is UTC, month-day and time (the year rarely matters within the retention)


def _row(record: RunRecord) -> dict[str, str]:
    counts = record.counts
    trigger = (
        record.trigger if record.trigger_kind != "dagster" else f"dagster {record.trigger[:8]}"
    )
    outcome = record.outcome
    if record.stopped:
        outcome += f" ({record.stopped})"
    return {
        "started": record.started_at.astimezone(dt.UTC).strftime("%m-%d %H:%M:%S"),
        "trigger": trigger,
        "outcome": outcome,
        "transport": record.transport,
        "sent": str(counts.get("sent", 0)),
        "ok": str(counts.get("succeeded", 0)),
        "rejected": str(record.rejects),
        "calls": str(record.api_calls),
        "secs": f"{record.duration_s:.1f}",
        "run_id": record.run_id,
    }


def print_runs(model: str, settings: Any, *, limit: int, as_json: bool) -> int:
    """`sf-activation runs MODEL`: newest first; a table that fits the terminal (rich
    folds the long columns), "N of M" so a truncated list says so."""
    import json
    import sys

    history = RunHistory(settings.state_url, model, retention_days=settings.run_history_days)
    records, total = history.records(limit)
    if as_json:
        for record in records:
            print(json.dumps(record.model_dump(mode="json"), ensure_ascii=False))
        print(f"{len(records)} of {total} runs of {model}", file=sys.stderr)
        return 0
    if not total:
        print(f"no runs recorded for {model} in {history.store.url}/{RUNS_DIR}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs of {model}", title_justify="left")
    for column in RUN_COLUMNS:
        # Counts never wrap; the long text columns fold, so the table fits the terminal.
        text = column in ("started", "trigger", "transport", "run_id")
        table.add_column(column, no_wrap=not text, overflow="fold")
    for record in records:
        row = _row(record)
        table.add_row(*(row[c] for c in RUN_COLUMNS))
    console = Console()
    console.print(table)
    for record in records:
        if record.error:
            console.print(f"{record.run_id}: {record.error}", markup=False, soft_wrap=True)
    print(f"{len(records)} of {total} runs (newest first; kept {settings.run_history_days:g} days)")
    return 0
