"""Row locks like an org's: a write locks the parents it looks up, for the whole request.

Salesforce locks a record's parent while a child that looks it up is inserted or
updated ("Record-Level Locking" in the Large Data Volumes guide: "when you update child
records, the system locks the parent and the child records"; "Organize Data to Minimize
Lock Contention" in the Bulk API 2.0 guide). The lock lasts until the transaction ends,
so two requests that write children of one parent at the same time collide; the one that
cannot get the lock fails those records with UNABLE_TO_LOCK_ROW.

The emulator models that with `--faults parent_locks=1` (off by default, so existing
runs keep their timing):

- Every write request (REST, sObject Collections) runs in a `LockScope`. `Org` calls the
  `ParentLocks` hook for each record it saves; the hook locks the record's parents (its
  lookups to other records, not users) and, for updates and deletes, the record itself.
  A record whose parent another in-flight request holds fails with UNABLE_TO_LOCK_ROW;
  its other records go ahead (allOrNone rolls them back as usual).
- A request holds its locks for its processing time: `lock_ms`, else `--latency-ms`,
  else 50 ms. With parent locks on, the latency is spent after the write (the answer is
  held back until the processing time has passed and the locks are released) rather
  than before it, so a client sees the same duration and overlapping requests overlap
  in the org too.
- A real org waits up to about 10 s for a lock before failing (Salesforce Help, "Use
  Related Record Writeback ... to reduce row lock errors": batches that "can't acquire
  the lock within 10 seconds" fail). Emulated requests are far shorter than a real
  org's, so by default (`lock_wait_ms=0`) a request that finds a row held fails at
  once: what a real org does when contention outlasts its wait. With `lock_wait_ms=N`
  it queues behind holders that finish within N ms instead and then takes one more
  processing time: choose N as about ten processing times for a real org's ratio.
- Bulk API 2.0 jobs lock each 10,000-row chunk's parents the same way; records that hit
  a lock are retried inside the job (up to `BULK_LOCK_RETRIES` times, one processing time
  apart) and only then reported as failed, as Salesforce's internal retries do.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sf_activation.emulator.schema import FieldInfo, ObjectSchema, RecordError

DEFAULT_HOLD_S = 0.05
BULK_LOCK_RETRIES = 10
# A lock left behind by a request that never finished (a bug, a killed worker) frees
# itself after this long; normal requests release theirs when they answer.
STALE_AFTER_S = 60.0
# Lookups that do not lock a parent record: users, queues and calendars are not rows a
# data load contends on, and the audit fields are the org's own.
_UNLOCKED_TARGETS = frozenset({"User", "Group", "Calendar", "Profile", "UserRole", "RecordType"})
_UNLOCKED_FIELDS = frozenset({"OwnerId", "CreatedById", "LastModifiedById", "RecordTypeId"})


class RowLocks:
    """Which requests hold (or queue for) which record ids. Thread-safe: Bulk runs in threads.

    Time is the requests' processing time, not the wall clock of the event loop: a scope
    holds its rows until its `ends_at`, and one that waited for a row ends a processing
    time after the row came free (`ends_at` moves), as a transaction that waited for a
    lock finishes its work after getting it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, list[LockScope]] = {}  # id -> scopes holding or queued for it
        self._clock = clock
        self.collisions = 0  # records refused so far (for tests and benchmarks)

    def try_lock(self, holder: LockScope, ids: Iterable[str], wait_s: float = 0.0) -> str | None:
        """Lock every id for holder, or none: returns the id that could not be had in time.

        A row another scope holds is free once that scope's processing time is over.
        With `wait_s`, holder queues behind rows that come free within that many seconds.
        """
        now = self._clock()
        wanted = list(ids)
        with self._mutex:
            blocked_until = 0.0
            blocker: str | None = None
            for rid in wanted:
                for other in self._held.get(rid, ()):
                    if other is holder or other.released or now - other.started > STALE_AFTER_S:
                        continue
                    if other.ends_at > blocked_until:
                        blocked_until, blocker = other.ends_at, rid
            if blocker is not None and blocked_until > now:
                if blocked_until - now > wait_s:
                    self.collisions += 1
                    return blocker
                # Waited for the lock: the rest of the work happens after it came free.
                holder.ends_at = max(holder.ends_at, blocked_until + holder.hold_s)
            for rid in wanted:
                scopes = self._held.setdefault(rid, [])
                if holder not in scopes:
                    scopes.append(holder)
                    holder.ids.append(rid)
        return None

    def release(self, holder: LockScope) -> None:
        with self._mutex:
            for rid in holder.ids:
                scopes = self._held.get(rid)
                if scopes is not None and holder in scopes:
                    scopes.remove(holder)
                    if not scopes:
                        del self._held[rid]
            holder.ids.clear()
            holder.released = True

    def held(self) -> int:
        with self._mutex:
            return len(self._held)

    def clear(self) -> None:
        with self._mutex:
            self._held.clear()
            self.collisions = 0


