"""A per-model lease: at most one run of a model sends to Salesforce at a time.

Dagster's per-model job and pool keep the runs *it* launches apart, but a model can also
be synced from the CLI, a second Dagster deployment or a retried run on another worker.
Two runs of one model sending at once would both diff against the same state and send
the same changes twice, then race on the state commits. So the lease lives beside the
state, in the same store (``{state_url}/{model}/``), and whatever starts a run takes it.

Two stores:

- **Local directory** — ``lease.lock`` held with ``flock(LOCK_EX | LOCK_NB)`` on a file
  descriptor kept open for the lease's life. The kernel drops the lock when the holder
  dies, even by SIGKILL, so a dead holder's lease is free at once: no expiry to wait
  for. ``lease.json`` beside it names the holder (for messages), and is removed on
  release, so a ``lease.json`` found by whoever gets the lock next means the previous
  holder died holding it: ``acquire()`` returns it, and the caller reconciles what that
  run left.
- **S3** — ``lease.json`` created with a conditional write (``If-None-Match: *``), so only
  one creator wins. The holder rewrites it every ``ttl_s / 3`` (``If-Match`` its own
  ETag). A lease not rewritten for ``ttl_s`` has expired and may be taken over, again
  with ``If-Match`` (the ETag read), so of two takers only one wins. "Not rewritten for
  ``ttl_s``" is measured on S3's own clock (its ``Date`` header against the object's
  ``LastModified``), never this machine's: a worker whose clock is an hour off must
  neither steal a live lease nor wait an hour for a dead one.

What moto (5.2.5, the test server) does, checked against its HTTP server: it enforces
``IfNoneMatch="*"`` on PutObject (412 PreconditionFailed when the key exists), ``IfMatch``
on PutObject (412 on a wrong ETag, 404 NoSuchKey when the key is gone) and ``IfMatch``
on DeleteObject (412 on a wrong ETag, 204 on the right one), as AWS S3 does. So the
tests run the same code path as real S3; the get-compare-delete fallback in
``_S3Store.release`` is only for S3-compatible stores that reject a conditional delete
(it has a small window in which a takeover can be deleted, hence only a fallback).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sf_activation.models import MODEL_NAME_RE

log = logging.getLogger(__name__)

LEASE_NAME = "lease.json"
LOCK_NAME = "lease.lock"
WAIT_ENV = "SF_ACTIVATION_LEASE_WAIT_S"  # read by the caller; named in LeaseHeld's message
OBJECT_WAIT_ENV = "SF_ACTIVATION_OBJECT_WAIT_S"  # the same for ObjectBusy
# S3's Date and LastModified headers are whole seconds, so an age computed from them can
# be up to one second more than the real one. Expiry allows for it: a lease is taken over
# only once it is certainly older than its ttl.
_S3_CLOCK_GRANULARITY_S = 1.0
# Races on a conditional write (released, re-created, taken) are retried this many times
# within one acquire attempt before it counts as "held".
_S3_RACE_ATTEMPTS = 5
# How long a run blocked on the local lock waits for the holder to write its name.
_HOLDER_WRITE_GRACE_S = 1.0


class LeaseInfo(BaseModel):
    """What the holder writes in the store (JSON), and what a waiter reads back."""

    run_id: str
    host: str  # socket.gethostname()
    pid: int
    acquired_at: str  # ISO-8601 UTC of the holder's clock (display only)
    heartbeat_at: str  # ISO-8601 UTC (display only)
    # The holder's ttl, so a taker with a shorter one does not take a live lease over.
    # Optional: a lease written without it is judged by the taker's ttl.
    ttl_s: float | None = None


class LeaseHeld(Exception):
    """Another live run holds the lease. ``str()`` is one line naming it and the way out."""

    def __init__(
        self, model: str, holder: LeaseInfo | None, *, wait_s: float, waited_s: float
    ) -> None:
        self.model = model
        self.holder = holder
        self.wait_s = wait_s
        self.waited_s = waited_s
        super().__init__(self._message())

    def _message(self) -> str:
        if self.holder is None:
            who = "another run (its lease names no holder yet)"
        else:
            h = self.holder
            who = f"run {h.run_id} (host {h.host}, pid {h.pid}) since {_display(h.acquired_at)}"
        waited = f"; still held after waiting {self.waited_s:.0f} s" if self.wait_s > 0 else ""
        hint = (
            f"{WAIT_ENV} waits up to N s, now {self.wait_s:g}"
            if self.wait_s > 0
            else f"{WAIT_ENV}=N waits up to N s"
        )
        msg = (
            f"model {self.model} is being synced by {who}{waited}; "
            f"wait for it to finish, or retry later ({hint})"
        )
        return " ".join(msg.split())  # one line, whatever a run id holds

    def __reduce__(self):  # picklable across processes (Dagster, multiprocessing)
        return (
            _rebuild_lease_held,
            (self.model, self.holder, self.wait_s, self.waited_s),
        )


class ObjectBusy(LeaseHeld):
    """Another model's run is sending to the same Salesforce object (the object's lease)."""

    def __init__(
        self,
        model: str,
        object_name: str,
        holder: LeaseInfo | None,
        *,
        wait_s: float,
        waited_s: float,
    ) -> None:
        self.object_name = object_name
        super().__init__(model, holder, wait_s=wait_s, waited_s=waited_s)

    def _message(self) -> str:
        who = f"run {self.holder.run_id} (pid {self.holder.pid})" if self.holder else "another run"
        msg = (
            f"model {self.model}: {who} is still sending to {self.object_name} after "
            f"{self.waited_s:.0f} s; models writing one object send one at a time. Retry "
            f"later, or wait longer with {OBJECT_WAIT_ENV}=N (now {self.wait_s:g})"
        )
        return " ".join(msg.split())

    def __reduce__(self):
        return (
            _rebuild_object_busy,
            (self.model, self.object_name, self.holder, self.wait_s, self.waited_s),
        )


def _rebuild_object_busy(
    model: str, object_name: str, holder: LeaseInfo | None, wait_s: float, waited_s: float
) -> ObjectBusy:
    return ObjectBusy(model, object_name, holder, wait_s=wait_s, waited_s=waited_s)


def _rebuild_lease_held(
    model: str, holder: LeaseInfo | None, wait_s: float, waited_s: float
) -> LeaseHeld:
    return LeaseHeld(model, holder, wait_s=wait_s, waited_s=waited_s)


class LeaseError(Exception):
    """The lease store cannot be read or written (names the store URL and the way out)."""


def _utcnow() -> dt.datetime:
    """This machine's clock: for the display timestamps in LeaseInfo only."""
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    # Microseconds make every write's body, hence its ETag, differ from the last one.
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _display(stamp: str) -> str:
    """``2026-12-02T07:00:00.123456Z`` → ``2026-12-02T07:00:00Z`` for messages."""
    head, dot, _ = stamp.partition(".")
    return f"{head}Z" if dot else stamp


