"""What the UI shows: materialization metadata, the `rejected_rows` check result and the
assets' definition metadata, built from a model spec and a `SyncSummary`."""

import hashlib
from typing import Any

import dagster as dg

from sf_activation.models import ModelSpec
from sf_activation.rejects import mask_redacted
from sf_activation.summary import SyncSummary

CHECK_NAME = "rejected_rows"
SAMPLE_ROWS = 10


def planned_to_send(summary: SyncSummary) -> int:
    """The rows the plan sends: added + changed + pending, and unchanged ones too on a full
    resync (as the sync counts them when it chooses the transport)."""
    to_send = summary.added + summary.changed + summary.pending
    if summary.full_resync:
        to_send += summary.unchanged
    return to_send


def plan_counts(summary: SyncSummary) -> dict[str, Any]:
    """How the plan classified the model's rows: the same names on `warehouse/<model>` and
    `salesforce/<model>`, so the two can be read side by side. Every row is exactly one of
    invalid, added, changed, unchanged, pending; `to_send` is what the run planned to send,
    so `sent` on the sync adds up against it."""
    return {
        "added": dg.MetadataValue.int(summary.added),
        "changed": dg.MetadataValue.int(summary.changed),
        "removed": dg.MetadataValue.int(summary.removed),
        "invalid": dg.MetadataValue.int(summary.invalid),
        "unchanged": dg.MetadataValue.int(summary.unchanged),
        "pending": dg.MetadataValue.int(summary.pending),
        "to_send": dg.MetadataValue.int(planned_to_send(summary)),
    }


def plan_metadata(spec: ModelSpec, summary: SyncSummary) -> dict[str, Any]:
    """What `warehouse/<model>` shows: the model's rows and what a sync would do with them."""
    return {
        "dagster/row_count": dg.MetadataValue.int(summary.rows),
        **plan_counts(summary),
        "transport": dg.MetadataValue.text(summary.transport),
        "sample_changes": dg.MetadataValue.json(
            mask_redacted(summary.sample_changes[:SAMPLE_ROWS], set(spec.redact))
        ),
        "plan_duration_s": dg.MetadataValue.float(float(summary.duration_s)),
        "diff_engine": dg.MetadataValue.text(summary.diff_engine),
        "rows_fetched": dg.MetadataValue.int(summary.rows_fetched),
        **(
            {"full_read_reason": dg.MetadataValue.text(summary.full_read_reason)}
            if summary.full_read_reason
            else {}
        ),
    }


def sync_metadata(summary: SyncSummary) -> dict[str, Any]:
    """What `salesforce/<model>` shows: what Salesforce was sent and what it answered."""
    metadata: dict[str, Any] = {
        "sent": dg.MetadataValue.int(summary.sent),
        "succeeded": dg.MetadataValue.int(summary.succeeded),
        "failed": dg.MetadataValue.int(summary.failed),
        "retried": dg.MetadataValue.int(summary.retried),
        "rejected": dg.MetadataValue.int(summary.rejected),
        "deleted": dg.MetadataValue.int(summary.deleted),
        "api_calls": dg.MetadataValue.int(summary.api_calls),
        "transport": dg.MetadataValue.text(summary.transport),
        "bulk_job_ids": dg.MetadataValue.json(list(summary.bulk_job_ids)),
        "duration_s": dg.MetadataValue.float(float(summary.duration_s)),
        "full_resync": dg.MetadataValue.bool(summary.full_resync),
        "sync_run_id": dg.MetadataValue.text(summary.run_id),
        "rows": dg.MetadataValue.int(summary.rows),
        **plan_counts(summary),
        # "staged": the plan `warehouse/<model>` made in this run; "warehouse": planned here.
        "plan_source": dg.MetadataValue.text(summary.plan_source),
        # Children whose parent record had not landed yet: pending, not rejected.
        "held": dg.MetadataValue.int(summary.held),
        # local | warehouse (docs/warehouses.md, "The warehouse diff engine"), and the
        # rows the plan read out of the warehouse.
        "diff_engine": dg.MetadataValue.text(summary.diff_engine),
        "rows_fetched": dg.MetadataValue.int(summary.rows_fetched),
    }
    if summary.full_read_reason:
        metadata["full_read_reason"] = dg.MetadataValue.text(summary.full_read_reason)
    if summary.held_reasons:
        metadata["held_reasons"] = dg.MetadataValue.json(dict(summary.held_reasons))
    if summary.superseded:
        metadata["superseded"] = dg.MetadataValue.int(summary.superseded)
    if summary.reconciled:
        metadata["reconciled"] = dg.MetadataValue.int(summary.reconciled)
    if summary.unconfirmed:
        metadata["unconfirmed"] = dg.MetadataValue.int(summary.unconfirmed)
    if summary.stopped_reason:
        metadata["stopped_reason"] = dg.MetadataValue.text(summary.stopped_reason)
    if summary.sync_log_url:
        # One row per row this run sent, refused or deleted (Parquet; README, "sync log").
        metadata["sync_log"] = _reject_url_value(summary.sync_log_url)
    if summary.sync_log_table:
        # The same rows in the warehouse (warehouse diff engine): join them to the model.
        metadata["sync_log_table"] = dg.MetadataValue.text(summary.sync_log_table)
    if summary.stopped:
        # budget | unreachable | auth | interrupted: what the alert sensor reads.
        metadata["stopped"] = dg.MetadataValue.text(summary.stopped)
    if summary.run_record_url:
        # The run record and request log beside the state (`sf-activation runs|inspect`).
        metadata["run_record"] = _reject_url_value(summary.run_record_url)
    return metadata


