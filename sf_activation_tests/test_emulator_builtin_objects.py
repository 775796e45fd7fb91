"""The emulator's built-in describes agree with describes recorded from real orgs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sf_activation.emulator.builtin_objects import builtin_describes

REAL_ORG = Path("/work/shared/data/real-org")
COMPARED = (
    "type",
    "length",
    "nillable",
    "createable",
    "updateable",
    "externalId",
    "referenceTo",
    "relationshipName",
)
OBJECTS = ("Account", "Contact", "Lead", "Opportunity", "Case", "User", "Organization")


def _real_describe(name: str) -> dict[str, Any] | None:
    path = REAL_ORG / f"describe_{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def test_all_expected_objects_are_built_in() -> None:
    assert set(OBJECTS) <= set(builtin_describes())


@pytest.mark.parametrize("name", OBJECTS)
def test_fields_agree_with_real_org(name: str) -> None:
    if not REAL_ORG.is_dir():
        pytest.skip("recorded real-org data not available")
    real = _real_describe(name)
    if real is None:
        pytest.skip(f"no recorded describe for {name}")
    ours = builtin_describes()[name]
    assert ours["keyPrefix"] == real["keyPrefix"]
    assert ours["label"] == real["label"]
    assert ours["labelPlural"] == real["labelPlural"]
    real_fields = {f["name"]: f for f in real["fields"]}
    compared = 0
    mismatches = []
    for field in ours["fields"]:
        recorded = real_fields.get(field["name"])
        if recorded is None:
            continue
        compared += 1
        for key in COMPARED:
            if field[key] != recorded[key]:
                mismatches.append(
                    f"{name}.{field['name']}.{key}: {field[key]!r} != {recorded[key]!r}"
                )
        if field["type"] in ("picklist", "multipicklist"):
            assert [p["value"] for p in field["picklistValues"]] == [
                p["value"] for p in recorded["picklistValues"]
            ], f"{name}.{field['name']} picklist values"
    assert not mismatches, "\n".join(mismatches)
    assert compared >= 10


def test_global_describe_agrees_for_user_and_organization() -> None:
    path = REAL_ORG / "global.json"
    if not path.exists():
        pytest.skip("recorded global describe not available")
    recorded = {s["name"]: s for s in json.loads(path.read_text())["sobjects"]}
    ours = builtin_describes()
    for name in OBJECTS:
        for key in ("keyPrefix", "label", "labelPlural", "createable", "updateable", "queryable"):
            if recorded[name][key] is not None:  # some recordings elide key prefixes
                assert ours[name][key] == recorded[name][key], f"{name}.{key}"


@pytest.mark.parametrize("name", OBJECTS)
def test_describe_has_the_shape_clients_read(name: str) -> None:
    describe = builtin_describes()[name]
    for key in ("name", "label", "labelPlural", "custom", "createable", "updateable", "deletable"):
        assert key in describe
    assert describe["urls"]["sobject"].endswith(f"/sobjects/{name}")
    names = [f["name"] for f in describe["fields"]]
    assert len(names) == len(set(names)), "duplicate field names"
    fields = {f["name"]: f for f in describe["fields"]}
    assert fields["Id"]["type"] == "id" and fields["Id"]["idLookup"]
    for audit in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        assert not fields[audit]["createable"] and not fields[audit]["updateable"]
    for field in describe["fields"]:
        # Round-trips through JSON (the server sends it as is).
        assert json.loads(json.dumps(field)) == field
        if field["type"] == "reference":
            assert field["referenceTo"], field["name"]
            assert field["length"] == 18
        if field["type"] in ("picklist", "multipicklist"):
            assert field["picklistValues"], field["name"]
            for value in field["picklistValues"]:
                assert set(value) == {"active", "value", "label", "defaultValue", "validFor"}
    # Parses the way the client's describe model and simple-salesforce users need.
    required = [
        f["name"]
        for f in describe["fields"]
        if f["createable"] and not f["nillable"] and not f["defaultedOnCreate"]
    ]
    expected_required = {
        "Account": ["Name"],
        "Contact": ["LastName"],
        "Lead": ["LastName", "Company"],
        "Opportunity": ["Name", "StageName", "CloseDate"],
        "Case": [],
    }
    if name in expected_required:
        assert required == expected_required[name]


@pytest.mark.parametrize("name", ("Account", "Contact", "Lead", "Opportunity"))
def test_external_id_field_for_upserts(name: str) -> None:
    fields = {f["name"]: f for f in builtin_describes()[name]["fields"]}
    ext = fields["External_Id__c"]
    assert ext["externalId"] and ext["unique"] and ext["idLookup"] and ext["custom"]
    assert (ext["type"], ext["length"]) == ("string", 255)


def test_relationships_resolve_one_level_up() -> None:
    describes = builtin_describes()
    account = {f["name"]: f for f in describes["Account"]["fields"]}
    assert (account["ParentId"]["referenceTo"], account["ParentId"]["relationshipName"]) == (
        ["Account"],
        "Parent",
    )
    children = {
        (c["childSObject"], c["relationshipName"])
        for c in describes["Account"]["childRelationships"]
    }
    assert {
        ("Contact", "Contacts"),
        ("Opportunity", "Opportunities"),
        ("Account", "ChildAccounts"),
    } <= (children)


def test_describes_are_independent_copies() -> None:
    first = builtin_describes()
    first["Account"]["fields"].clear()
    assert builtin_describes()["Account"]["fields"]
