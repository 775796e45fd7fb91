"""Test hook: die by SIGKILL at a named point of a sync run, to prove a rerun converges.

Set ``SF_ACTIVATION_TEST_KILL_AT=<point>:<n>`` and the process kills itself (SIGKILL, no
cleanup, no ``finally``) the n-th time (1-based) execution reaches ``kill_point(<point>)``.
``SF_ACTIVATION_TEST_RAISE_AT=<point>:<n>`` raises ``RuntimeError`` there instead: an
error in the middle of a send (a warehouse that fails, a bug), whose ``finally`` paths run.
Unset — always, outside the reliability tests — ``kill_point`` is one global lookup and a
comparison, so the calls can sit on the hot path.

Points (where they are called):

- ``plan_batch``               sync.py: each warehouse batch read while planning
- ``before_send``              sync.py: each batch handed to the Salesforce client
- ``after_send_before_commit`` sync.py: outcomes received, before their state commit
- ``after_commit``             sync.py: right after a state commit
- ``delete_before_commit``     sync.py: mirror deletes confirmed, before their commit
- ``bulk_job_open``            salesforce/bulk.py: job created, CSV not uploaded yet
- ``bulk_job_recorded``        salesforce/bulk.py: job recorded in the ledger, not uploaded
- ``ledger_recorded``          ledger.py: a ledger entry written, its call not yet sent
- ``ledger_resolved``          sync.py: a ledger entry's outcomes committed, entry not removed
- ``bulk_job_polling``         salesforce/bulk.py: each poll of a job in progress
- ``rejects_write``            rejects.py: each rejected row spooled
- ``rejects_publish``          rejects.py: before the reject file is uploaded
- ``state_compact``            state.py: new snapshot written, commit files not yet removed
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "SF_ACTIVATION_TEST_KILL_AT"
RAISE_VAR = "SF_ACTIVATION_TEST_RAISE_AT"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.partition(":")
    return point.strip(), int(count or "1")


_TARGET = _parse(os.environ.get(ENV_VAR))
_RAISE = _parse(os.environ.get(RAISE_VAR))
_seen = 0


def kill_point(name: str) -> None:
    """SIGKILL this process (or raise) at the configured occurrence of `name` (a no-op
    otherwise)."""
    if _TARGET is not None and _TARGET[0] == name:
        global _seen
        _seen += 1
        if _seen >= _TARGET[1]:
            os.kill(os.getpid(), signal.SIGKILL)
    elif _RAISE is not None and _RAISE[0] == name:
        _seen += 1
        if _seen == _RAISE[1]:
            raise RuntimeError(f"test hook: error at {name} #{_seen}")
