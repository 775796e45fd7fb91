"""`SalesforceClient`: the one object the sync talks to (describe, validate, query, send)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from sf_activation.config import SalesforceSettings
from sf_activation.salesforce.auth import SalesforceSession
from sf_activation.salesforce.bulk import BulkSender, BulkSettings
from sf_activation.salesforce.composite import CompositeSender
from sf_activation.salesforce.describe import ObjectDescribe, validate_mapping
from sf_activation.salesforce.errors import ApiLimitError, RequestError, TransientError
from sf_activation.salesforce.outcomes import (
    FIELDS_JSON_COLUMN,
    KEY_COLUMN,
    RECORD_TYPE_NAME_COLUMN,
    Dispatch,
    Outcomes,
    RecordOutcome,
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
        self._record_types: dict[str, dict[str, str]] = {}
        self._assignment_rules: dict[str, str | None] = {}

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

    # -- record types and assignment rules ----------------------------------------------

    def record_types(self, object_name: str) -> dict[str, str]:
        """DeveloperName -> Id of the object's active record types; one query per object
        for the client's life (one run)."""
        key = object_name.lower()
        if key not in self._record_types:
            soql = format_soql(
                "SELECT Id, DeveloperName FROM RecordType "
                "WHERE SobjectType = {} AND IsActive = true",
                object_name,
            )
            self._record_types[key] = {r["DeveloperName"]: r["Id"] for r in self.query(soql)}
        return self._record_types[key]

    def active_assignment_rule(self, object_name: str) -> str | None:
        """The Id of the object's active assignment rule (Lead, Case), or None. Bulk 2.0
        runs a rule only when its Id is given; `assignment_rules: true` needs it."""
        key = object_name.lower()
        if key not in self._assignment_rules:
            soql = format_soql(
                "SELECT Id FROM AssignmentRule WHERE SobjectType = {} AND Active = true",
                object_name,
            )
            rules = [r["Id"] for r in self.query(soql)]
            self._assignment_rules[key] = rules[0] if rules else None
        return self._assignment_rules[key]

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
        progress: Callable[[str, int, int], None] | None = None,
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
        request = self._settle_switches(request)
        report = SendReport(transport=request.transport)
        calls_before = self.session.api_calls
        started = time.monotonic()

        def collect(outcomes: Outcomes) -> None:
            if outcomes:
                report.add(outcomes)
                on_outcomes(outcomes)

        batches = _with_record_types(batches, request, collect)
        switches = request.switches

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
                    switches=switches,
                    progress=progress,  # a Bulk job's state, before its outcomes
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
                    headers=switches.rest_headers(request.operation),
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
        request = self._settle_switches(request)
        BulkSender(
            self.session,
            lambda schema: PayloadLayout.build(request, describe, schema),
            policy=self.retry,
            settings=self.bulk,
            concurrency=request.concurrency,
            on_outcomes=on_outcomes,
            describe=describe,
            switches=request.switches,
        ).resume(job_id, rows)

    def _settle_switches(self, request: SendRequest) -> SendRequest:
        """The request as it can be sent: a hard delete only exists as a Bulk 2.0 job, and
        Bulk runs an assignment rule only by its Id (looked up for `true`)."""
        switches = request.switches
        if request.operation == "delete" and switches.hard_delete and request.transport != "bulk":
            request = request.model_copy(update={"transport": "bulk"})
        if (
            request.transport == "bulk"
            and request.operation != "delete"
            and switches.assignment_rule is True
        ):
            rule = self.active_assignment_rule(request.object)
            if rule is None:
                log.info("%s has no active assignment rule; none runs", request.object)
            update: dict[str, Any] = {"assignment_rule": rule or False}
            request = request.model_copy(update={"switches": switches.model_copy(update=update)})
        return request

    def user_id(self) -> str:
        """The Id of the user the integration runs as (`oauth2/userinfo`)."""
        info = self._get_json("/services/oauth2/userinfo")
        return str(info["user_id"])


def _with_record_types(
    batches: Iterable[pa.RecordBatch],
    request: SendRequest,
    reject: Callable[[Outcomes], None],
) -> Iterable[pa.RecordBatch]:
    """Batches with `RecordTypeId`: from each row's `RecordType.DeveloperName` (rows naming
    no record type of the object are refused here, never sent), else the model's
    `record_type` on insert and upsert. Salesforce cannot find a record type by name."""
    switches = request.switches
    constant = switches.record_type_id if request.operation in ("insert", "upsert") else None
    if constant is None and not switches.record_type_ids:
        return batches

    def convert(batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        if RECORD_TYPE_NAME_COLUMN not in names and (constant is None or "RecordTypeId" in names):
            return batch
        if FIELDS_JSON_COLUMN in names:  # the canonical payload no longer says it all
            batch = batch.drop_columns([FIELDS_JSON_COLUMN])
        ids = pa.nulls(batch.num_rows, pa.string())
        if RECORD_TYPE_NAME_COLUMN in batch.schema.names:
            given = batch.column(RECORD_TYPE_NAME_COLUMN)
            known = list(switches.record_type_ids)
            # DeveloperName is unique per object whatever its case, as SOQL compares it.
            position = pc.index_in(
                pc.utf8_lower(given), value_set=pa.array([k.lower() for k in known], pa.string())
            )
            unknown = pc.fill_null(pc.and_(pc.is_valid(given), pc.is_null(position)), False)
            if pc.any(unknown).as_py():
                bad = batch.filter(unknown)
                available = ", ".join(switches.record_type_names) or "none"
                reject(
                    Outcomes.of(
                        RecordOutcome(
                            key,
                            False,
                            error_code="INVALID_CROSS_REFERENCE_KEY",
                            message=f"Record Type: {name!r} is not a record type of "
                            f"{request.object} (available: {available})",
                            fields=["RecordTypeId"],
                        )
                        for key, name in zip(
                            bad.column(KEY_COLUMN).to_pylist(),
                            bad.column(RECORD_TYPE_NAME_COLUMN).to_pylist(),
                            strict=True,
                        )
                    )
                )
                keep = pc.invert(unknown)
                batch, position = batch.filter(keep), position.filter(keep)
            ids = pc.take(
                pa.array([switches.record_type_ids[k] for k in known], pa.string()), position
            )
            batch = batch.drop_columns([RECORD_TYPE_NAME_COLUMN])
        if constant is not None:
            ids = pc.fill_null(ids, constant)
        if "RecordTypeId" in batch.schema.names:
            return batch
        return batch.append_column("RecordTypeId", ids)

    return (convert(b) for b in batches)
