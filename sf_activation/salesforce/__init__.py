"""Salesforce client: auth, describe + coercion, sObject Collections, Bulk API 2.0, errors.

Nothing here imports dagster or the emulator. See docs/internals.md for the seams.

The names below are imported on first use (PEP 562): a module that needs only
`sf_activation.salesforce.outcomes` or `.errors` (the CLI's error handling, interrupts)
must not pay for the HTTP client and the Bulk machinery by importing this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sf_activation.salesforce.auth import SalesforceSession
    from sf_activation.salesforce.bulk import BulkSettings
    from sf_activation.salesforce.client import SalesforceClient
    from sf_activation.salesforce.coerce import coerce_batch, output_schema
    from sf_activation.salesforce.describe import FieldDescribe, ObjectDescribe, validate_mapping
    from sf_activation.salesforce.errors import (
        ApiLimitError,
        AuthenticationError,
        MappingError,
        RequestError,
        SalesforceError,
        TransientError,
    )
    from sf_activation.salesforce.outcomes import (
        KEY_COLUMN,
        Outcomes,
        RecordOutcome,
        RetryPolicy,
        SendReport,
        SendRequest,
        choose_transport,
    )

# Exported name -> the submodule that defines it.
_EXPORTS = {
    "SalesforceSession": "auth",
    "BulkSettings": "bulk",
    "SalesforceClient": "client",
    "coerce_batch": "coerce",
    "output_schema": "coerce",
    "FieldDescribe": "describe",
    "ObjectDescribe": "describe",
    "validate_mapping": "describe",
    "ApiLimitError": "errors",
    "AuthenticationError": "errors",
    "MappingError": "errors",
    "RequestError": "errors",
    "SalesforceError": "errors",
    "TransientError": "errors",
    "KEY_COLUMN": "outcomes",
    "Outcomes": "outcomes",
    "RecordOutcome": "outcomes",
    "RetryPolicy": "outcomes",
    "SendReport": "outcomes",
    "SendRequest": "outcomes",
    "choose_transport": "outcomes",
}

__all__ = [
    "KEY_COLUMN",
    "ApiLimitError",
    "AuthenticationError",
    "BulkSettings",
    "FieldDescribe",
    "MappingError",
    "ObjectDescribe",
    "Outcomes",
    "RecordOutcome",
    "RequestError",
    "RetryPolicy",
    "SalesforceClient",
    "SalesforceError",
    "SalesforceSession",
    "SendReport",
    "SendRequest",
    "TransientError",
    "choose_transport",
    "coerce_batch",
    "output_schema",
    "validate_mapping",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # Also how `from sf_activation.salesforce import bulk` finds a not-yet-imported
        # submodule: the import system falls back to importing it.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
