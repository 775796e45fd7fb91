"""A plan handed from the step that made it to the step that sends it.

In Dagster, `warehouse/<model>` queries the warehouse and diffs; `salesforce/<model>`
sends. The two steps may run in different processes or pods, so the plan (a DuckDB file,
see `diff.Plan`) is staged beside the state, keyed by the run:

    {state_url}/{model}/plans/{run_id}/plan.duckdb
    {state_url}/{model}/plans/{run_id}/plan.json      what it was made from (StagedPlanInfo)

The sending step adopts it only if it is still the plan it would make itself: the same
run, the same model as written (a model file edited between the steps changes its
digest), the same full-resync choice, and the state at the same version (no other run
committed in between). Otherwise it plans again, once, inside the send step. The plan is
removed once sent; plans left by runs that never sent are removed by later runs after
`STALE_AFTER_S`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
import uuid
from pathlib import Path

import duckdb
from pydantic import BaseModel, ConfigDict, ValidationError

from sf_activation.diff import PLAN_DATABASE, Plan
from sf_activation.models import ModelSpec
from sf_activation.state import StateError, StateStore

log = logging.getLogger(__name__)

PLANS_DIR = "plans"
INFO_NAME = "plan.json"
# A staged plan no step consumed (its run failed before the send, or only the warehouse
# asset was materialized) is garbage after this long; younger ones may belong to a run
# whose send step has not started yet.
STALE_AFTER_S = 24 * 3600.0
FORMAT = 1


class StagedPlanInfo(BaseModel):
    """What a staged plan was made from, and what the send step needs to adopt it."""

    model_config = ConfigDict(extra="ignore")

    format: int = FORMAT
    run_id: str
    model_digest: str
    state_version: int
    full_resync: bool
    fields: list[str]
    counts: dict[str, int]
    insert_only: bool
    redact: list[str]
    decimals: dict[str, int]
    transport: str
    # Where the diff ran and what it read (the warehouse step's summary, shown again by
    # the send step that adopts the plan).
    diff_engine: str = "local"
    rows_fetched: int = 0
    full_read_reason: str | None = None


def model_digest(spec: ModelSpec) -> str:
    """Changes when anything that shapes the plan changes: the model file's keys, its SQL
    (and the partition window a run restricts it to)."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def _dir(run_id: str) -> str:
    return f"{PLANS_DIR}/{_safe(run_id)}"


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:64]


def stage(plan: Plan, info: StagedPlanInfo, state: StateStore) -> str:
    """Write the plan and its info (the info last: a plan without one is never adopted).
    Returns where it is, for logs."""
    rel = _dir(info.run_id)
    state.upload_file(plan.database, f"{rel}/{PLAN_DATABASE}")
    state.write_bytes(f"{rel}/{INFO_NAME}", info.model_dump_json().encode())
    _remove_stale(state, keep=rel)
    return f"{state.url}/{rel}"


def adopt(
    state: StateStore,
    *,
    run_id: str,
    spec: ModelSpec,
    full_resync: bool,
    work_dir: Path,
) -> tuple[Plan, StagedPlanInfo] | None:
    """The plan staged for this run, opened from a local copy, when it still holds; else
    None (with the reason logged) and the caller plans itself."""
    rel = _dir(run_id)
    try:
        raw = state.read_bytes(f"{rel}/{INFO_NAME}")
    except FileNotFoundError:
        return None
    except StateError as exc:
        log.warning("%s: cannot read the staged plan (%s); planning again", spec.name, exc)
        return None
    try:
        info = StagedPlanInfo.model_validate_json(raw)
    except ValidationError:
        log.warning("%s: the staged plan in %s/%s is unreadable; planning again",
                    spec.name, state.url, rel)  # fmt: skip
        return None
    why = _stale_reason(info, state, run_id=run_id, spec=spec, full_resync=full_resync)
    if why is not None:
        log.info("%s: not using the plan staged by this run's warehouse step: %s; "
                 "planning again", spec.name, why)  # fmt: skip
        return None
    db_dir = work_dir / f"staged-{uuid.uuid4().hex[:12]}"
    db_dir.mkdir(parents=True, exist_ok=True)
    try:
        state.download_file(f"{rel}/{PLAN_DATABASE}", db_dir / PLAN_DATABASE)
        con = duckdb.connect(str(db_dir / PLAN_DATABASE))
        spill = (db_dir / "spill").as_posix().replace("'", "''")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET preserve_insertion_order = true")
    except (OSError, StateError, duckdb.Error) as exc:
        shutil.rmtree(db_dir, ignore_errors=True)
        log.warning("%s: cannot open the staged plan (%s); planning again", spec.name, exc)
        return None
    plan = Plan(
        con,
        db_dir,
        info.fields,
        info.full_resync,
        dict(info.counts),
        info.insert_only,
        info.redact,
        info.decimals,
    )
    return plan, info


def _stale_reason(
    info: StagedPlanInfo, state: StateStore, *, run_id: str, spec: ModelSpec, full_resync: bool
) -> str | None:
    if info.format != FORMAT:
        return f"it was written in format {info.format}"
    if info.run_id != run_id:
        return f"it belongs to run {info.run_id}"
    if info.model_digest != model_digest(spec):
        return "the model file or its SQL changed after it was made"
    if info.full_resync != full_resync:
        return "it was made without the full resync this step asks for"
    version = state.version()
    if info.state_version != version:
        return f"another run changed the state since (version {info.state_version} → {version})"
    return None


def discard(state: StateStore, run_id: str) -> None:
    """Remove this run's staged plan (sent, or replaced by a fresh one)."""
    try:
        state.delete_tree(_dir(run_id))
    except (OSError, StateError) as exc:
        log.warning("could not remove the staged plan %s/%s: %s", state.url, _dir(run_id), exc)


def _remove_stale(state: StateStore, *, keep: str) -> None:
    """Plans of runs that never sent them, older than STALE_AFTER_S (best effort)."""
    try:
        entries = state.list_dirs(PLANS_DIR)
    except StateError:
        return
    now = time.time()
    for name, mtime in entries:
        if f"{PLANS_DIR}/{name}" != keep and mtime and now - mtime > STALE_AFTER_S:
            try:
                state.delete_tree(f"{PLANS_DIR}/{name}")
            except (OSError, StateError) as exc:
                log.debug("could not remove stale plan %s: %s", name, exc)
