"""Salesforce client: auth, describe + coercion, sObject Collections, Bulk API 2.0, errors.

Nothing here imports dagster or the emulator. See docs/internals.md for the seams.
"""

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
