"""What `sf-activation` prints for people: the plan, the rejects table, progress lines, and
one-line forms of errors that would otherwise reach the terminal as a class name or a
traceback. Kept apart from cli.py so the command's wiring stays small; `--json` output
is built in cli.py and is not shaped here."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any, TextIO

# Field values longer than this are cut in the changes table: the table is for a glance,
# the JSON summary (`--json`) carries the values whole.
CELL_CHARS = 40
CHANGE_ROWS = 5  # records shown in the plan's changes table
CHANGE_LINES = 12  # lines of it at most: an added record lists every field
KEYS_PER_CODE = 3  # primary keys named per invalid-row code


def terminal_width(default: int = 100) -> int:
    """The terminal's width, or COLUMNS, or `default` when output is piped."""
    return max(40, shutil.get_terminal_size((default, 24)).columns)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(str(text).split())  # one line per cell: newlines and tabs flattened
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _columns(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def change_rows(samples: list[dict[str, Any]]) -> list[list[str]]:
    """One row per changed field of each sampled record: key, class, field, before, after.
    A masked (`redact:`) field shows its mask on both sides."""
    rows: list[list[str]] = []
    for sample in samples[:CHANGE_ROWS]:
        pk, cls = _cell(sample.get("pk")), str(sample.get("class", ""))
        changes = sample.get("changes") or {}
        if not changes:
            rows.append([pk, cls, "(no field differs)", "", ""])
        for field, change in changes.items():
            if isinstance(change, dict):
                before = _cell(change["before"]) if "before" in change else "—"
                after = _cell(change.get("after"))
            else:  # a masked value: the mask stands in for both sides
                before = after = _cell(change)
            rows.append([pk, cls, field, before, after])
    return rows


def print_plan(data: dict[str, Any], out: TextIO | None = None) -> None:
    """What a sync would do, from a dry run's summary: rows to send by class and how, the
    deletes a mirror would make, the invalid rows by code, a few field-level changes.
    Counters only a sync fills (sent, succeeded, api retries…) are left out."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    say(
        f"planned {data['model']} ({data['operation']} {data['object']}), run "
        f"{data['run_id']}: nothing was sent"
    )
    classes = ["added", "changed", "pending"]
    if data.get("full_resync"):
        classes.append("unchanged")
    parts = "  ".join(f"{c}={data.get(c, 0)}" for c in classes)
    to_send = data.get("to_send", sum(int(data.get(c, 0)) for c in classes))
    say(f"  to_send={to_send}  ({parts})  transport={data.get('transport')}")
    kept = [f"rows={data.get('rows', 0)}"]
    if not data.get("full_resync"):
        kept.append(f"unchanged={data.get('unchanged', 0)} (not sent)")
    kept.append(f"invalid={data.get('invalid', 0)} (never sent)")
    say("  " + "  ".join(kept))
    if data.get("operation") == "mirror":
        say(f"  deletes={data.get('removed', 0)}  (records whose rows left the model)")
    codes: dict[str, int] = data.get("invalid_codes") or {}
    keys: dict[str, list[Any]] = data.get("invalid_keys") or {}
    if codes:
        say("  invalid rows by reason (a sync writes them to the reject file):")
        for code, count in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
            shown = [
                "(no key)" if k is None else str(k) for k in keys.get(code, [])[:KEYS_PER_CODE]
            ]
            more = f", … {count - len(shown)} more" if count > len(shown) else ""
            say(f"    {code} ({count}): {', '.join(shown)}{more}")
    samples = data.get("sample_changes") or []
    if samples:
        rows = change_rows(samples)
        shown = rows[:CHANGE_LINES]
        records = len({r[0] for r in shown})
        say(f"  changes (field by field, {records} of {to_send} records):")
        for line in _columns(shown, ["primary_key", "class", "field", "before", "after"]):
            say("    " + line)
        if len(rows) > len(shown):
            say(f"    … {len(rows) - len(shown)} more field values in --json")


def print_rejects(
    rows: list[dict[str, Any]], total: int, *, width: int | None = None, out: TextIO | None = None
) -> None:
    """The rejects as a table that fits the terminal: the key, code, attempts and fields
    are never cut (the code is what a user searches for); the message wraps in what is
    left, or goes on its own lines under the row when too little is left."""
    out = out or sys.stdout
    width = width or terminal_width()
    header = ["primary_key", "error_code", "attempts", "fields"]
    table = [
        [
            str(r.get("primary_key")),
            str(r.get("error_code") or ""),
            str(r.get("attempts") if r.get("attempts") is not None else ""),
            ",".join(r.get("fields") or []),
        ]
        for r in rows
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    left = sum(widths) + 2 * len(widths)
    room = width - left
    inline = room >= 24

    def fixed(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    print(fixed(header) + ("  message" if inline else ""), file=out)
    for cells, row in zip(table, rows, strict=True):
        message = " ".join(str(row.get("message") or "").split())
        if inline:
            lines = textwrap.wrap(message, room) or [""]
            print((fixed(cells) + "  " + lines[0]).rstrip(), file=out)
            for line in lines[1:]:
                print(" " * left + line, file=out)
        else:
            print(fixed(cells).rstrip(), file=out)
            for line in textwrap.wrap(message, max(20, width - 4)):
                print("    " + line, file=out)
    shown = len(rows)
    print(f"{shown} of {total} rejected rows" + (" (--limit)" if shown < total else ""), file=out)


class LineProgress:
    """Progress as plain lines on stderr (`--progress`, or any stream that is not a
    terminal): one line when a phase or a Bulk job's state changes, then at most one a
    second, so a log shows a long Bulk job moving rather than nothing until it ends."""

    def __init__(self, out: TextIO | None = None, every_s: float = 1.0) -> None:
        self.out = out or sys.stderr
        self.every_s = every_s
        self._last: dict[str, tuple[str, float]] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        key, _, detail = phase.partition(":")
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and last[0] == detail and now - last[1] < self.every_s:
            return
        self._last[key] = (detail, now)
        amount = f"{done}/{total}" if total else str(done)
        label = f"{key} {detail}" if detail else key
        print(f"progress: {label} {amount}", file=self.out, flush=True)


def bar_progress() -> tuple[Any, Callable[[str, int, int], None]]:
    """A progress bar per phase on a terminal (rich); a Bulk job's state is shown in its
    bar's description (`bulk:InProgress` → one `bulk` bar saying InProgress)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True
    )
    tasks: dict[str, Any] = {}

    def report(phase: str, done: int, total: int) -> None:
        key, _, detail = phase.partition(":")
        label = f"{key} {detail}" if detail else key
        if key not in tasks:
            tasks[key] = progress.add_task(label, total=total or None)
        progress.update(tasks[key], completed=done, total=total or None, description=label)

    return progress, report


def state_read_error(exc: BaseException, model: str, state_url: str) -> str | None:
    """A state snapshot that cannot be read (truncated, overwritten, not Parquet), said with
    where it is and the way out, instead of pyarrow's or DuckDB's words alone."""
    from sf_activation.warehouse import WarehouseError

    if isinstance(exc, WarehouseError):  # a model's own read_parquet(...) is the warehouse's
        return None
    text = str(exc)
    lowered = text.lower()
    if "parquet" not in lowered and "magic bytes" not in lowered:
        return None
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(exc).__name__
    where = f"{state_url.rstrip('/')}/{model}"
    return (
        f"state: the state of {model} in {where} cannot be read ({first}); restore it from a "
        f"backup, or move {where} aside and rerun (every row is then planned as new: upsert "
        "and mirror match Salesforce's records by their External ID, insert refuses without "
        "--allow-reinsert)"
    )


def first_line(text: str) -> str:
    """The first non-empty line of a driver's message, whitespace collapsed."""
    for line in str(text).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""
