"""The send ledger: creates handed to Salesforce whose outcome is not yet in state.

A create (`insert`) is the one write Salesforce cannot deduplicate: sent twice, it makes
two records. So before a create call or a Bulk job's upload leaves, the sync records here
what it is about to send, durably, beside the state (``{state}/{model}/ledger/``); once the
outcomes are committed to state the entry is removed. An entry that outlives its run —
the process was killed, the answer was lost after Salesforce applied the call, the job's
results could not be downloaded — is reconciled by the next run before it plans
(`sf_activation/reconcile.py`): by the Bulk job's id, or by asking Salesforce for the
records the call created. Its rows are never sent again blindly.

Like dlt's load packages (a job file moves from new to started to completed, and a load
finishes started jobs first), an entry is a file whose presence means "started, outcome
not yet recorded". Each is one Parquet file: the rows as planned (primary key, hash,
payload, field values) with what was sent in the file's metadata.

Upsert, update and delete are matched by Id or External ID, so Salesforce itself makes a
repeat harmless; they are not recorded here (a durable write per call would cost more
than the call — see docs/reliability.md).

When the model's state keeps digests of its keys (its key is redacted), an entry's
``__pk`` is the digest, as in state, and the unmasked ``__payload`` is left out (the
masked ``__stored_payload`` is what state records).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from sf_activation.in_flight import InFlight
from sf_activation.state import (
    PK_FORM_KEY,
    STATE_KEY_COLUMN,
    StateError,
    StateStore,
    is_digest,
    state_keys,
)
from sf_activation.testhooks import kill_point  # test hook: no-op unless set

LEDGER_DIR = "ledger"
_META_KEY = b"sf_activation.ledger"


class EntryInfo(BaseModel):
    """What was sent, as written in an entry's metadata."""

    run_id: str
    object: str
    operation: str
    sent_at: str  # ISO-8601 UTC by the sending worker's clock
    bulk_job_id: str | None = None

    @property
    def sent_at_dt(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.sent_at)


@dataclass
class LedgerEntry:
    name: str
    info: EntryInfo
    # The planned rows: __pk (as state keeps it), __hash, __payload or __stored_payload,
    # the field columns.
    rows: pa.Table