class LockScope:
    """The locks of one request (or one Bulk chunk): taken while it writes, released at end."""

    __slots__ = ("table", "started", "hold_s", "ends_at", "ids", "released")

    def __init__(self, table: RowLocks, hold_s: float) -> None:
        self.table = table
        self.started = time.monotonic()
        self.hold_s = hold_s
        self.ends_at = self.started + hold_s  # moves later when it waits for a row
        self.ids: list[str] = []
        self.released = False

    def remaining(self, latency_s: float = 0.0) -> float:
        """Seconds until this request's processing time is over."""
        end = self.started + latency_s
        if self.ids:
            end = max(end, self.ends_at)
        return end - time.monotonic()

    def release(self) -> None:
        if not self.released:
            self.table.release(self)


_current: ContextVar[LockScope | None] = ContextVar("sf_emulator_lock_scope", default=None)


class ParentLocks:
    """`Org.row_locks` hook: lock a saved record's parents (and itself) for the request."""

    def __init__(
        self, hold_s: Callable[[], float], wait_s: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.table = RowLocks()
        # Read per request/record, so live fault changes apply.
        self.hold_s = hold_s
        self.wait_s = wait_s
        self._lockable: dict[ObjectSchema, tuple[FieldInfo, ...]] = {}

    def _fields(self, schema: ObjectSchema) -> tuple[FieldInfo, ...]:
        fields = self._lockable.get(schema)
        if fields is None:
            fields = tuple(
                f
                for f in schema.fields.values()
                if f.type == "reference"
                and f.name not in _UNLOCKED_FIELDS
                and not set(f.reference_to) <= _UNLOCKED_TARGETS
            )
            self._lockable[schema] = fields
        return fields

    def __call__(self, schema: ObjectSchema, rid: str | None, values: dict[str, Any]) -> None:
        scope = _current.get()
        if scope is None:
            return  # a write outside any request (seeding, restore): nothing to contend with
        keys = [rid] if rid else []
        for f in self._fields(schema):
            parent = values.get(f.name)
            if parent:
                keys.append(parent)
        if not keys:
            return
        blocked = scope.table.try_lock(scope, keys, self.wait_s())
        if blocked is not None:
            # The message a real org gives (UNABLE_TO_LOCK_ROW names the contended row).
            raise RecordError(
                "UNABLE_TO_LOCK_ROW",
                f"unable to obtain exclusive access to this record or 1 records: {blocked}",
            )


def lock_hook(org: Any) -> ParentLocks | None:
    hook = getattr(org, "row_locks", None)
    return hook if isinstance(hook, ParentLocks) else None


def install(
    org: Any,
    enabled: bool,
    hold_s: Callable[[], float],
    wait_s: Callable[[], float] = lambda: 0.0,
) -> None:
    """Turn parent locks on or off on an org (`--faults parent_locks=1`, live changes)."""
    current = lock_hook(org)
    if enabled and current is None:
        org.row_locks = ParentLocks(hold_s, wait_s)
    elif not enabled:
        org.row_locks = None


def hold_seconds(lock_ms: float, latency_s: float) -> float:
    """A request's processing time: `lock_ms`, else the latency, else DEFAULT_HOLD_S."""
    if lock_ms > 0:
        return lock_ms / 1000.0
    return latency_s if latency_s > 0 else DEFAULT_HOLD_S


async def run_locked(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    hook: ParentLocks,
    latency_s: float,
) -> None:
    """Run one request in its own LockScope; answer once its processing time is over.

    The answer's first message waits until `latency_s` (and, if the request took locks,
    the hold time) has passed since the request began; the locks go just before it.
    """
    lock_scope = LockScope(hook.table, hook.hold_s())
    token = _current.set(lock_scope)

    async def send_when_done(message: Message) -> None:
        if message["type"] == "http.response.start":
            remaining = lock_scope.remaining(latency_s)
            if remaining > 0:
                await asyncio.sleep(remaining)
            lock_scope.release()
        await send(message)

    try:
        await app(scope, receive, send_when_done)
    finally:
        _current.reset(token)
        lock_scope.release()


def _lock_failed(result: dict[str, Any]) -> bool:
    errors = result.get("errors") or ()
    return not result.get("success") and any(
        e.get("statusCode") == "UNABLE_TO_LOCK_ROW" for e in errors
    )


def apply_in_bulk(
    org: Any,
    apply: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    records: list[dict[str, Any]],
    cancel: threading.Event,
) -> list[dict[str, Any]]:
    """One Bulk chunk's write: locks held for its processing time, lock failures retried.

    Without parent locks this is just `apply(records)`.
    """
    hook = lock_hook(org)
    if hook is None:
        return apply(records)
    lock_scope = LockScope(hook.table, hook.hold_s())
    token = _current.set(lock_scope)
    try:
        results = apply(records)
        for _ in range(BULK_LOCK_RETRIES):
            locked = [i for i, r in enumerate(results) if _lock_failed(r)]
            # Salesforce retries locked records inside the job before failing them.
            if not locked or cancel.wait(max(lock_scope.hold_s, 0.01)):
                break
            for i, result in zip(locked, apply([records[i] for i in locked]), strict=True):
                results[i] = result
        remaining = lock_scope.remaining()
        if remaining > 0:
            cancel.wait(remaining)
        return results
    finally:
        _current.reset(token)
        lock_scope.release()
