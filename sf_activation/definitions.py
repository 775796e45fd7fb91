"""The Dagster code location: every model file in SF_ACTIVATION_MODELS_DIR becomes assets,
a check, a job and (with `schedule:`) a schedule. Adding a model never needs Python.

`dagster dev` / `dagster definitions validate` find this module through `workspace.yaml`
or `[tool.dagster]` in pyproject.toml. The Dagster layer itself is `sf_activation.dagster`;
what each piece shows in the UI: docs/dagster.md.
"""

import dagster as dg

from sf_activation.dagster.definitions import (
    ALL_JOB_NAME,
    AUTOMATION_SENSOR_NAME,
    SyncConfig,
    build_definitions,
    job_name,
    resolve_models_dir,
    schedule_name,
)

__all__ = [
    "ALL_JOB_NAME",
    "AUTOMATION_SENSOR_NAME",
    "SyncConfig",
    "build_definitions",
    "defs",
    "job_name",
    "resolve_models_dir",
    "schedule_name",
]


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(resolve_models_dir())
