"""Errors a user can act on become a one-line `dg.Failure` instead of a stack trace."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from sf_activation.dagster.metadata import reject_rate
from sf_activation.dagster.translator import SfActivationTranslator
from sf_activation.models import ModelError, ModelSpec
from sf_activation.summary import SyncSummary

# On the stand-in assets of a model file that does not load (catalog filter
# `tag:sf_activation/load_error=true` lists every broken model).
LOAD_ERROR_TAG = "sf_activation/load_error"


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
    from sf_activation.rejects import RejectsError
    from sf_activation.salesforce.errors import SalesforceError
    from sf_activation.state import StateError
    from sf_activation.sync import MemoryLimitReached
    from sf_activation.warehouse import WarehouseError

    known = (
        ModelError,
        SalesforceError,
        WarehouseError,
        RejectsError,
        StateError,
        LeaseError,
        SyncInterrupted,
        MemoryLimitReached,
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


def rejected_rows_failure(
    spec: ModelSpec, summary: SyncSummary, check: dg.AssetCheckResult
) -> dg.Failure:
    """The one line a run ends with when `rejected_rows` fails.

    Dagster ends a step whose blocking check failed with `DagsterAssetCheckFailedError`,
    whose text only names the check ("1 blocking asset check failed with ERROR
    severity: …") under a stack trace. The sync step raises this Failure instead, after
    yielding the materialization and the check result, so both stay recorded and the
    step failure says which model, how many rows, against which threshold, and where
    they are.
    """
    count, denominator, rate = reject_rate(spec, summary)
    where = (
        f"reject file {summary.rejects_url}" if summary.rejects_url else "no reject file written"
    )
    description = (
        f"{spec.name}: rejected_rows failed: {count} of {denominator} rows rejected "
        f"({rate:.2%}), above max_reject_rate {spec.max_reject_rate:.2%} "
        f"({spec.display_path}); {where}"
    )
    # The check's figures, without its sample table (which stays on the check).
    metadata = {k: v for k, v in (check.metadata or {}).items() if k != "sample"}
    # Rejected rows are the rows' own fault: a retry at once would be rejected again.
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


def load_error_line(error: ModelError) -> str:
    """A model file's mistakes on one line (a file can hold several, each naming its key)."""
    return "; ".join(error.problems)


def broken_model_assets(
    name: str, error: ModelError, translator: SfActivationTranslator | None = None
) -> list[dg.AssetsDefinition]:
    """`warehouse/<name>` and `salesforce/<name>` for a model file that does not load.

    They stand where the model's assets would be, in the same group, so the UI shows the
    file's mistake where a user looks for the model (its description, and a one-line
    failure when materialized) while every other model keeps its assets, jobs, schedules
    and sensors. They do nothing but fail: nothing of the model is known beyond its name,
    so the translator gives their keys and groups (by name) and nothing else.
    """
    translator = translator if translator is not None else SfActivationTranslator()
    wh_key = translator.get_asset_key("warehouse", name)
    sf_key = translator.get_asset_key("salesforce", name)
    line = load_error_line(error)
    description = (
        f"Model {name} cannot load; fix its model file (materializing fails until then):\n\n"
        # Double backticks: a problem line may quote a key in single ones (`sql:`).
        + "\n".join(f"- `` {problem} ``" for problem in error.problems)
    )
    metadata = {"load_error": dg.MetadataValue.text(line)}
    tags = {LOAD_ERROR_TAG: "true"}

    def fail() -> None:
        # Retrying cannot help: the file must be fixed (and the code location reloaded).
        raise dg.Failure(description=f"ModelError: {line}", allow_retries=False)

    @dg.asset(
        key=wh_key,
        group_name=translator.get_group_name("warehouse", name),
        kinds={"sql"},
        tags=tags,
        description=description,
        metadata=metadata,
    )
    def _warehouse() -> None:
        fail()

    @dg.asset(
        key=sf_key,
        deps=[wh_key],
        group_name=translator.get_group_name("salesforce", name),
        kinds={"salesforce"},
        tags=tags,
        description=description,
        metadata=metadata,
    )
    def _salesforce() -> None:
        fail()

    return [_warehouse, _salesforce]
