"""The dbt sensor: syncs after dbt runs outside Dagster (cron, dbt Cloud, CI).

dbt overwrites `target/run_results.json` at every invocation, so after `dbt run && dbt
test` between two ticks that file only tells about the tests. Every invocation appends to
dbt's log file, `dbt.log` in dbt's log path (rotated to `dbt.log.1` … `dbt.log.5`); written
as JSON lines (dbt's `log-format-file: json`) it names, for each invocation, every node's
final status (`NodeFinished`, a debug event: the file's default level) and the command
(`ResourceReport`, `CommandCompleted`, the invocation's last events). The sensor reads the
lines dbt appended since its last tick and takes every invocation that has finished;
`run_results.json` stays the source of an invocation the log does not describe (a log in
dbt's default text format, or no log).

For each new invocation the dbt models rebuilt successfully are reported as
materializations of their asset keys (so the lineage graph shows when they were last
built); each model reading one of them gets one sync request per tick, whatever the number
of invocations the tick found (the sync reads the tables as they are now).

The cursor (`SensorCursor`) keeps where the log was read up to, so a tick reads only what
is new and survives rotation, and the latest invocation's id and finish time: each dbt
invocation triggers once, however often the sensor ticks.

When dbt runs inside the same Dagster deployment (dagster-dbt), declarative automation
does the same job; see docs/dagster.md.
"""

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import dagster as dg
from pydantic import BaseModel, ValidationError

# What `dg.define_asset_job` returns; dagster does not export the class under a public name.
AssetJob = Any

DBT_TARGET_DIR_VARIABLE = "SF_ACTIVATION_DBT_TARGET_DIR"
# dbt's log path (its `--log-path`); default: `logs` next to the target directory, where
# dbt writes it for a project whose target-path and log-path are left as they are.
DBT_LOG_PATH_VARIABLE = "SF_ACTIVATION_DBT_LOG_PATH"
SENSOR_NAME = "dbt_run_results_sensor"
# dbt commands that rebuild relations; `compile` and `docs generate` also write
# run_results.json (and NodeFinished events) with "success" results, but nothing changed
# in the warehouse.
REBUILDING_COMMANDS = {"run", "build", "seed", "snapshot"}
REBUILT_RESOURCE_TYPES = ("model.", "seed.", "snapshot.")

LOG_FILE_NAME = "dbt.log"
# dbt's RotatingFileHandler renames dbt.log to dbt.log.1 (.1 to .2, …) once it passes
# `--log-file-max-bytes` (10 MB) and keeps five backups.
LOG_BACKUPS = 5
# An invocation that never logs CommandCompleted (dbt was killed) holds the read offset
# back until the log has events this much newer than its last one; then it is given up.
GIVE_UP_AFTER = timedelta(hours=12)
# A log file is known by its inode and its first bytes: once the oldest backup is deleted
# a new dbt.log may get its inode.
_HEAD_BYTES = 256
# The events the sensor reads; the other lines (SQL, connections: most of the log) are
# not parsed.
_EVENT_NAMES = (b"MainReportVersion", b"NodeFinished", b"ResourceReport", b"CommandCompleted")


@dataclass(frozen=True)
class SyncTarget:
    """One model's view for the sensor: its sync job and the dbt models it reads."""

    model: str
    job_name: str
    dbt_models: tuple[str, ...]
    partitions_def: dg.PartitionsDefinition | None = None
    # The asset key of each of dbt_models, in order, as the definitions' translator
    # names it; empty: the key is the name's path (`analytics/fct_accounts`).
    dbt_asset_keys: tuple[dg.AssetKey, ...] = ()


# --- What is read from dbt's files -------------------------------------------------------


class _Result(BaseModel):
    unique_id: str = ""
    status: str = ""
    execution_time: float | None = None
    adapter_response: dict[str, Any] | None = None
    relation_name: str | None = None


class _RunResultsMetadata(BaseModel):
    invocation_id: str = ""
    generated_at: str = ""


class _RunResultsArgs(BaseModel):
    which: str | None = None


