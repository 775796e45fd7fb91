"""sObject Collections (`composite/sobjects`): 200 records per call, allOrNone=false.

`CompositeSender.run(batches)` cuts the stream into full 200-record chunks (only the last
is short), sends up to `concurrency` of them at once, retries only the records that
failed for a transient reason, splits a chunk Salesforce refuses as a whole (HTTP 400)
to find the bad records, and hands outcomes back in the caller's thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sf_activation.salesforce.auth import SalesforceSession
from sf_activation.salesforce.errors import (
    ApiLimitError,
    RequestError,
    SalesforceError,
    TransientError,
    is_retryable_record_error,
)
from sf_activation.salesforce.outcomes import (
    API_BUDGET_REACHED,
    KEY_COLUMN,
    RecordOutcome,
    RetryPolicy,
    StopSignal,
)
from sf_activation.salesforce.payload import PayloadLayout

try:  # orjson is several times faster at the one thing this module does most
    import orjson

    def _dumps(body: Any) -> bytes:
        return orjson.dumps(body)
except ImportError:  # pragma: no cover

    def _dumps(body: Any) -> bytes:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


log = logging.getLogger(__name__)

CHUNK_SIZE = 200  # Salesforce's limit per sObject Collections call
_JSON = {"Content-Type": "application/json; charset=UTF-8"}


def records_from_batch(layout: PayloadLayout, batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """sObject JSON records of a canonical batch (`nulls: clear` → JSON null, `keep` → omitted)."""
    n = batch.num_rows
    if layout.operation == "delete":
        return [{"Id": v} for v in batch.column(layout.identity).to_pylist()]  # type: ignore[arg-type]
    attributes = {"type": layout.object}
    names = layout.fields
    columns = [batch.column(name).to_pylist() for name in names]
    rows = zip(*columns, strict=True) if columns else ((),) * n
    # Built with dict(zip()) over row tuples: the per-row cost is what bounds CPU per
    # million rows, so no per-field Python branches on the common path.
    if layout.clear_nulls:
        records = [dict(zip(names, row, strict=True)) for row in rows]
    else:
        records = [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in rows]
    for record in records:
        record["attributes"] = attributes
    for lookup in layout.lookups:
        values = batch.column(lookup.column).to_pylist()
        relationship, parent_field, reference = (
            lookup.relationship,
            lookup.parent_field,
            lookup.reference_field,
        )
        for record, value in zip(records, values, strict=True):
            if value is not None:
                record[relationship] = {parent_field: value}
            elif layout.clear_nulls:
                # A lookup by external id cannot be nulled through the relationship; the
                # reference field itself (ParentId) is what empties it.
                record[reference] = None
    return records


class CollectionsApi:
    """The four sObject Collections calls; one API call each."""

    def __init__(self, session: SalesforceSession, layout: PayloadLayout) -> None:
        self.session = session
        self.layout = layout

    def call(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        op = self.layout.operation
        if op == "delete":
            ids = ",".join(r["Id"] for r in records)
            results = self.session.json(
                "DELETE", "composite/sobjects", params={"ids": ids, "allOrNone": "false"}
            )
        else:
            body = _dumps({"allOrNone": False, "records": records})
            if op == "insert":
                results = self.session.json("POST", "composite/sobjects", data=body, headers=_JSON)
            elif op == "update":
                results = self.session.json("PATCH", "composite/sobjects", data=body, headers=_JSON)
            else:
                path = f"composite/sobjects/{self.layout.object}/{self.layout.identity}"
                results = self.session.json("PATCH", path, data=body, headers=_JSON)
        if not isinstance(results, list) or len(results) != len(records):
            # Results are positional; a short answer cannot be matched, so try again.
            raise TransientError(
                f"sObject Collections answered {type(results).__name__} of "
                f"{len(results) if isinstance(results, list) else '?'} results for {len(records)} records"
            )
        return results


def _outcome_from_result(
    key: str, result: dict[str, Any], attempts: int, operation: str
) -> RecordOutcome:
    if result.get("success"):
        created = result.get("created")
        if created is None:
            created = True if operation == "insert" else (False if operation != "upsert" else None)
        return RecordOutcome(key, True, result.get("id"), created, attempts=attempts)
    errors = result.get("errors") or [{}]
    first = errors[0]
    code = first.get("statusCode") or first.get("errorCode") or "UNKNOWN_EXCEPTION"
    return RecordOutcome(
        key,
        False,
        result.get("id"),
        None,
        code,
        first.get("message"),
        list(first.get("fields") or []),
        retryable=is_retryable_record_error(code),
        attempts=attempts,
    )


def send_chunk(
    api: CollectionsApi,
    records: list[dict[str, Any]],
    keys: list[str],
    policy: RetryPolicy,
    stop: StopSignal,
    first_attempt: int = 1,
) -> list[RecordOutcome]:
    """Send one chunk until every record has an outcome; retries only what failed transiently."""
    outcomes: dict[int, RecordOutcome] = {}
    pending = list(range(len(records)))
    attempt = first_attempt - 1
    while pending:
        attempt += 1
        if stop.is_set():
            for i in pending:
                outcomes[i] = RecordOutcome(
                    keys[i], False, None, None, API_BUDGET_REACHED,
                    f"not sent: {stop.reason}",
                    retryable=True, attempts=attempt - 1,
                )  # fmt: skip
            break
        try:
            results = api.call([records[i] for i in pending])
        except ApiLimitError as exc:
            stop.set(str(exc))
            for i in pending:
                outcomes[i] = RecordOutcome(
                    keys[i], False, None, None, exc.error_code or "REQUEST_LIMIT_EXCEEDED",
                    str(exc), retryable=True, attempts=attempt - 1,
                )  # fmt: skip
            break
        except TransientError as exc:
            if attempt >= policy.max_attempts:
                for i in pending:
                    outcomes[i] = RecordOutcome(
                        keys[i], False, None, None, exc.error_code or "TRANSIENT_ERROR",
                        f"gave up after {attempt} attempts: {exc}", retryable=True, attempts=attempt,
                    )  # fmt: skip
                break
            log.debug("transient failure on attempt %d, retrying: %s", attempt, exc)
            time.sleep(policy.delay(attempt))
            continue
        except RequestError as exc:
            if len(pending) == 1:
                i = pending[0]
                fields = list((exc.errors[0] if exc.errors else {}).get("fields") or [])
                outcomes[i] = RecordOutcome(
                    keys[i], False, None, None, exc.error_code or f"HTTP_{exc.status}",
                    str(exc).split(": ", 1)[-1], fields, attempts=attempt,
                )  # fmt: skip
                break
            # Salesforce refused the whole request because of something in it: halve it
            # until the records it objects to are alone, instead of rejecting 200 rows.
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                sub = send_chunk(
                    api, [records[i] for i in part], [keys[i] for i in part], policy, stop, attempt
                )
                for i, outcome in zip(part, sub, strict=True):
                    outcomes[i] = outcome
            break
        retry: list[int] = []
        for i, result in zip(pending, results, strict=True):
            outcome = _outcome_from_result(keys[i], result, attempt, api.layout.operation)
            if outcome.retryable and attempt < policy.max_attempts:
                retry.append(i)
            else:
                outcomes[i] = outcome
        pending = retry
        if pending:
            time.sleep(policy.delay(attempt))
    return [outcomes[i] for i in range(len(records))]


class CompositeSender:
    """Streams canonical batches through sObject Collections with bounded concurrency."""

    def __init__(
        self,
        session: SalesforceSession,
        layout_for: Callable[[pa.Schema], PayloadLayout],
        *,
        concurrency: int,
        policy: RetryPolicy,
        on_outcomes: Callable[[list[RecordOutcome]], None],
        stop: StopSignal | None = None,
    ) -> None:
        self.session = session
        self.layout_for = layout_for
        self.concurrency = concurrency
        self.policy = policy
        self.on_outcomes = on_outcomes
        self.stop = stop or StopSignal()

    def _chunks(
        self, batches: Iterable[pa.RecordBatch]
    ) -> Iterator[tuple[PayloadLayout, list[dict[str, Any]], list[str]]]:
        """Full 200-record chunks across batch boundaries; pre-rejected rows reported here."""
        records: list[dict[str, Any]] = []
        keys: list[str] = []
        layout: PayloadLayout | None = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if layout is None:
                layout = self.layout_for(batch.schema)
            batch = self._drop_missing_identity(layout, batch)
            records.extend(records_from_batch(layout, batch))
            keys.extend(batch.column(KEY_COLUMN).to_pylist())
            while len(records) >= CHUNK_SIZE:
                yield layout, records[:CHUNK_SIZE], keys[:CHUNK_SIZE]
                del records[:CHUNK_SIZE], keys[:CHUNK_SIZE]
        if records and layout is not None:
            yield layout, records, keys

    def _drop_missing_identity(
        self, layout: PayloadLayout, batch: pa.RecordBatch
    ) -> pa.RecordBatch:
        mask = layout.missing_identity(batch)
        if mask is None:
            return batch
        code, message = layout.missing_identity_message()
        rejected = batch.filter(mask).column(KEY_COLUMN).to_pylist()
        self.on_outcomes([RecordOutcome(k, False, None, None, code, message) for k in rejected])
        return batch.filter(pc.invert(mask))

    def run(self, batches: Iterable[pa.RecordBatch]) -> None:
        in_flight: dict[Future[list[RecordOutcome]], list[str]] = {}
        first_error: SalesforceError | None = None
        apis: dict[int, CollectionsApi] = {}

        def drain(block_until: int) -> None:
            nonlocal first_error
            # Hand finished calls over at once (not only when the queue is full): the caller
            # commits state per call, and every confirmed-but-unreported call widens what a
            # crash would send again.
            while in_flight:
                done = [f for f in in_flight if f.done()]
                if not done:
                    if len(in_flight) <= block_until:
                        return
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    keys = in_flight.pop(future)
                    try:
                        outcomes = future.result()
                    except SalesforceError as exc:  # authentication: stop the run
                        first_error = first_error or exc
                        self.stop.set(f"stopped: {exc}")
                        outcomes = self._not_sent(keys)
                    self.on_outcomes(outcomes)

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sf-composite") as pool:
            for layout, records, keys in self._chunks(batches):
                if not self.stop.is_set():
                    try:
                        self.session.check_budget()
                    except ApiLimitError as exc:
                        self.stop.set(str(exc))
                if self.stop.is_set():
                    # Nothing more is sent; the rows are reported pending, not lost.
                    self.on_outcomes(self._not_sent(keys))
                    continue
                api = apis.setdefault(id(layout), CollectionsApi(self.session, layout))
                future = pool.submit(send_chunk, api, records, keys, self.policy, self.stop)
                in_flight[future] = keys
                # Keep a small queue ahead of the workers; memory stays bounded.
                drain(2 * self.concurrency)
            drain(0)
        if first_error is not None:
            raise first_error

    def _not_sent(self, keys: list[str]) -> list[RecordOutcome]:
        message = f"not sent: {self.stop.reason or 'the run stopped'}"
        return [
            RecordOutcome(
                k, False, None, None, API_BUDGET_REACHED, message, retryable=True, attempts=0
            )
            for k in keys
        ]
