"""The model settings a state was made under, kept beside it, and what a change means.

State records Salesforce Ids and hashes of what was sent. Both are only meaningful for
the object, match field and null handling they were made with: after `object:` changes,
the recorded Ids are another object's records (a mirror would delete them by Id); after
`external_id:` changes, they were matched on another field; after `nulls: keep` becomes
`clear`, rows whose nulls were left alone now need those fields cleared, although their
hash (of the values) did not change. So every completed run writes
``{state}/{model}/synced_under.json``, and the next run compares:

- a different object or external id is refused before anything is sent, with the way out;
- a change of null handling re-sends every row once (`full_resync`), so Salesforce ends
  up holding what the model now says: of `nulls:`, or of the null mode a field ends up
  with (its `on_null:`, else `nulls:`), which changes no hash either.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

from sf_activation.models import ModelError, ModelSpec
from sf_activation.state import StateError, StateStore

FILE_NAME = "synced_under.json"


class SyncedUnder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    object: str
    operation: str
    external_id: str | None = None
    nulls: str
    # Salesforce field -> the null mode it was sent with (`on_null:`, else `nulls:`), for
    # every mapped field. None in files written before `on_null:` existed: read as
    # unchanged, so upgrading does not re-send every model.
    field_nulls: dict[str, str] | None = None

    @classmethod
    def of(cls, spec: ModelSpec) -> SyncedUnder:
        return cls(
            object=spec.object,
            operation=spec.operation,
            external_id=spec.external_id,
            nulls=spec.nulls,
            field_nulls=effective_nulls(spec),
        )


def effective_nulls(spec: ModelSpec) -> dict[str, str]:
    """Each mapped Salesforce field's null mode: its `on_null:`, else the model's `nulls:`."""
    modes: dict[str, str] = {}
    for sf_field in spec.fields.values():
        options = spec.field_options.get(sf_field)
        on_null = options.on_null if options is not None else None
        modes[sf_field] = on_null or spec.nulls
    return modes


def field_nulls_changed(recorded: dict[str, str] | None, now: dict[str, str]) -> bool:
    """Whether a field mapped both then and now has another null mode. A field added since
    is new to every row's hash anyway; one recorded before field modes were is unchanged."""
    if recorded is None:
        return False
    then = {name.lower(): mode for name, mode in recorded.items()}
    return any(then.get(name.lower(), mode) != mode for name, mode in now.items())


def read(state: StateStore) -> SyncedUnder | None:
    try:
        raw = state.read_bytes(FILE_NAME)
    except FileNotFoundError:
        return None
    try:
        return SyncedUnder.model_validate(json.loads(raw))
    except ValueError as exc:
        raise StateError(
            f"{state.url}/{FILE_NAME} is not readable ({exc}); delete it to accept the "
            "model as it is now"
        ) from None


def write(state: StateStore, spec: ModelSpec) -> None:
    state.write_bytes(FILE_NAME, SyncedUnder.of(spec).model_dump_json().encode())


def check(spec: ModelSpec, recorded: SyncedUnder | None, state: StateStore) -> bool:
    """Raise `ModelError` when the model now targets other records than its state holds;
    return True when the run must re-send every row (null handling changed: `nulls:` or
    a field's effective `on_null:`)."""
    if recorded is None:
        return False
    now = SyncedUnder.of(spec)
    where = spec.display_path
    if recorded.object.lower() != now.object.lower():
        raise ModelError(
            f"{where}: object: is {now.object} but the state at {state.url} was made syncing "
            f"{recorded.object}: its recorded Ids are {recorded.object} records (a mirror "
            f"would delete them by Id). Restore `object: {recorded.object}`, or move that "
            "state away to start the new object from nothing"
        )
    if (recorded.external_id or "").lower() != (now.external_id or "").lower() and (
        recorded.external_id and now.external_id
    ):
        raise ModelError(
            f"{where}: external_id: is {now.external_id} but the state at {state.url} was "
            f"made matching on {recorded.external_id}. Restore `external_id: "
            f"{recorded.external_id}`, or move that state away to match every row again on "
            f"{now.external_id}"
        )
    if recorded.nulls != now.nulls:
        return True
    return field_nulls_changed(recorded.field_nulls, now.field_nulls or {})