class _RunResultsFile(BaseModel):
    """target/run_results.json: the last invocation only."""

    metadata: _RunResultsMetadata | None = None
    args: _RunResultsArgs | None = None
    results: list[_Result] = []


class _EventInfo(BaseModel):
    name: str
    invocation_id: str = ""
    ts: datetime | None = None


class _LogEvent(BaseModel):
    """One line of dbt.log in JSON format."""

    info: _EventInfo
    data: dict[str, Any] = {}


class _NodeRelation(BaseModel):
    relation_name: str | None = None


class _NodeInfo(BaseModel):
    unique_id: str = ""
    node_relation: _NodeRelation | None = None


class _NodeRunResult(BaseModel):
    status: str = ""
    execution_time: float | None = None
    adapter_response: dict[str, Any] | None = None


class _NodeFinished(BaseModel):
    node_info: _NodeInfo
    run_result: _NodeRunResult


class LogPosition(BaseModel):
    """Where a log file was read up to, and how to find that file after rotation."""

    inode: int
    head: str  # sha1 of the file's first head_len bytes
    head_len: int
    offset: int


class SensorCursor(BaseModel):
    """The sensor's cursor, stored as JSON.

    `generated_at` + `invocation_id` (the latest invocation seen and when it finished) are
    the whole cursor of the previous version, which read run_results.json only; such a
    cursor is read as one without a log position. Without a log position (or when its file
    is gone), an invocation that finished at or before `generated_at` counts as seen.
    """

    generated_at: str = ""
    invocation_id: str = ""
    # Finished invocations that started at or after `log.offset` (held back by one still
    # running): the next tick reads them again and must not take them twice.
    seen: list[str] = []
    log: LogPosition | None = None


# --- Invocations ------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    execution_time: float
    rows_affected: int | None
    relation_name: str | None


@dataclass(frozen=True)
class DbtInvocation:
    invocation_id: str
    generated_at: str  # when it finished (run_results.json's metadata.generated_at)
    command: str | None
    rebuilt: dict[str, NodeResult]  # dbt node name -> its result
    source: str  # "dbt.log" or "run_results.json"


def _node_name(unique_id: str) -> str:
    # model.<package>.<name>[.v<version>]: the asset key dagster-dbt gives is the name.
    parts = unique_id.split(".")
    return parts[2] if len(parts) >= 3 else parts[-1]


def _node_result(
    unique_id: str,
    execution_time: float | None,
    adapter_response: dict[str, Any] | None,
    relation_name: str | None,
) -> NodeResult:
    rows = (adapter_response or {}).get("rows_affected")
    return NodeResult(
        unique_id=unique_id,
        execution_time=float(execution_time or 0.0),
        rows_affected=rows if isinstance(rows, int) and rows >= 0 else None,
        relation_name=relation_name or None,
    )


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # dbt writes UTC; a time without its zone is read as UTC so that all compare.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _time_order(invocation: "DbtInvocation") -> datetime:
    return _parse_time(invocation.generated_at) or datetime.min.replace(tzinfo=UTC)


def _finished_after(generated_at: str, watermark: str) -> bool:
    """True unless both times are known and `generated_at` is not after `watermark`."""
    at, mark = _parse_time(generated_at), _parse_time(watermark)
    if at is None or mark is None:
        return True
    return at > mark


def read_run_results(path: Path) -> DbtInvocation:
    """Parse dbt's run_results.json: which models, seeds and snapshots were rebuilt."""
    parsed = _RunResultsFile.model_validate_json(path.read_bytes())
    meta = parsed.metadata or _RunResultsMetadata()
    command = parsed.args.which if parsed.args else None
    rebuilt: dict[str, NodeResult] = {}
    if command is None or command in REBUILDING_COMMANDS:
        for result in parsed.results:
            if result.unique_id.startswith(REBUILT_RESOURCE_TYPES) and result.status == "success":
                rebuilt[_node_name(result.unique_id)] = _node_result(
                    result.unique_id,
                    result.execution_time,
                    result.adapter_response,
                    result.relation_name,
                )
    return DbtInvocation(
        invocation_id=meta.invocation_id,
        generated_at=meta.generated_at,
        command=command,
        rebuilt=rebuilt,
        source="run_results.json",
    )


