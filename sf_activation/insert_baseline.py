"""An insert model without state must not create again what an earlier state recorded.

Insert has no key Salesforce could match: the state is the only memory of which rows were
created. A renamed model, a new state URL or a deleted state directory leaves the model
with no state, and the next run would create every record a second time. Before the first
send of an insert model with an empty state, a sample of the rows to send is looked up by
content among the records the integration user created (the same lookup that reconciles
a create whose answer was lost). If Salesforce already holds some of them, the run stops
with one line before anything is sent; `--allow-reinsert` (or
`SF_ACTIVATION_ALLOW_REINSERT=1`) proceeds when the new records are meant.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from sf_activation.diff import Plan
from sf_activation.models import ModelError, ModelSpec
from sf_activation.reconcile import LedgerReconciler
from sf_activation.salesforce.client import SalesforceClient
from sf_activation.salesforce.outcomes import SendRequest

# Rows looked up: enough to see a lost state (every row exists), few enough for a query
# or two on a first run.
SAMPLE_ROWS = 50
# Records created since this are candidates (the lookup needs a lower bound).
SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class InsertStateMissing(ModelError):
    """An insert model has no state, and Salesforce already holds records it would create."""


def check_insert_baseline(
    spec: ModelSpec, plan: Plan, client: SalesforceClient, *, state_url: str
) -> None:
    """Raise InsertStateMissing when the first rows to insert already exist in Salesforce."""
    if spec.operation != "insert" or plan.counts.get("state_rows", 0) or not plan.to_send:
        return
    sample = _sample(plan)
    if sample.num_rows == 0:
        return
    request = SendRequest(object=spec.object, operation="insert", nulls=spec.nulls)
    reconciler = LedgerReconciler(client, client.describe(spec.object), request, grace_s=0)
    found = reconciler.find_created(sample, SINCE, set())
    if not found:
        return
    example = next(iter(found.values()))
    raise InsertStateMissing(
        f"model {spec.name!r}: has no state at {state_url} but {len(found)} of its first "
        f"{sample.num_rows} rows already exist in Salesforce as {spec.object} records this "
        f"user created (e.g. {example}): the state was lost or the model renamed, and "
        "inserting again would duplicate them. Restore the state, or pass --allow-reinsert "
        "(SF_ACTIVATION_ALLOW_REINSERT=1) if new records are meant"
    )


def _sample(plan: Plan) -> pa.Table:
    for batch in plan.iter_to_send(batch_rows=SAMPLE_ROWS):
        return pa.Table.from_batches([batch.slice(0, SAMPLE_ROWS)])
    return pa.table({})
