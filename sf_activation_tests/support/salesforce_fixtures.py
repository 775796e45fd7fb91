"""Describe-format objects for the Salesforce client tests.

The shapes (keys, types, flags, lengths) follow what `GET sobjects/X/describe` returns on
a real org. `Widget__c` is a custom object written for these tests: one field of every
type the client coerces, a lookup to Account through `Account__r`, and an External ID.
It is also handed to the emulator with `--schema` for the over-HTTP tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def field(
    name: str,
    type_: str,
    *,
    label: str | None = None,
    length: int = 0,
    createable: bool = True,
    updateable: bool = True,
    nillable: bool = True,
    external_id: bool = False,
    reference_to: list[str] | None = None,
    relationship: str | None = None,
    picklist: list[str] | None = None,
    restricted: bool = False,
    precision: int = 0,
    scale: int = 0,
    digits: int = 0,
    custom: bool | None = None,
) -> dict[str, Any]:
    soap = {
        "string": "xsd:string",
        "boolean": "xsd:boolean",
        "int": "xsd:int",
        "double": "xsd:double",
        "currency": "xsd:double",
        "percent": "xsd:double",
        "date": "xsd:date",
        "datetime": "xsd:dateTime",
        "id": "tns:ID",
        "reference": "tns:ID",
    }.get(type_, "xsd:string")
    return {
        "aggregatable": True,
        "autoNumber": False,
        "byteLength": length * 3,
        "calculated": False,
        "caseSensitive": False,
        "createable": createable,
        "custom": name.endswith("__c") if custom is None else custom,
        "defaultValue": None,
        "defaultedOnCreate": False,
        "digits": digits,
        "externalId": external_id,
        "filterable": True,
        "idLookup": external_id or type_ == "id",
        "label": label or name.removesuffix("__c").replace("_", " "),
        "length": length,
        "name": name,
        "nillable": nillable,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in (picklist or [])
        ],
        "precision": precision,
        "referenceTo": reference_to or [],
        "relationshipName": relationship,
        "restrictedPicklist": restricted,
        "scale": scale,
        "soapType": soap,
        "type": type_,
        "unique": external_id,
        "updateable": updateable,
    }


def obj(name: str, key_prefix: str, fields: list[dict[str, Any]], **flags: Any) -> dict[str, Any]:
    return {
        "name": name,
        "label": name.removesuffix("__c").replace("_", " "),
        "labelPlural": name.removesuffix("__c") + "s",
        "custom": name.endswith("__c"),
        "createable": flags.get("createable", True),
        "updateable": flags.get("updateable", True),
        "deletable": flags.get("deletable", True),
        "queryable": True,
        "keyPrefix": key_prefix,
        "fields": fields,
        "childRelationships": [],
        "recordTypeInfos": [],
        "urls": {},
    }


def account_describe() -> dict[str, Any]:
    """A subset of a real Account describe plus the External_Id__c the emulator adds."""
    return obj(
        "Account",
        "001",
        [
            field("Id", "id", label="Account ID", length=18, createable=False, updateable=False,
                  nillable=False, custom=False),
            field("Name", "string", label="Account Name", length=255, nillable=False),
            field("ParentId", "reference", label="Parent Account ID", length=18,
                  reference_to=["Account"], relationship="Parent"),
            field("OwnerId", "reference", label="Owner ID", length=18, reference_to=["User"],
                  relationship="Owner"),
            field("AccountNumber", "string", label="Account Number", length=40),
            field("Industry", "picklist", length=255, picklist=["Banking", "Energy"]),
            field("AnnualRevenue", "currency", label="Annual Revenue", precision=18),
            field("NumberOfEmployees", "int", label="Employees", digits=8),
            field("CreatedDate", "datetime", label="Created Date", createable=False,
                  updateable=False),
            field("IsPartner", "boolean", label="Partner Account", createable=False),
            field("External_Id__c", "string", label="External ID", length=255, external_id=True),
        ],
    )  # fmt: skip


def widget_describe() -> dict[str, Any]:
    """A custom object with one field of each coerced type and a lookup to Account."""
    return obj(
        "Widget__c",
        "a0W",
        [
            field("Id", "id", label="Record ID", length=18, createable=False, updateable=False,
                  nillable=False, custom=False),
            field("Name", "string", label="Widget Name", length=80, custom=False),
            field("Ext__c", "string", label="Widget Key", length=64, external_id=True),
            field("Count__c", "int", digits=9),
            field("Price__c", "currency", precision=16, scale=2),
            field("Ratio__c", "percent", precision=5, scale=2),
            field("Weight__c", "double", precision=18, scale=4),
            field("Active__c", "boolean", nillable=False),
            field("Launch__c", "date"),
            field("Seen__c", "datetime"),
            field("Tier__c", "picklist", length=255, picklist=["Gold", "Silver", "Bronze"],
                  restricted=True),
            field("Regions__c", "multipicklist", length=4099, picklist=["EU", "US", "APAC"],
                  restricted=True),
            field("Notes__c", "textarea", length=1000),
            field("Code__c", "string", length=10),
            field("Account__c", "reference", label="Account", length=18,
                  reference_to=["Account"], relationship="Account__r"),
            field("Formula__c", "string", length=50, createable=False, updateable=False),
            field("Once__c", "string", length=50, updateable=False),
        ],
    )  # fmt: skip


def write_schema_dir(directory: Path) -> Path:
    """A `--schema` directory for the emulator holding Widget__c."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Widget__c.json").write_text(json.dumps(widget_describe(), indent=1))
    return directory


def client_settings(handle: Any, **overrides: Any) -> Any:
    """SalesforceSettings for an emulator handle: refresh-token flow through its login URL."""
    from sf_activation.config import SalesforceSettings

    values: dict[str, Any] = {
        "instance_url": handle.instance_url,
        "login_url": handle.instance_url,
        "client_id": "test-client",
        "client_secret": "client-secret-value-1",
        "refresh_token": "refresh-token-value-1",
        "ca_bundle": handle.ca_bundle,
    }
    values.update(overrides)
    return SalesforceSettings(**{k: v for k, v in values.items() if v is not None})


def fast_client(handle: Any, **overrides: Any) -> Any:
    """A client with test-speed backoff and Bulk polling."""
    from sf_activation.salesforce import BulkSettings, RetryPolicy, SalesforceClient

    bulk = overrides.pop("bulk", None) or BulkSettings(poll_initial=0.05, poll_max=0.2)
    retry = overrides.pop("retry", None) or RetryPolicy(
        max_attempts=8, base_delay=0.02, max_delay=0.3
    )
    return SalesforceClient.from_settings(
        client_settings(handle, **overrides), retry=retry, bulk=bulk
    )