# --- dbt.log ----------------------------------------------------------------------------


@dataclass
class _LogFile:
    handle: IO[bytes]
    inode: int
    head: str
    head_len: int
    start: int = 0  # where this tick reads from
    end: int = 0  # after the last complete line read

    def position(self, offset: int) -> LogPosition:
        return LogPosition(inode=self.inode, head=self.head, head_len=self.head_len, offset=offset)

    def holds(self, position: LogPosition) -> bool:
        if self.inode != position.inode or self.head_len < position.head_len:
            return False
        self.handle.seek(0)
        head = self.handle.read(position.head_len)
        return (
            hashlib.sha1(head).hexdigest() == position.head
            and os.fstat(self.handle.fileno()).st_size >= position.offset
        )


@dataclass
class _LogInvocation:
    invocation_id: str
    start: tuple[int, int]  # (file index, offset) of its MainReportVersion line
    last_ts: datetime | None
    command: str | None = None
    finished: str | None = None  # CommandCompleted's time
    nodes: dict[str, NodeResult] = field(default_factory=dict)

    def invocation(self) -> DbtInvocation:
        rebuilt = self.nodes if self.command in REBUILDING_COMMANDS else {}
        return DbtInvocation(
            invocation_id=self.invocation_id,
            generated_at=self.finished or "",
            command=self.command,
            rebuilt=dict(rebuilt),
            source="dbt.log",
        )


@dataclass
class _LogScan:
    files: list[_LogFile]
    invocations: list[_LogInvocation]  # those that started in the lines read, in order
    position: LogPosition | None  # where the next tick reads from
    seen: list[str]  # finished invocations at or after `position`
    pending: list[str]  # still running
    given_up: list[str]  # never finished, no longer waited for
    from_position: bool  # read from the cursor's position (else from a file's start)


def _open_log_files(stack: ExitStack, log_dir: Path) -> list[_LogFile]:
    """dbt.log and its backups, oldest first.

    Opened newest first: a rotation between two opens then shows the same file twice
    (dropped by inode) instead of hiding one.
    """
    names = [LOG_FILE_NAME] + [f"{LOG_FILE_NAME}.{n}" for n in range(1, LOG_BACKUPS + 1)]
    files: list[_LogFile] = []
    inodes: set[int] = set()
    for name in names:
        try:
            handle = stack.enter_context((log_dir / name).open("rb"))
        except OSError:
            continue
        inode = os.fstat(handle.fileno()).st_ino
        if inode in inodes:
            continue
        inodes.add(inode)
        head = handle.read(_HEAD_BYTES)
        files.append(_LogFile(handle, inode, hashlib.sha1(head).hexdigest(), len(head)))
    files.reverse()
    return files


def _complete_lines(log_file: _LogFile) -> Iterator[tuple[int, bytes]]:
    log_file.handle.seek(log_file.start)
    offset = log_file.end = log_file.start
    for line in log_file.handle:
        if not line.endswith(b"\n"):
            return  # dbt is writing this line; the next tick reads it whole
        yield offset, line
        offset = log_file.end = offset + len(line)


def _event(line: bytes) -> _LogEvent | None:
    if not line.startswith(b"{") or not any(name in line for name in _EVENT_NAMES):
        return None
    try:
        return _LogEvent.model_validate_json(line)
    except ValueError:  # a text-format line that happens to start with "{", a torn line
        return None