def _reject_url_value(url: str) -> dg.MetadataValue:
    if "://" in url:
        return dg.MetadataValue.url(url)
    return dg.MetadataValue.path(url)


REJECT_SAMPLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("primary_key", "string"),
        dg.TableColumn("error_code", "string"),
        dg.TableColumn("message", "string"),
        dg.TableColumn("fields", "string"),
        dg.TableColumn("attempts", "int"),
    ]
)


def reject_rate(spec: ModelSpec, summary: SyncSummary) -> tuple[int, int, float]:
    """(rejected rows, rows they are a share of, rate) as `rejected_rows` judges them.

    The rate is the share of the model's rows (plus mirror deletes) that did not land,
    so a model with a few permanently bad rows does not fail on every quiet run.
    """
    # The reject file also holds failed mirror deletes, which `rejected` does not count.
    count = max(sum(summary.reject_codes.values()), summary.rejected)
    denominator = summary.rows + (summary.removed if spec.operation == "mirror" else 0)
    return count, denominator, count / denominator if denominator else 0.0


def reject_check_result(spec: ModelSpec, summary: SyncSummary) -> dg.AssetCheckResult:
    """`rejected_rows`: WARN-severity pass at or below max_reject_rate, ERROR failure above."""
    codes = dict(summary.reject_codes)
    count, _, rate = reject_rate(spec, summary)
    passed = rate <= spec.max_reject_rate
    sample = [
        dg.TableRecord(
            {
                "primary_key": str(row.get("primary_key")),
                "error_code": str(row.get("error_code") or ""),
                "message": str(row.get("message") or "")[:300],
                "fields": ",".join(row.get("fields") or []),
                "attempts": int(row.get("attempts") or 0),
            }
        )
        for row in summary.reject_sample[:SAMPLE_ROWS]
    ]
    metadata: dict[str, Any] = {
        "count": dg.MetadataValue.int(count),
        "rate": dg.MetadataValue.float(round(rate, 6)),
        "max_reject_rate": dg.MetadataValue.float(spec.max_reject_rate),
        "by_error_code": dg.MetadataValue.json(dict(sorted(codes.items()))),
        "sample": dg.MetadataValue.table(sample, schema=REJECT_SAMPLE_SCHEMA),
    }
    if summary.rejects_url:
        metadata["reject_file"] = _reject_url_value(summary.rejects_url)
    if passed:
        description = (
            f"{count} rejected ({rate:.2%}), within max_reject_rate {spec.max_reject_rate:.2%}"
        )
    else:
        description = (
            f"{count} rejected ({rate:.2%}), above max_reject_rate {spec.max_reject_rate:.2%}"
        )
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN if passed else dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def definition_metadata(spec: ModelSpec, side: str) -> dict[str, Any]:
    """Shown under the asset's Definition tab: the model as written, no secrets."""
    metadata: dict[str, Any] = {
        "model_file": dg.MetadataValue.path(spec.display_path),
        "object": spec.object,
        "operation": spec.operation,
        "primary_key": spec.primary_key,
        "transport": spec.transport,
        "max_reject_rate": spec.max_reject_rate,
    }
    if spec.external_id:
        metadata["external_id"] = spec.external_id
    if spec.schedule:
        metadata["schedule"] = spec.schedule
    if side == "warehouse":
        metadata["sql"] = dg.MetadataValue.md(f"```sql\n{spec.sql_text.strip()}\n```")
        columns = [
            dg.TableColumn(column, "column", description=f"-> {spec.object}.{field}")
            for column, field in spec.fields.items()
        ]
    else:
        columns = [
            dg.TableColumn(field, "field", description=f"<- column {column}")
            for column, field in spec.fields.items()
        ]
    metadata["dagster/column_schema"] = dg.TableSchema(columns=columns)
    return metadata


def code_version(spec: ModelSpec) -> str:
    # Changes when the model file or its SQL changes, so the UI flags the assets as stale.
    digest = hashlib.sha256(spec.path.read_bytes() if spec.path.exists() else b"")
    digest.update(spec.sql_text.encode())
    return digest.hexdigest()[:12]