class SendLedger:
    """Entries of one model's ledger, in the model's state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._n = 0

    def record(
        self, rows: pa.Table, *, object_name: str, operation: str, bulk_job_id: str | None = None
    ) -> str:
        """Write one entry; durable when it returns. Returns its name."""
        self._n += 1
        name = f"{self.store.run_id}-{self._n:06d}.parquet"
        info = EntryInfo(
            run_id=self.store.run_id,
            object=object_name,
            operation=operation,
            sent_at=dt.datetime.now(dt.UTC).isoformat(),
            bulk_job_id=bulk_job_id,
        )
        if self.store.digests_keys:
            rows = _as_state_keeps(rows)
        self.store.write_table(
            f"{LEDGER_DIR}/{name}", rows, {_META_KEY: info.model_dump_json().encode()}
        )
        kill_point("ledger_recorded")  # test hook
        return name

    def remove(self, names: list[str]) -> None:
        if names:
            self.store.delete_files([f"{LEDGER_DIR}/{n}" for n in names])

    def names(self) -> list[str]:
        return self.store.list_files(LEDGER_DIR)

    def entries(self) -> list[LedgerEntry]:
        """Every entry left in the store, oldest run first."""
        out: list[LedgerEntry] = []
        for name in self.names():
            table = self.store.read_table(f"{LEDGER_DIR}/{name}")
            raw = (table.schema.metadata or {}).get(_META_KEY)
            if raw is None:
                raise StateError(
                    f"{self.store.url}/{LEDGER_DIR}/{name} is not a ledger entry (no metadata); "
                    "move it away if it was put there by hand"
                )
            info = EntryInfo.model_validate(json.loads(raw))
            digested = PK_FORM_KEY in (table.schema.metadata or {})
            table = table.replace_schema_metadata(None)
            if self.store.digests_keys and not digested and table.num_rows:
                # Written before the model redacted its key (or by an earlier version):
                # its keys are compared with state's digests, and its payload may become
                # state's, so both take the form state keeps.
                table = self.store.digest_entry(table)
            out.append(LedgerEntry(name, info, table))
        out.sort(key=lambda e: (e.info.sent_at, e.name))
        return out


class LedgerTracker:
    """Which ledger entry each key in flight belongs to, so an entry is removed as soon as
    every one of its rows has a known outcome committed to state, and kept when any row's
    outcome is unknown (the reconciliation reads it again)."""

    def __init__(self, ledger: SendLedger) -> None:
        self.ledger = ledger
        self._entry_of: dict[int, str] = {}
        self._row_of: dict[int, int] = {}  # a key's row in its entry
        self._left: dict[str, int] = {}
        self.unknown: set[str] = set()
        # Entry -> its rows whose outcome was unknown. The others' outcomes are already
        # committed (and counted): a reconciliation later in the run, which reads a Bulk
        # job whole, leaves them alone.
        self.unknown_rows: dict[str, set[int]] = {}

    def record(self, keys: list[int], rows: pa.Table, **info: str | None) -> str:
        """Write the entry for `keys`. Keys already in an entry are being sent again (a
        Bulk job aborted before it was closed, rows a job failed transiently): the new
        entry covers them, and the old one goes once nothing else of it is outstanding."""
        name = self.ledger.record(rows, **info)  # type: ignore[arg-type]
        moved: dict[str, int] = {}
        for key in keys:
            old = self._entry_of.get(key)
            if old is not None:
                moved[old] = moved.get(old, 0) + 1
            self._entry_of[key] = name
        # `rows` are the keys' rows as `InFlight.rows` gives them: by batch, in key order
        # within each.
        numbers, _ = InFlight.locate_keys(keys)
        for row, i in enumerate(np.argsort(numbers, kind="stable").tolist()):
            self._row_of[keys[i]] = row
        self._left[name] = len(keys)
        done = []
        for old, n in moved.items():
            self._left[old] -= n
            if self._left[old] <= 0:
                del self._left[old]
                if old not in self.unknown:
                    done.append(old)
        self.ledger.remove(done)
        return name

    @property
    def active(self) -> bool:
        """Whether any key in flight belongs to an entry (only creates are recorded)."""
        return bool(self._entry_of)

    def settled(self, keys: list[int], unknown: list[bool]) -> None:
        """`keys` have outcomes now committed; remove the entries that are done."""
        done: list[str] = []
        for key, is_unknown in zip(keys, unknown, strict=True):
            name = self._entry_of.pop(key, None)
            row = self._row_of.pop(key, None)
            if name is None:
                continue
            if is_unknown:
                self.unknown.add(name)
                if row is not None:
                    self.unknown_rows.setdefault(name, set()).add(row)
            self._left[name] -= 1
            if self._left[name] == 0:
                del self._left[name]
                if name not in self.unknown:
                    done.append(name)
        self.ledger.remove(done)


def _as_state_keeps(rows: pa.Table) -> pa.Table:
    """An entry's rows for a state that keeps digests: `__pk` is the plan's digest (what
    state records when the outcome is known), the unmasked payload left out."""
    keys = state_keys(rows)
    if not pc.all(is_digest(keys)).as_py():
        # Only plan rows carry the digest; anything else is a bug, and never written.
        raise StateError(f"{STATE_KEY_COLUMN} missing from rows recorded in the ledger")
    rows = rows.set_column(rows.schema.get_field_index("__pk"), "__pk", keys)
    drop = [STATE_KEY_COLUMN] if STATE_KEY_COLUMN in rows.column_names else []
    if "__stored_payload" in rows.column_names and "__payload" in rows.column_names:
        drop.append("__payload")
    return rows.drop_columns(drop)