def _scan_log(stack: ExitStack, log_dir: Path, cursor: SensorCursor | None) -> _LogScan | None:
    files = _open_log_files(stack, log_dir)
    if not files:
        return None
    from_position = False
    if cursor is None:
        # First tick (or a reset cursor): the current file is enough to find the latest
        # invocation, the only one taken.
        files = files[-1:]
    elif cursor.log is not None:
        found = next((i for i, f in enumerate(files) if f.holds(cursor.log)), None)
        if found is not None:
            files = files[found:]
            files[0].start = cursor.log.offset
            from_position = True
        # Else the file is gone (rotated past the last backup, logs deleted): every file
        # is read and the cursor's finish time tells what was already seen.

    invocations: dict[str, _LogInvocation] = {}
    newest: datetime | None = None
    for index, log_file in enumerate(files):
        for offset, line in _complete_lines(log_file):
            event = _event(line)
            if event is None:
                continue
            info = event.info
            if info.ts is not None and (newest is None or info.ts > newest):
                newest = info.ts
            if info.name == "MainReportVersion":
                invocations[info.invocation_id] = _LogInvocation(
                    info.invocation_id, (index, offset), info.ts
                )
                continue
            # An invocation that started before the lines read was taken by an earlier tick.
            current = invocations.get(info.invocation_id)
            if current is None or current.finished is not None:
                continue
            current.last_ts = info.ts or current.last_ts
            try:
                if info.name == "NodeFinished":
                    node = _NodeFinished.model_validate(event.data)
                    unique_id = node.node_info.unique_id
                    if (
                        unique_id.startswith(REBUILT_RESOURCE_TYPES)
                        and node.run_result.status == "success"
                    ):
                        relation = node.node_info.node_relation
                        current.nodes[_node_name(unique_id)] = _node_result(
                            unique_id,
                            node.run_result.execution_time,
                            node.run_result.adapter_response,
                            relation.relation_name if relation else None,
                        )
                elif info.name == "ResourceReport":
                    current.command = str(event.data.get("command_name") or "") or None
                elif info.name == "CommandCompleted":
                    # "dbt run", "dbt docs generate": the subcommand is the last word.
                    words = str(event.data.get("command") or "").split()
                    current.command = current.command or (words[-1] if words else None)
                    current.finished = info.ts.isoformat() if info.ts else ""
            except ValidationError:
                continue

    pending: list[_LogInvocation] = []
    given_up: list[str] = []
    for inv in invocations.values():
        if inv.finished is not None:
            continue
        if newest is not None and inv.last_ts is not None and newest - inv.last_ts > GIVE_UP_AFTER:
            given_up.append(inv.invocation_id)
        else:
            pending.append(inv)
    if pending:
        # Read again from the first unfinished invocation's start: it is taken once
        # its CommandCompleted line is written.
        index, offset = min(inv.start for inv in pending)
        position = files[index].position(offset)
        start = (index, offset)
    else:
        position = files[-1].position(files[-1].end)
        start = (len(files) - 1, files[-1].end)
    return _LogScan(
        files=files,
        invocations=list(invocations.values()),
        position=position,
        seen=[
            inv.invocation_id
            for inv in invocations.values()
            if inv.finished is not None and inv.start >= start
        ],
        pending=[inv.invocation_id for inv in pending],
        given_up=given_up,
        from_position=from_position,
    )


# --- One tick ---------------------------------------------------------------------------


def _key_name(dbt_model: str) -> str:
    return dbt_model.rstrip("/").split("/")[-1]


def _dbt_keys(target: SyncTarget) -> list[tuple[str, dg.AssetKey]]:
    """Each of the target's dbt_models with its asset key."""
    keys = dict(zip(target.dbt_models, target.dbt_asset_keys, strict=False))
    return [
        (m, keys.get(m) or dg.AssetKey([p for p in m.split("/") if p])) for m in target.dbt_models
    ]


def _materialization(
    key: dg.AssetKey, invocation: DbtInvocation, result: NodeResult
) -> dg.AssetMaterialization:
    metadata: dict[str, Any] = {
        "dbt_unique_id": dg.MetadataValue.text(result.unique_id),
        "dbt_invocation_id": dg.MetadataValue.text(invocation.invocation_id),
        "dbt_generated_at": dg.MetadataValue.text(invocation.generated_at),
        "dbt_source": dg.MetadataValue.text(invocation.source),
        "execution_time_s": dg.MetadataValue.float(result.execution_time),
    }
    if result.relation_name:
        metadata["relation_name"] = dg.MetadataValue.text(result.relation_name)
    if result.rows_affected is not None:
        metadata["rows_affected"] = dg.MetadataValue.int(result.rows_affected)
    return dg.AssetMaterialization(
        asset_key=key,
        description=f"rebuilt by dbt {invocation.command or ''} outside Dagster".replace("  ", " "),
        metadata=metadata,
    )


