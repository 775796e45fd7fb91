"""SIGINT and SIGTERM during a sync: stop sending, let the calls in flight finish, commit.

Ctrl-C, Dagster's Terminate, Kubernetes and most schedulers stop a process with SIGTERM
or SIGINT. Raising at once would leave calls that Salesforce is applying with no one to
record their outcome (an insert rerun would then create them again). So the first signal
only asks the run to stop: no new call or Bulk job starts, the calls in flight are
answered and committed, and the run then ends with `SyncInterrupted`. A second signal
raises KeyboardInterrupt at once, skipping the rest of the run (rejects, compaction); the
send path's `finally` blocks still wait for the calls in flight and commit what they
confirmed, because leaving them unrecorded is what would create duplicates.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sf_activation.salesforce.outcomes import StopSignal

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SyncInterrupted(Exception):
    """The run was stopped by a signal after committing what Salesforce confirmed."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@contextmanager
def stop_on_signals(stop: StopSignal, model: str) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM set `stop` (the signals received are appended to the
    yielded list). Outside the main thread signals cannot be caught: nothing is installed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            _restore(previous)
            raise KeyboardInterrupt(f"{name} again: stopping at once")
        stop.set(f"interrupted by {name}", "interrupted")
        print(
            f"sf-activation: {name}: {model}: stopping — no new calls; waiting for the calls "
            "in flight and saving what Salesforce confirmed",
            file=sys.stderr,
            flush=True,
        )

    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield received
    finally:
        _restore(previous)


def _restore(previous: dict[int, object]) -> None:
    for s, handler in previous.items():
        try:
            signal.signal(s, handler)  # type: ignore[arg-type]
        except (TypeError, ValueError):  # a handler set from C; leave the default
            signal.signal(s, signal.SIG_DFL)
