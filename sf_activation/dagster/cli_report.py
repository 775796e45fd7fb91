"""A sync run from the command line, recorded on the Dagster instance of DAGSTER_HOME.

A run started by `sf-activation sync` is not a Dagster run, yet it changes what
`salesforce/<model>` holds. When DAGSTER_HOME names an instance, the command reports the
run to it as a runless materialization of `salesforce/<model>` (the same metadata a
Dagster run records, plus `trigger: cli`) and an evaluation of its `rejected_rows` check,
so the asset's page shows CLI runs beside the others. Keys are the default translator's.
"""

from __future__ import annotations

import dagster as dg

from sf_activation.dagster.metadata import CHECK_NAME, reject_check_result, sync_metadata
from sf_activation.dagster.translator import salesforce_key
from sf_activation.models import ModelSpec
from sf_activation.summary import SyncSummary


def report_cli_sync(spec: ModelSpec, summary: SyncSummary) -> None:
    """Record the run on `dg.DagsterInstance.get()` (DAGSTER_HOME)."""
    key = salesforce_key(spec.name)
    instance = dg.DagsterInstance.get()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=key,
            description=f"sf-activation sync from the command line (run {summary.run_id})",
            metadata={**sync_metadata(summary), "trigger": dg.MetadataValue.text("cli")},
        )
    )
    check = reject_check_result(spec, summary)
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=CHECK_NAME,
            passed=check.passed,
            metadata=check.metadata,
            severity=check.severity,
            description=check.description,
        )
    )