def _parse_cursor(raw: str | None) -> SensorCursor | None:
    if not raw:
        return None
    try:
        return SensorCursor.model_validate_json(raw)
    except ValueError:
        return None  # not a cursor this sensor wrote: read as a reset one


def _new_log_invocations(scan: _LogScan, cursor: SensorCursor | None) -> list[DbtInvocation]:
    finished = [inv.invocation() for inv in scan.invocations if inv.finished is not None]
    if cursor is None:
        # No cursor: like run_results.json before, the latest invocation triggers (the
        # latest that rebuilt something, so that `dbt run && dbt test` is not missed).
        rebuilding = [inv for inv in finished if inv.rebuilt]
        return rebuilding[-1:]
    seen = set(cursor.seen)
    if scan.from_position:
        return [inv for inv in finished if inv.invocation_id not in seen]
    # No position (a cursor of the previous version) or its file is gone: what finished
    # before the cursor's latest invocation was seen.
    return [
        inv
        for inv in finished
        if inv.invocation_id not in seen
        and inv.invocation_id != cursor.invocation_id
        and _finished_after(inv.generated_at, cursor.generated_at)
    ]


def _latest(cursor: SensorCursor | None, invocations: Sequence[DbtInvocation]) -> tuple[str, str]:
    """(generated_at, invocation_id) of the invocation that finished last."""
    best = (cursor.generated_at, cursor.invocation_id) if cursor else ("", "")
    for inv in invocations:
        at, best_at = _parse_time(inv.generated_at), _parse_time(best[0])
        if best_at is None or (at is not None and at >= best_at):
            best = (inv.generated_at, inv.invocation_id)
    return best


