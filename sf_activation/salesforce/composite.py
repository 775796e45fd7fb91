"""sObject Collections (`composite/sobjects`): 200 records per call, allOrNone=false.

`CompositeSender.run(batches)` cuts the stream into full 200-record chunks (only the last
is short), sends up to `concurrency` of them at once, retries only the records that
failed for a transient reason, splits a chunk Salesforce refuses as a whole (HTTP 400)
to find the bad records, and hands outcomes back in the caller's thread.
"""

from __future__ import annotations

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
    DUPLICATES_DETECTED,
    KEY_COLUMN,
    OUTCOME_UNKNOWN,
    Dispatch,
    Outcomes,
    RecordOutcome,
    RetryPolicy,
    StopSignal,
    explain_duplicates,
)
from sf_activation.salesforce.payload import PayloadLayout
from sf_activation.salesforce.record_json import RecordEncoder, collection_body

log = logging.getLogger(__name__)

CHUNK_SIZE = 200  # Salesforce's limit per sObject Collections call
_JSON = {"Content-Type": "application/json; charset=UTF-8"}


class CollectionsApi:
    """The four sObject Collections calls; one API call each."""

    def __init__(
        self,
        session: SalesforceSession,
        layout: PayloadLayout,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.session = session
        self.layout = layout
        # Sforce-Auto-Assign / Sforce-Duplicate-Rule-Header (WriteSwitches.rest_headers).
        self.headers = {**_JSON, **(headers or {})}

    def call(self, records: list[str]) -> list[dict[str, Any]]:
        """`records` are `RecordEncoder.encode` output: JSON texts, or Ids to delete."""
        op = self.layout.operation
        if op == "delete":
            results = self.session.json(
                "DELETE",
                "composite/sobjects",
                params={"ids": ",".join(records), "allOrNone": "false"},
                headers={k: v for k, v in self.headers.items() if k not in _JSON},
            )
        else:
            body = collection_body(records)
            if op == "insert":
                results = self.session.json(
                    "POST", "composite/sobjects", data=body, headers=self.headers
                )
            elif op == "update":
                results = self.session.json(
                    "PATCH", "composite/sobjects", data=body, headers=self.headers
                )
            else:
                path = f"composite/sobjects/{self.layout.object}/{self.layout.identity}"
                results = self.session.json("PATCH", path, data=body, headers=self.headers)
        if not isinstance(results, list) or len(results) != len(records):
            # Results are positional; a short answer cannot be matched, so try again.
            raise TransientError(
                f"sObject Collections answered {type(results).__name__} of "
                f"{len(results) if isinstance(results, list) else '?'} results for {len(records)} records"
            )
        return results


def _outcome_from_result(
    key: Any, result: dict[str, Any], attempts: int, operation: str
) -> RecordOutcome:
    if result.get("success"):
        return RecordOutcome(
            key, True, result.get("id"), _created(result, operation), attempts=attempts
        )
    errors = result.get("errors") or [{}]
    first = errors[0]
    code = first.get("statusCode") or first.get("errorCode") or "UNKNOWN_EXCEPTION"
    message = first.get("message")
    if code == DUPLICATES_DETECTED:
        # Salesforce names the rule in the error's duplicateResult (REST API).
        found = first.get("duplicateResult") or {}
        message = explain_duplicates(message, found.get("duplicateRule"))
    return RecordOutcome(
        key,
        False,
        result.get("id"),
        None,
        code,
        message,
        list(first.get("fields") or []),
        retryable=is_retryable_record_error(code),
        attempts=attempts,
    )


def _created(result: dict[str, Any], operation: str) -> bool | None:
    if operation == "upsert":  # only upsert can answer either way
        return result.get("created")
    return operation == "insert"


def outcomes_of_results(
    keys: list[Any], results: list[dict[str, Any]], attempts: int, operation: str
) -> Outcomes:
    """Outcomes of one call's positional results; no object per record when all succeeded."""
    # List comprehensions, not a function per record: this runs for every record sent.
    if all([r.get("success") for r in results]):
        if operation == "upsert":
            created = [r.get("created") for r in results]
        else:
            created = [operation == "insert"] * len(results)
        return Outcomes.succeeded(keys, [r.get("id") for r in results], created, attempts)
    return Outcomes.of(
        _outcome_from_result(key, result, attempts, operation)
        for key, result in zip(keys, results, strict=True)
    )


def send_chunk(
    api: CollectionsApi,
    records: list[str],
    keys: list[Any],
    policy: RetryPolicy,
    stop: StopSignal,
    first_attempt: int = 1,
) -> Outcomes:
    """Send one chunk until every record has an outcome; retries only what failed transiently."""
    settled: list[Outcomes] = []
    pending = list(range(len(records)))
    attempt = first_attempt - 1
    while pending:
        attempt += 1
        pending_keys = [keys[i] for i in pending]
        if stop.is_set():
            settled.append(stop.not_sent(pending_keys, attempt - 1))
            break
        try:
            results = api.call([records[i] for i in pending])
        except ApiLimitError as exc:
            stop.set(str(exc))
            settled.append(
                Outcomes.failed(
                    pending_keys, exc.error_code or "REQUEST_LIMIT_EXCEEDED", str(exc),
                    retryable=True, attempts=attempt - 1,
                )
            )  # fmt: skip
            break
        except TransientError as exc:
            if exc.maybe_applied and api.layout.operation == "insert":
                # The records may have been created: sending them again could make them
                # twice. The sync asks Salesforce what it holds instead (its ledger).
                settled.append(
                    Outcomes.failed(
                        pending_keys, OUTCOME_UNKNOWN,
                        f"no answer to the create call ({exc}); held, not sent again, until "
                        "Salesforce tells whether the records exist",
                        retryable=True, attempts=attempt,
                    )
                )  # fmt: skip
                break
            if attempt >= policy.max_attempts:
                stop.set(f"Salesforce stopped answering: {exc}", "unreachable")
                settled.append(
                    Outcomes.failed(
                        pending_keys, exc.error_code or "TRANSIENT_ERROR",
                        f"gave up after {attempt} attempts: {exc}",
                        retryable=True, attempts=attempt,
                    )
                )  # fmt: skip
                break
            log.debug("transient failure on attempt %d, retrying: %s", attempt, exc)
            time.sleep(policy.delay(attempt))
            continue
        except RequestError as exc:
            if len(pending) == 1:
                fields = list((exc.errors[0] if exc.errors else {}).get("fields") or [])
                settled.append(
                    Outcomes.of([
                        RecordOutcome(
                            pending_keys[0], False, None, None,
                            exc.error_code or f"HTTP_{exc.status}",
                            str(exc).split(": ", 1)[-1], fields, attempts=attempt,
                        )
                    ])
                )  # fmt: skip
                break
            # Salesforce refused the whole request because of something in it: halve it
            # until the records it objects to are alone, instead of rejecting 200 rows.
            half = len(pending) // 2
            for part in (pending[:half], pending[half:]):
                settled.append(
                    send_chunk(
                        api, [records[i] for i in part], [keys[i] for i in part],
                        policy, stop, attempt,
                    )
                )  # fmt: skip
            break
        except SalesforceError as exc:
            # Credentials refused (or TLS): nothing more can succeed. What this chunk had
            # confirmed is handed back with the rest marked not sent; the sender raises
            # `exc` once every call in flight has been handed back.
            stop.set(f"stopped: {exc}", "auth", exc)
            settled.append(stop.not_sent(pending_keys, attempt - 1))
            break
        outcomes = outcomes_of_results(pending_keys, results, attempt, api.layout.operation)
        retry = (
            [i for i, again in enumerate(outcomes.retryable) if again]
            if attempt < policy.max_attempts
            else []
        )
        if not retry:
            settled.append(outcomes)
            break
        again = set(retry)
        settled.append(outcomes.take([i for i in range(len(pending)) if i not in again]))
        pending = [pending[i] for i in retry]
        time.sleep(policy.delay(attempt))
    return Outcomes.concat(settled)


class CompositeSender:
    """Streams canonical batches through sObject Collections with bounded concurrency."""

    def __init__(
        self,
        session: SalesforceSession,
        layout_for: Callable[[pa.Schema], PayloadLayout],
        *,
        concurrency: int,
        policy: RetryPolicy,
        on_outcomes: Callable[[Outcomes], None],
        stop: StopSignal | None = None,
        on_dispatch: Dispatch | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.session = session
        self.layout_for = layout_for
        self.headers = headers
        self.concurrency = concurrency
        self.policy = policy
        self.on_outcomes = on_outcomes
        self.stop = stop or StopSignal()
        self.on_dispatch = on_dispatch

    def _chunks(
        self, batches: Iterable[pa.RecordBatch]
    ) -> Iterator[tuple[PayloadLayout, list[str], list[Any]]]:
        """Full 200-record chunks across batch boundaries; pre-rejected rows reported here."""
        records: list[str] = []
        keys: list[Any] = []
        encoder: RecordEncoder | None = None
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                if encoder is None:
                    encoder = RecordEncoder(self.layout_for(batch.schema))
                batch = self._drop_missing_identity(encoder.layout, batch)
                records.extend(encoder.encode(batch))
                keys.extend(batch.column(KEY_COLUMN).to_pylist())
                while len(records) >= CHUNK_SIZE:
                    yield encoder.layout, records[:CHUNK_SIZE], keys[:CHUNK_SIZE]
                    del records[:CHUNK_SIZE], keys[:CHUNK_SIZE]
            if records and encoder is not None:
                yield encoder.layout, records, keys
        finally:
            if encoder is not None:
                encoder.close()

    def _drop_missing_identity(
        self, layout: PayloadLayout, batch: pa.RecordBatch
    ) -> pa.RecordBatch:
        mask = layout.missing_identity(batch)
        if mask is None:
            return batch
        code, message = layout.missing_identity_message()
        rejected = batch.filter(mask).column(KEY_COLUMN).to_pylist()
        self.on_outcomes(Outcomes.failed(rejected, code, message, retryable=False, attempts=1))
        return batch.filter(pc.invert(mask))

    def run(self, batches: Iterable[pa.RecordBatch]) -> None:
        in_flight: dict[Future[Outcomes], list[Any]] = {}
        apis: dict[int, CollectionsApi] = {}

        def drain(block_until: int) -> None:
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
                    except Exception as exc:  # a bug in a worker: the rows are not lost
                        self.stop.set(f"stopped: {exc}", "auth", exc)
                        outcomes = self._not_sent(keys)
                    self.on_outcomes(outcomes)

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sf-composite") as pool:
            try:
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
                    if self.on_dispatch is not None:
                        self.on_dispatch(keys, None)
                    api = apis.get(id(layout))
                    if api is None:
                        api = apis[id(layout)] = CollectionsApi(self.session, layout, self.headers)
                    future = pool.submit(send_chunk, api, records, keys, self.policy, self.stop)
                    in_flight[future] = keys
                    # Keep a small queue ahead of the workers; memory stays bounded.
                    drain(2 * self.concurrency)
            except BaseException as exc:
                # Whatever stopped the stream (an error reading rows, an interrupt), no new
                # call starts, and the calls already sent finish and their outcomes reach
                # the caller before the error does.
                self.stop.set(f"stopped: {type(exc).__name__}", "interrupted")
                raise
            finally:
                drain(0)
        if self.stop.error is not None:
            raise self.stop.error

    def _not_sent(self, keys: list[Any]) -> Outcomes:
        return self.stop.not_sent(keys)
