"""Errors a user can act on become a one-line `dg.Failure` instead of a stack trace."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg


@contextmanager
def user_errors_as_failures() -> Iterator[None]:
    """Re-raise errors a user can act on as a one-line Failure; anything else as it is."""
    try:
        yield
    except Exception as exc:
        failure = _as_failure(exc)
        if failure is None:
            raise
        raise failure from exc


def _as_failure(exc: Exception) -> dg.Failure | None:
    """Errors a user can act on become a one-line Failure instead of a traceback."""
    from sf_activation.diff import DeleteRateExceeded
    from sf_activation.interrupts import SyncInterrupted
    from sf_activation.lease import LeaseError, LeaseHeld
    from sf_activation.models import ModelError
    from sf_activation.rejects import RejectsError
    from sf_activation.salesforce.errors import SalesforceError
    from sf_activation.state import StateError
    from sf_activation.warehouse import WarehouseError

    known = (
        ModelError,
        SalesforceError,
        WarehouseError,
        RejectsError,
        StateError,
        LeaseError,
        SyncInterrupted,
    )
    if isinstance(exc, LeaseHeld):
        # Another run (CLI, another job, a backfill) is syncing this model: not a failure of
        # the data, and retrying at once would only be refused again.
        return dg.Failure(description=str(exc), allow_retries=False)
    if isinstance(exc, DeleteRateExceeded):
        hint = " Launch with `allow_deletes: true` in the Launchpad if the deletes are meant."
        return dg.Failure(description=f"{exc}{hint}", allow_retries=False)
    if isinstance(exc, known):
        return dg.Failure(
            description=f"{type(exc).__name__}: {exc}",
            metadata={"error": dg.MetadataValue.text(type(exc).__name__)},
        )
    return None