def _parse_info(raw: bytes | str) -> LeaseInfo | None:
    try:
        return LeaseInfo.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("lease file is not a lease (%s); treating its holder as unknown", exc)
        return None


# ---------------------------------------------------------------------- local store


class _LocalStore:
    """``{root}/{model}/lease.lock`` (flock) and ``lease.json`` (who holds it)."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.lock_path = root / LOCK_NAME
        self.info_path = root / LEASE_NAME
        self._fd: int | None = None

    @property
    def url(self) -> str:
        return self.dir.as_posix()

    def _error(self, what: str, exc: BaseException) -> LeaseError:
        return LeaseError(
            f"cannot {what} the lease in {self.url}: {exc}; check that the state directory "
            "(SF_ACTIVATION_STATE_URL) exists or can be created and is writable by this user"
        )

    def try_acquire(self, info: LeaseInfo, ttl_s: float) -> tuple[bool, LeaseInfo | None]:
        """(True, dead holder or None) when taken; (False, holder or None) when held."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Python opens descriptors non-inheritable, so a child process of the holder
            # does not keep the lock alive after the holder dies.
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._error("open", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False, self._read_holder()
        except OSError as exc:
            os.close(fd)
            raise self._error("lock", exc) from exc
        # Locked. Release removes lease.json before unlocking, so one still here was left
        # by a holder that died with the lock.
        try:
            previous = self._read()
            self._write(info)
        except BaseException:
            os.close(fd)  # closing drops the lock
            raise
        self._fd = fd
        return True, previous

    def renew(self, info: LeaseInfo) -> bool:
        """Refresh the holder's heartbeat; False when the lock file was replaced.

        The flock itself needs no renewal. The only way to lose it is the lock file
        being removed (say the state directory was deleted) and another run creating a
        new one: then our descriptor locks a file nobody else opens.
        """
        if self._fd is None:
            return False
        try:
            ours = os.fstat(self._fd)
            on_disk = os.stat(self.lock_path)
        except FileNotFoundError:
            return False
        if (ours.st_dev, ours.st_ino) != (on_disk.st_dev, on_disk.st_ino):
            return False
        try:
            self._write(info)
        except LeaseError as exc:  # display only: the lock is still ours
            log.warning("%s", exc)
        return True

    def release(self, info: LeaseInfo) -> None:
        if self._fd is None:
            return
        try:
            if self._read() == info:
                self.info_path.unlink(missing_ok=True)
        except (LeaseError, OSError) as exc:
            log.warning("could not remove %s: %s", self.info_path, exc)
        finally:
            fd, self._fd = self._fd, None
            # The lock file stays: removing it would let a waiter lock a new file while a
            # third process still holds the old one.
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_holder(self) -> LeaseInfo | None:
        """The live holder, allowing it the moment between its flock and its write.

        A holder locks first and writes ``lease.json`` just after, so a run blocked in
        that gap would find no holder to name; a short wait lets the message name it.
        """
        deadline = time.monotonic() + _HOLDER_WRITE_GRACE_S
        while (holder := self._read()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return holder

    def _read(self) -> LeaseInfo | None:
        try:
            raw = self.info_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("read", exc) from exc
        return _parse_info(raw)

    def _write(self, info: LeaseInfo) -> None:
        """Atomically (temp file, fsync, rename), so a reader never sees half a lease."""
        tmp = self.dir / f".{LEASE_NAME}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(info.model_dump_json().encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.info_path)
        except OSError as exc:
            raise self._error("write", exc) from exc
        finally:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------- S3 store


def _s3_client():
    """boto3 client reading the usual AWS_* variables (AWS_ENDPOINT_URL too), as
    ``state._boto3_s3`` does, with short timeouts: a heartbeat stuck for boto3's default
    minute per try could outlive the lease it is renewing."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=10,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.client("s3", config=config)


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status


def _is_precondition(exc: Exception) -> bool:
    """412 (the condition failed) or 409 (a concurrent conditional write won)."""
    code, status = _error_code(exc)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


def _is_missing(exc: Exception) -> bool:
    code, status = _error_code(exc)
    return code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket")


class _S3Store:
    """``s3://bucket/prefix/{model}/lease.json`` with conditional writes."""

    def __init__(self, bucket: str, key: str) -> None:
        self.bucket = bucket
        self.key = key
        self._etag: str | None = None
        self._client_obj: Any = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def _client(self) -> Any:
        if self._client_obj is None:
            self._client_obj = _s3_client()
        return self._client_obj

    def _error(self, what: str, exc: BaseException) -> LeaseError:
        return LeaseError(
            f"cannot {what} the lease {self.url}: {exc}; check that the bucket in "
            "SF_ACTIVATION_STATE_URL exists and that this worker's AWS credentials may "
            "get, put and delete objects under it"
        )

    def _call(self, what: str, op: str, **kwargs: Any) -> dict:
        """One S3 call; ClientErrors other than "missing"/"precondition" become LeaseError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(), op)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            if _is_precondition(exc) or _is_missing(exc):
                raise
            raise self._error(what, exc) from exc
        except BotoCoreError as exc:
            raise self._error(what, exc) from exc

    def _put(self, info: LeaseInfo, **condition: str) -> str:
        body = info.model_dump_json().encode()
        response = self._call(
            "write", "put_object", Body=body, ContentType="application/json", **condition
        )
        return response["ETag"]

    def _read(self) -> tuple[LeaseInfo | None, str, float | None] | None:
        """(holder, ETag, age in seconds by S3's clock or None) — or None if no lease."""
        from botocore.exceptions import ClientError

        try:
            response = self._call("read", "get_object")
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._error("read", exc) from exc
        raw = response["Body"].read()
        holder = _parse_info(raw)
        # S3's clock: the Date of this very response against the object's LastModified.
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        modified = response.get("LastModified")
        age: float | None = None
        if date and modified is not None:
            try:
                s3_now = email.utils.parsedate_to_datetime(date)
                age = (s3_now - modified).total_seconds()
            except (TypeError, ValueError):
                age = None
        if age is None:
            log.warning("S3 gave no usable Date/LastModified for %s: not expiring it", self.url)
        return holder, response["ETag"], age

    def try_acquire(self, info: LeaseInfo, ttl_s: float) -> tuple[bool, LeaseInfo | None]:
        from botocore.exceptions import ClientError

        holder: LeaseInfo | None = None
        for attempt in range(_S3_RACE_ATTEMPTS):
            if attempt:
                time.sleep(0.05 * attempt)  # a 409 means another write is in progress
            try:
                self._etag = self._put(info, IfNoneMatch="*")
                return True, None
            except ClientError as exc:
                if not _is_precondition(exc):
                    raise self._error("create", exc) from exc
            read = self._read()
            if read is None:
                continue  # released between our create and our read: try again
            holder, etag, age = read
            if holder == info:
                # Our own create, whose response was lost and retried by botocore.
                self._etag = etag
                return True, None
            limit = max(ttl_s, (holder.ttl_s if holder and holder.ttl_s else 0.0))
            if age is None or age <= limit + _S3_CLOCK_GRANULARITY_S:
                return False, holder
            try:
                self._etag = self._put(info, IfMatch=etag)
            except ClientError as exc:
                if _is_precondition(exc) or _is_missing(exc):
                    continue  # renewed, released or taken by someone else meanwhile
                raise self._error("take over", exc) from exc
            log.warning(
                "took over the expired lease %s (last renewed %.0f s ago by S3's clock)",
                self.url,
                age,
            )
            return True, holder
        return False, holder

    def renew(self, info: LeaseInfo) -> bool:
        """Rewrite the lease if it is still ours (same ETag); False if it was taken."""
        from botocore.exceptions import ClientError

        if self._etag is None:
            return False
        try:
            self._etag = self._put(info, IfMatch=self._etag)
            return True
        except ClientError as exc:
            if _is_missing(exc):
                return False
            if not _is_precondition(exc):
                raise self._error("renew", exc) from exc
        # Precondition failed: taken over, or our own write whose response was lost and
        # retried (then the stored body is exactly what we wrote).
        read = self._read()
        if read is not None and read[0] == info:
            self._etag = read[1]
            return True
        return False

    def release(self, info: LeaseInfo) -> None:
        from botocore.exceptions import ClientError

        etag, self._etag = self._etag, None
        if etag is None:
            return
        try:
            self._call("release", "delete_object", IfMatch=etag)
            return
        except ClientError:
            return  # precondition failed (no longer ours) or already gone: nothing to remove
        except LeaseError as exc:
            cause = exc.__cause__
            code, status = _error_code(cause) if isinstance(cause, ClientError) else ("", 0)
            if status not in (400, 501) and code not in ("NotImplemented", "InvalidArgument"):
                raise
        # A store that rejects conditional deletes: compare, then delete. Another run can
        # take the lease over in between only if ours had expired, i.e. it was lost.
        read = self._read()
        if read is not None and read[1] == etag:
            self._call("release", "delete_object")


# ------------------------------------------------------------------------ the lease


class ModelLease:
    """The lease on one model's sync. Take it before sending, release it after.

    Usable as a context manager (``with ModelLease(...) as lease:``); then the previous
    holder that was taken over, if any, is ``lease.taken_over``.
    """

    def __init__(
        self,
        state_url: str,
        model: str,
        run_id: str,
        *,
        ttl_s: float = 120.0,
        wait_s: float = 0.0,
        poll_s: float = 1.0,
        on_wait: Callable[[LeaseInfo | None, float], None] | None = None,
    ) -> None:
        if not MODEL_NAME_RE.match(model):
            raise LeaseError(f"model name {model!r} is not a safe identifier")
        if ttl_s <= 0 or poll_s <= 0 or wait_s < 0:
            raise ValueError("ttl_s and poll_s must be > 0, wait_s >= 0")
        self.state_url = state_url
        self.model = model
        self.run_id = run_id
        self.ttl_s = float(ttl_s)
        self.wait_s = float(wait_s)
        self.poll_s = float(poll_s)
        self.on_wait = on_wait
        self.taken_over: LeaseInfo | None = None
        self.info: LeaseInfo | None = None  # ours, while held
        self._store: _LocalStore | _S3Store = _make_store(state_url, model)
        self._lock = threading.Lock()  # the heartbeat thread and release() share the store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    @property
    def url(self) -> str:
        """Where the lease lives, for messages."""
        return self._store.url

    @property
    def held(self) -> bool:
        return self.info is not None

    @property
    def lost(self) -> bool:
        """True once a heartbeat found the lease taken by someone else, or could not renew
        it for longer than ttl_s (then another run may have taken it over): stop sending."""
        return self._lost

    def acquire(self) -> LeaseInfo | None:
        """Take the lease, waiting up to wait_s for a live holder (calling
        on_wait(holder, waited_s) each poll).

        Returns the LeaseInfo of a previous holder whose lease had expired (S3) or who
        died holding it (local) and was taken over: the caller then reconciles what that
        run left. Otherwise None. Raises LeaseHeld when still held after wait_s, and
        LeaseError when the store fails.
        """
        if self.info is not None:
            raise RuntimeError(f"lease on model {self.model} is already held by this object")
        start = time.monotonic()
        while True:
            now = _iso(_utcnow())
            info = LeaseInfo(
                run_id=self.run_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                acquired_at=now,
                heartbeat_at=now,
                ttl_s=self.ttl_s,
            )
            taken, other = self._store.try_acquire(info, self.ttl_s)
            if taken:
                self.info = info
                self.taken_over = other
                self._lost = False
                self._start_heartbeat()
                return other
            waited = time.monotonic() - start
            if waited >= self.wait_s:
                raise LeaseHeld(self.model, other, wait_s=self.wait_s, waited_s=waited)
            if self.on_wait is not None:
                self.on_wait(other, waited)
            time.sleep(max(0.0, min(self.poll_s, self.wait_s - waited)))

    def release(self) -> None:
        """Give the lease up; idempotent, and removes it only while it is still ours."""
        self._stop_heartbeat()
        with self._lock:
            info, self.info = self.info, None
            if info is None:
                return
            try:
                self._store.release(info)
            except Exception as exc:  # raising here would hide the run's own outcome
                log.warning(
                    "could not release the lease %s (%s); it expires %g s after its last renewal",
                    self.url,
                    exc,
                    self.ttl_s,
                )

    def __enter__(self) -> ModelLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------ heartbeat

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat,
            args=(self._stop,),
            name=f"lease-heartbeat-{self.model}",
            daemon=True,  # never keeps a finished process alive
        )
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew every ttl_s / 3, so two renewals can fail before the lease could expire."""
        interval = self.ttl_s / 3
        last_ok = time.monotonic()  # durations on this machine: monotonic is right here
        while not stop.wait(interval):
            try:
                with self._lock:
                    if stop.is_set() or self.info is None:
                        return
                    info = self.info.model_copy(update={"heartbeat_at": _iso(_utcnow())})
                    still_ours = self._store.renew(info)
                    if still_ours:
                        self.info = info
            except Exception as exc:  # a failed renewal is retried at the next beat
                if time.monotonic() - last_ok > self.ttl_s:
                    log.error("lease %s not renewed for %g s: %s", self.url, self.ttl_s, exc)
                    self._lost = True
                    return
                log.warning("could not renew the lease %s: %s", self.url, exc)
                continue
            if not still_ours:
                log.error("lease %s was taken by another run", self.url)
                self._lost = True
                return
            last_ok = time.monotonic()


def _make_store(state_url: str, model: str) -> _LocalStore | _S3Store:
    """Parse the state URL as state.StateStore does: a directory or s3://bucket/prefix."""
    if state_url.startswith("s3://"):
        rest = state_url[len("s3://") :].strip("/")
        if not rest:
            raise LeaseError(f"state URL {state_url!r} names no bucket")
        bucket, _, prefix = rest.partition("/")
        key = "/".join(p for p in (prefix.strip("/"), model, LEASE_NAME) if p)
        return _S3Store(bucket, key)
    if "://" in state_url and not state_url.startswith("file://"):
        raise LeaseError(f"state URL {state_url!r}: use a directory or s3://bucket/prefix")
    return _LocalStore(Path(state_url.removeprefix("file://")).absolute() / model)


__all__ = ["LeaseError", "LeaseHeld", "LeaseInfo", "ModelLease"]