def evaluate_dbt_invocations(
    target_dir: Path,
    log_dir: Path,
    cursor: str | None,
    targets: Sequence[SyncTarget],
) -> dg.SensorResult | dg.SkipReason:
    """One sensor tick, separate from the decorator so it can be called directly."""
    state = _parse_cursor(cursor)
    run_results = target_dir / "run_results.json"
    with ExitStack() as stack:
        scan = _scan_log(stack, log_dir, state)
    if scan is None and not run_results.is_file():
        return dg.SkipReason(
            f"no {run_results} nor {log_dir / LOG_FILE_NAME} yet (dbt has not run)"
        )

    new = _new_log_invocations(scan, state) if scan else []
    finished_in_log = (
        [inv.invocation() for inv in scan.invocations if inv.finished is not None] if scan else []
    )

    # run_results.json: for an invocation the log does not describe (text format, no log).
    unreadable = ""
    if run_results.is_file():
        known = {inv.invocation_id for inv in scan.invocations} if scan else set()
        if state is not None:
            known |= {*state.seen, state.invocation_id}
        try:
            last = read_run_results(run_results)
        except (OSError, ValueError) as exc:
            # dbt may be writing the file right now; the next tick reads it whole.
            unreadable = f"cannot read {run_results}: {exc}"
        else:
            if last.invocation_id not in known and (
                state is None or _finished_after(last.generated_at, state.generated_at)
            ):
                new.append(last)
    if unreadable and not new:
        return dg.SkipReason(unreadable)

    new.sort(key=_time_order)
    generated_at, invocation_id = _latest(state, [*finished_in_log, *new])
    next_state = SensorCursor(
        generated_at=generated_at,
        invocation_id=invocation_id,
        seen=scan.seen if scan else [],
        log=scan.position if scan else None,
    )
    waiting = ""
    if scan and scan.pending:
        waiting += f"; waiting for dbt invocation(s) {', '.join(scan.pending)} to finish"
    if scan and scan.given_up:
        waiting += f"; gave up on dbt invocation(s) {', '.join(scan.given_up)} (never finished)"
    if not new:
        reason = f"no dbt invocation since {invocation_id or 'the sensor started'}{waiting}"
        if next_state == state:
            return dg.SkipReason(reason)
        return dg.SensorResult(skip_reason=reason, cursor=next_state.model_dump_json())

    # In the order the invocations finished, so that the last one is the latest
    # materialization; a dbt model read by two models is reported once per invocation.
    events: dict[tuple[dg.AssetKey, str], dg.AssetMaterialization] = {}
    for invocation in new:
        for target in targets:
            for dbt_model, key in _dbt_keys(target):
                result = invocation.rebuilt.get(_key_name(dbt_model))
                if result is not None:
                    events[(key, invocation.invocation_id)] = _materialization(
                        key, invocation, result
                    )

    run_requests: list[dg.RunRequest] = []
    for target in targets:
        hit = {
            _key_name(m) for inv in new for m in target.dbt_models if _key_name(m) in inv.rebuilt
        }
        latest = next(
            (
                inv
                for inv in reversed(new)
                if any(_key_name(m) in inv.rebuilt for m in target.dbt_models)
            ),
            None,
        )
        if latest is None:
            continue
        partition_key = None
        if target.partitions_def is not None:
            # An activity model syncs its latest complete window; older windows are
            # backfilled by hand from the UI.
            partition_key = target.partitions_def.get_last_partition_key()
            if partition_key is None:
                continue
        # One sync per model per tick: it reads the tables as every invocation left them.
        run_requests.append(
            dg.RunRequest(
                job_name=target.job_name,
                run_key=f"dbt:{latest.invocation_id}:{target.model}",
                partition_key=partition_key,
                tags={
                    "sf_activation/trigger": "dbt",
                    "dbt/invocation_id": latest.invocation_id,
                    "dbt/models": ",".join(sorted(hit)),
                },
            )
        )
    asset_events = list(events.values())
    if not run_requests:
        rebuilt_count = sum(len(inv.rebuilt) for inv in new)
        return dg.SensorResult(
            skip_reason=(
                f"dbt invocation(s) {', '.join(inv.invocation_id for inv in new)} rebuilt "
                f"{rebuilt_count} node(s), none read by a model{waiting}"
            ),
            asset_events=asset_events,
            cursor=next_state.model_dump_json(),
        )
    return dg.SensorResult(
        run_requests=run_requests, asset_events=asset_events, cursor=next_state.model_dump_json()
    )


def build_dbt_sensor(
    targets: Sequence[SyncTarget],
    jobs: Sequence[AssetJob],
    target_dir: str | None = None,
    log_dir: str | None = None,
) -> dg.SensorDefinition:
    """The sensor over SF_ACTIVATION_DBT_TARGET_DIR and dbt's log (read at every tick)."""
    env_dir = os.environ.get(DBT_TARGET_DIR_VARIABLE)
    default_status = (
        dg.DefaultSensorStatus.RUNNING
        if (target_dir or env_dir)
        else dg.DefaultSensorStatus.STOPPED
    )

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=30,
        default_status=default_status,
        description=(
            "Reads dbt's log (dbt.log, JSON format) and run_results.json in "
            "SF_ACTIVATION_DBT_TARGET_DIR and syncs the models whose dbt_models were "
            "rebuilt, once per dbt invocation."
        ),
    )
    def dbt_run_results_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        directory = target_dir or os.environ.get(DBT_TARGET_DIR_VARIABLE)
        if not directory:
            return dg.SkipReason(f"{DBT_TARGET_DIR_VARIABLE} is not set")
        logs = (
            log_dir or os.environ.get(DBT_LOG_PATH_VARIABLE) or str(Path(directory).parent / "logs")
        )
        return evaluate_dbt_invocations(Path(directory), Path(logs), context.cursor, targets)

    return dbt_run_results_sensor
