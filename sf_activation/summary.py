"""What one sync run did: the counts, calls and samples the CLI prints and Dagster records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SyncSummary:
    model: str
    object: str
    operation: str
    run_id: str
    transport: str
    dry_run: bool = False
    full_resync: bool = False
    rows: int = 0
    invalid: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    pending: int = 0
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    retried: int = 0
    deleted: int = 0
    # mirror: keys that left the model while a current row carries their record's match
    # key or Id (a regenerated primary key, a key whose case changed): kept, not deleted
    superseded: int = 0
    delete_failed: int = 0  # mirror deletes Salesforce refused (in the reject file)
    api_calls: int = 0
    # Of api_calls: SOQL reads of the current values of `set_if_empty` fields.
    set_if_empty_reads: int = 0
    rejects_url: str | None = None
    # The run's sync log: one row per row sent, refused or deleted (sf_activation/sync_log.py).
    sync_log_url: str | None = None
    # This run's record beside the state (`run_history`), once `execute()` has ended.
    run_record_url: str | None = None
    duration_s: float = 0.0
    # CPU seconds of this process (all threads) spent sending: serialise, send, reconcile,
    # commit — what the benchmarks divide by rows sent.
    send_cpu_s: float = 0.0
    send_s: float = 0.0  # wall time of the send phase (duration_s includes the plan)
    bulk_job_ids: list[str] = field(default_factory=list)
    reject_codes: dict[str, int] = field(default_factory=dict)
    reject_sample: list[dict[str, Any]] = field(default_factory=list)
    sample_changes: list[dict[str, Any]] = field(default_factory=list)
    stopped_reason: str | None = None
    # Why the run stopped early: budget (the API share; a clean stop), unreachable
    # (Salesforce stopped answering: exit 1), auth, interrupted (SIGINT/SIGTERM).
    stopped: str | None = None
    # Rows of earlier runs' lost answers or killed sends whose outcome this run learned
    # from Salesforce (created or refused), and rows still held because Salesforce has not
    # told yet whether their create landed (never sent again blindly; OUTCOME_UNKNOWN).
    reconciled: int = 0
    unconfirmed: int = 0
    # Where the sent plan came from: "warehouse" (made by this step's own query) or
    # "staged" (the plan an earlier step of the same run made and staged).
    plan_source: str = "warehouse"
    # Rows refused because their parent record is missing while the parent model had not
    # landed every row: left pending (counted in `retried`), not rejected; and why.
    held: int = 0
    held_reasons: dict[str, int] = field(default_factory=dict)
    # What the plan would send (added + changed + pending, + unchanged on a full resync),
    # and, on a dry run, its invalid rows by error code with a few (masked) keys each: a
    # plan names the rows a sync would reject before anything is sent.
    to_send: int = 0
    invalid_codes: dict[str, int] = field(default_factory=dict)
    invalid_keys: dict[str, list[Any]] = field(default_factory=dict)
    # Where the diff ran: "local" (every row read into DuckDB here) or "warehouse"
    # (sf_activation/warehouse_diff.py); rows the plan read from the warehouse, and why
    # the warehouse engine read every row this time (None: only the changed ones).
    diff_engine: str = "local"
    # The warehouse table the run's sync log was also appended to (warehouse engine).
    sync_log_table: str | None = None
    rows_fetched: int = 0
    full_read_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
