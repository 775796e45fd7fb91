"""`SalesforceClient`: the one object the sync talks to (describe, validate, query, send)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import pyarrow as pa
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from sf_activation.config import SalesforceSettings
from sf_activation.salesforce.auth import SalesforceSession
from sf_activation.salesforce.bulk import BulkSender, BulkSettings
from sf_activation.salesforce.composite import CompositeSender
from sf_activation.salesforce.describe import ObjectDescribe, validate_mapping
from sf_activation.salesforce.errors import ApiLimitError, RequestError, TransientError
from sf_activation.salesforce.outcomes import (
    Dispatch,
    Outcomes,
    RetryPolicy,
    SendReport,
    SendRequest,
    StopSignal,
)
from sf_activation.salesforce.payload import PayloadLayout
from sf_activation.salesforce.soql import format_soql

log = logging.getLogger(__name__)


class SalesforceClient:
    """Describe (cached per object for the client's life, i.e. one run), query and send."""

    def __init__(
        self,
        session: SalesforceSession,
        *,
        retry: RetryPolicy | None = None,
        bulk: BulkSettings | None = None,
    ) -> None:
        self.session = session
        self.retry = retry or RetryPolicy()
        self.bulk = bulk or BulkSettings()
        self._describes: dict[str, ObjectDescribe] = {}
        self._describe_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SalesforceSettings, **kwargs: Any) -> SalesforceClient:
        return cls(SalesforceSession.from_settings(settings), **kwargs)

    @property
    def api_calls(self) -> int:
        return self.session.api_calls

    def close(self) -> None:
        self.session.close()

    def _get_json(self, path: str, **kwargs: Any) -> Any:
        """A read (describe, query page), retried on transient errors like the sends are:
        a single 503 or dropped connection must not fail a whole run."""
        for attempt in Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=wait_random_exponential(
                multiplier=self.retry.base_delay, max=self.retry.max_delay
            ),
            reraise=True,
        ):
            with attempt:
                return self.session.json("GET", path, **kwargs)
        return None  # pragma: no cover

    # -- describe ----------------------------------------------------------------------

    def describe(self, object_name: str) -> ObjectDescribe:
        """`GET sobjects/{object}/describe`, fetched once per object and cached."""
        key = object_name.lower()
        with self._describe_lock:
            cached = self._describes.get(key)
        if cached is not None:
            return cached
        try:
            body = self._get_json(f"sobjects/{quote(object_name)}/describe")
        except RequestError as exc:
            if exc.status == 404:
                raise RequestError(
                    f"no object {object_name!r} in this org (or no access to it)",
                    status=404,
                    error_code=exc.error_code or "NOT_FOUND",
                ) from None
            raise
        describe = ObjectDescribe.model_validate(body)
        with self._describe_lock:
            self._describes[key] = describe
        return describe

    def validate_mapping(
        self,
        *,
        model: str,
        object_name: str,
        operation: str,
        field_map: dict[str, str],
        external_id: str | None,
    ) -> ObjectDescribe:
        """Describe the object (and lookup parents) and raise `MappingError` if the model
        cannot work; returns the describe for `coerce_batch`."""
        describe = self.describe(object_name)
        validate_mapping(
            model=model,
            describe=describe,
            operation=operation,
            field_map=field_map,
            external_id=external_id,
            parent_describe=self.describe,
        )
        return describe

    # -- query -------------------------------------------------------------------------

    def query(self, soql: str, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Records of a SOQL query, following `nextRecordsUrl`; `{}` placeholders are quoted
        safely by simple-salesforce's `format_soql` when arguments are given."""
        if args or kwargs:
            soql = format_soql(soql, *args, **kwargs)
        body = self._get_json("query", params={"q": soql})
        while True:
            for record in body.get("records", []):
                record.pop("attributes", None)
                yield record
            next_url = body.get("nextRecordsUrl")
            if body.get("done", True) or not next_url:
                return
            body = self._get_json(next_url)

    def ids_by_external_id(
        self,
        object_name: str,
        external_id: str,
        values: Iterable[str],
        chunk: int = 200,
        *,
        case_sensitive: bool = False,
        max_in_chars: int = 4000,
    ) -> dict[str, str]:
        """Map external id values to record Ids (for update/delete of records known by
        external id only). Keys are the values as Salesforce compares them (lower-cased
        unless the field is case sensitive). One query per `chunk` values or per
        `max_in_chars` of quoted values, whichever comes first: the query goes in the URL,
        which Salesforce refuses above 16,384 bytes (long External IDs, URL-encoded)."""
        found: dict[str, str] = {}
        batch: list[str] = []
        size = 0

        def key(value: Any) -> str:
            text = str(value)
            return text if case_sensitive else text.lower()

        def run(part: list[str]) -> None:
            soql = format_soql(
                f"SELECT Id, {external_id} FROM {object_name} WHERE {external_id} IN {{}}", part
            )
            for record in self.query(soql):
                found[key(record[external_id])] = record["Id"]

        for value in values:
            cost = len(quote(value, safe="")) + 3
            if batch and (len(batch) >= chunk or size + cost > max_in_chars):
                run(batch)
                batch, size = [], 0
            batch.append(value)
            size += cost
        if batch:
            run(batch)
        return found

    # -- send --------------------------------------------------------------------------

    def send(
        self,
        request: SendRequest,
        batches: Iterable[pa.RecordBatch],
        on_outcomes: Callable[[Outcomes], None],
        *,
        on_dispatch: Dispatch | None = None,
        stop: StopSignal | None = None,
    ) -> SendReport:
        """Send canonical batches (`__key` + one column per Salesforce field) and report
        exactly one outcome per row through `on_outcomes`, in this thread, as `Outcomes`
        (columns; iterate it for a `RecordOutcome` per row).

        Stops cleanly (remaining rows retryable, `stopped_reason` set) when the API budget
        is reached, Salesforce stops answering or `stop` is set by the caller (a signal);
        raises `AuthenticationError` when credentials stop working (rows in flight are
        reported first). `on_dispatch` hears of every create call and Bulk job before it
        is sent (see `Dispatch`).
        """
        describe = self.describe(request.object)
        report = SendReport(transport=request.transport)
        calls_before = self.session.api_calls
        started = time.monotonic()

        def collect(outcomes: Outcomes) -> None:
            if outcomes:
                report.add(outcomes)
                on_outcomes(outcomes)

        def layout_for(schema: pa.Schema) -> PayloadLayout:
            return PayloadLayout.build(request, describe, schema)

        stop = stop or StopSignal()
        try:
            self.session.check_budget()
        except ApiLimitError as exc:
            stop.set(str(exc))
        try:
            if request.transport == "bulk":
                bulk = BulkSender(
                    self.session,
                    layout_for,
                    policy=self.retry,
                    settings=self.bulk,
                    concurrency=request.concurrency,
                    on_outcomes=collect,
                    stop=stop,
                    on_dispatch=on_dispatch,
                    describe=describe,
                )
                try:
                    bulk.run(batches)
                finally:
                    report.bulk_job_ids = bulk.job_ids
            else:
                CompositeSender(
                    self.session,
                    layout_for,
                    concurrency=request.concurrency,
                    policy=self.retry,
                    on_outcomes=collect,
                    stop=stop,
                    on_dispatch=on_dispatch,
                ).run(batches)
        finally:
            report.api_calls = self.session.api_calls - calls_before
            report.stopped_reason = stop.reason
            report.stopped_kind = stop.kind
        report.check()
        log.info(
            "sent %d %s records to %s by %s in %.1f s: %d succeeded, %d failed, %d retryable, "
            "%d API calls",
            report.sent, request.operation, request.object, request.transport,
            time.monotonic() - started, report.succeeded, report.failed, report.retryable,
            report.api_calls,
        )  # fmt: skip
        return report

    def resume_bulk_job(
        self,
        request: SendRequest,
        job_id: str,
        rows: pa.Table,
        on_outcomes: Callable[[Outcomes], None],
    ) -> None:
        """The outcome of every row of a Bulk job an earlier run started and could not
        finish reading (`rows`: its canonical rows with `__key`), one per row."""
        describe = self.describe(request.object)
        BulkSender(
            self.session,
            lambda schema: PayloadLayout.build(request, describe, schema),
            policy=self.retry,
            settings=self.bulk,
            concurrency=request.concurrency,
            on_outcomes=on_outcomes,
            describe=describe,
        ).resume(job_id, rows)

    def user_id(self) -> str:
        """The Id of the user the integration runs as (`oauth2/userinfo`)."""
        info = self._get_json("/services/oauth2/userinfo")
        return str(info["user_id"])
