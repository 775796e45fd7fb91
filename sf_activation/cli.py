"""The `sf-activation` command: validate, plan, sync, rejects, emulator.

Exit status: 0 the command completed (rejected rows are not a failure of a run);
1 the run could not complete (warehouse, Salesforce, storage); 2 bad usage or a model file
that cannot work; 3 refused for safety (a mirror run that would delete too much).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser(*, with_emulator: bool = True) -> argparse.ArgumentParser:
    """The command line. `with_emulator=False` leaves out the emulator's own options: they
    live in its server module, whose imports (uvicorn, starlette, cryptography) cost
    0.25 s that no other command needs. Its entry in `--help` stays the same."""
    parser = argparse.ArgumentParser(
        prog="sf-activation",
        description="Sync warehouse models into Salesforce (reverse ETL).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulator = commands.add_parser(
        "emulator",
        help="run the local Salesforce API emulator",
        description="Run a local Salesforce REST + Bulk API (1.0 and 2.0) emulator.",
    )
    if with_emulator:
        from sf_activation.emulator.server import configure_parser as configure_emulator

        configure_emulator(emulator)

    validate = commands.add_parser(
        "validate", help="check every model against the warehouse and Salesforce describe"
    )
    validate.add_argument("models", nargs="*", metavar="MODEL", help="default: every model")
    validate.add_argument("--json", action="store_true", help="print results as JSON")

    for name, text in (
        ("plan", "dry run: what a sync would send (sends nothing)"),
        ("sync", "sync one model into Salesforce"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("model", metavar="MODEL", help="model name (models/<name>.yml) or path")
        sub.add_argument(
            "--full-resync", action="store_true", help="send every row, changed or not"
        )
        sub.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
        sub.add_argument(
            "--progress",
            action="store_true",
            help="print progress lines on stderr, also when it is not a terminal (logs, CI)",
        )
        sub.add_argument(
            "--allow-deletes",
            action="store_true",
            help="mirror: allow deleting more than the model's max_delete_rate",
        )
        sub.add_argument(
            "--allow-reinsert",
            action="store_true",
            help=(
                "insert: create records although the model has no state and Salesforce "
                "already holds its first rows (a deliberate re-load)"
            ),
        )
        sub.add_argument(
            "--window",
            metavar="START..END",
            help=(
                "partitioned models: read only this window of partition_by.column "
                "(ISO dates or datetimes, END exclusive, no offset = UTC), "
                "e.g. 2024-01-01..2024-01-08"
            ),
        )
        if name == "sync":
            sub.add_argument("--run-id", help="run id to record (default: a new one)")

    rejects = commands.add_parser("rejects", help="show the rows a run rejected")
    rejects.add_argument("model", metavar="MODEL")
    rejects.add_argument("--run", dest="run_id", help="run id (default: the latest run)")
    rejects.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    rejects.add_argument("--json", action="store_true", help="print JSON Lines")

    runs = commands.add_parser("runs", help="list a model's recent sync runs, newest first")
    runs.add_argument("model", metavar="MODEL")
    runs.add_argument("--limit", type=int, default=20, help="runs to show (default 20)")
    runs.add_argument("--json", action="store_true", help="print one run record per line")

    inspect = commands.add_parser("inspect", help="show the Salesforce requests of a run")
    inspect.add_argument("model", metavar="MODEL")
    inspect.add_argument("--run", dest="run_id", help="run id (default: the latest run)")
    inspect.add_argument("--limit", type=int, default=200, help="requests to show (default 200)")
    inspect.add_argument("--json", action="store_true", help="print the log's JSON Lines")
    return parser


def _load_spec(model: str, settings: Any) -> Any:
    from sf_activation.models import load_model

    path = Path(model)
    if path.suffix not in (".yml", ".yaml"):
        path = settings.models_dir / f"{model}.yml"
    if not path.exists():
        raise CommandError(f"no model {model!r}: {path} does not exist", EXIT_USAGE)
    return load_model(path)


def _spec_for_window(spec: Any, text: str, settings: Any) -> tuple[Any, Any]:
    """`--window START..END`: the model reading only that window of its partition column."""
    from sf_activation.windows import Window, restrict_to_window

    try:
        window = Window.parse(text)
    except ValueError as exc:
        raise CommandError(f"--window: {exc}", EXIT_USAGE) from None
    if spec.partition_by is None:
        raise CommandError(
            f"--window: {spec.display_path} has no partition_by:, so model {spec.name!r} "
            "cannot be read one window at a time; run it without --window",
            EXIT_USAGE,
        )
    # Not aligned to the cadence is fine (a manual backfill); the window is read as given.
    return restrict_to_window(spec, window, settings.warehouse_url.get_secret_value()), window


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    Console().print(table)


def _progress_reporter(lines: bool = False) -> tuple[Any, Any]:
    """A progress bar on a terminal; with --progress, plain lines on stderr (a log, CI);
    nothing otherwise when output is piped (cron, Dagster)."""
    from sf_activation.cli_output import LineProgress, bar_progress

    if lines:
        return None, LineProgress()
    if not sys.stderr.isatty():
        return None, None
    return bar_progress()


SUMMARY_ORDER = (
    "rows",
    "invalid",
    "added",
    "changed",
    "unchanged",
    "pending",
    "removed",
    "sent",
    "succeeded",
    "failed",
    "retried",
    "deleted",
    "rejected",
    "reconciled",
    "unconfirmed",
    "api_calls",
    "transport",
    "duration_s",
)


def _print_summary(summary: Any, verb: str) -> None:
    data = summary.to_dict()
    print(f"{verb} {data['model']} ({data['operation']} {data['object']}), run {data['run_id']}")
    print("  " + "  ".join(f"{k}={data[k]}" for k in SUMMARY_ORDER if k in data))
    if data.get("set_if_empty_reads"):
        print(f"  set_if_empty_reads={data['set_if_empty_reads']} (of api_calls)")
    for change in data.get("sample_changes") or []:
        print(f"  ~ {json.dumps(change, default=str, ensure_ascii=False)}")
    if data.get("reject_codes"):
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(data["reject_codes"].items()))
        print(f"  rejected by reason: {codes}")
    if data.get("rejects_url"):
        print(f"  rejects: {data['rejects_url']}")
    if data.get("unconfirmed"):
        print(
            f"  unconfirmed: {data['unconfirmed']} rows whose create may have landed are held "
            "until Salesforce tells (OUTCOME_UNKNOWN in the reject file)"
        )
    if data.get("stopped_reason"):
        print(f"  stopped early: {data['stopped_reason']} (unsent rows stay pending)")


def _skip_pandas() -> None:
    """This process makes no pandas objects: spare it pyarrow's import of pandas (0.3-0.5 s;
    see sf_activation/warehouse/pandas_probe.py). Before the sync modules are imported,
    since some build Arrow values at import."""
    from sf_activation.warehouse.pandas_probe import skip_pandas_probe

    skip_pandas_probe()


def _report_to_dagster(spec: Any, summary: Any) -> None:
    """Show this CLI run on the asset page of the Dagster instance in DAGSTER_HOME. Only
    then is dagster imported; a failure to report is one warning, never a failed sync."""
    try:
        from sf_activation.dagster.cli_report import report_cli_sync

        report_cli_sync(spec, summary)
    except Exception as exc:  # the sync itself is done and saved
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"sf-activation: warning: could not record the run on the Dagster instance in "
            f"DAGSTER_HOME ({first}); the sync itself is saved",
            file=sys.stderr,
        )


def _cmd_plan_or_sync(args: argparse.Namespace, settings: Any) -> int:
    _skip_pandas()
    from sf_activation.sync import SyncRun

    spec = _load_spec(args.model, settings)
    window = None
    if args.window is not None:
        spec, window = _spec_for_window(spec, args.window, settings)
    progress, report = _progress_reporter(getattr(args, "progress", False))
    run = SyncRun(
        spec,
        settings,
        full_resync=args.full_resync,
        allow_deletes=args.allow_deletes,
        allow_reinsert=args.allow_reinsert,
        run_id=getattr(args, "run_id", None),
        progress=report,
        trigger="cli",
    )
    if progress is not None:
        progress.start()
    try:
        summary = run.dry_run() if args.command == "plan" else run.execute()
    except Exception as exc:
        from sf_activation.cli_output import state_read_error

        # A snapshot that is not Parquet: say where it is and the way out.
        message = state_read_error(exc, spec.name, settings.state_url)
        if message is None:
            raise
        raise CommandError(message, EXIT_FAILED) from exc
    finally:
        if progress is not None:
            progress.stop()
    if args.json:
        data = summary.to_dict()
        data.pop("reject_sample", None)
        if window is not None:
            data["window"] = str(window)
        print(json.dumps(data, default=str, ensure_ascii=False))
    elif args.command == "plan":
        from sf_activation.cli_output import print_plan

        print_plan(summary.to_dict())
        if window is not None:
            print(f"  window: {window} (of {spec.partition_by.column})")
    else:
        _print_summary(summary, "synced")
        if window is not None:
            print(f"  window: {window} (of {spec.partition_by.column})")
    if args.command == "sync" and os.environ.get("DAGSTER_HOME"):
        _report_to_dagster(spec, summary)
    if summary.stopped == "unreachable":
        # Confirmed rows are saved; the rest stay pending. A scheduler must see this run
        # did not finish its work.
        print(f"sf-activation: error: {spec.name}: {summary.stopped_reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace, settings: Any) -> int:
    _skip_pandas()
    from sf_activation.validation import validate_models

    results = validate_models(settings, only=args.models or None)
    if args.json:
        print(json.dumps(results))
    else:
        # One cause shared by several models (no credentials, an org that cannot be
        # reached) is said once, naming them all, not once per model.
        errors: dict[str, list[str]] = {}
        for result in results:
            if not result["ok"]:
                errors.setdefault(result["message"], []).append(result["model"])
        said: set[str] = set()
        for result in results:
            if result["ok"]:
                print(f"ok  {result['model']}: {result['message']}")
            elif result["message"] not in said:
                said.add(result["message"])
                print(f"ERR {', '.join(errors[result['message']])}: {result['message']}")
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_USAGE


def _cmd_rejects(args: argparse.Namespace, settings: Any) -> int:
    from sf_activation.cli_output import print_rejects
    from sf_activation.rejects import _read_lines, read_rejects

    if args.limit < 0:
        raise CommandError(f"--limit {args.limit}: give 0 or more rows", EXIT_USAGE)
    chosen, rows = read_rejects(settings.rejects_url, args.model, args.run_id, args.limit)
    if chosen is None:
        model_file = Path(args.model)
        if model_file.suffix not in (".yml", ".yaml"):
            model_file = settings.models_dir / f"{args.model}.yml"
        if not model_file.exists():
            # A typo must not read as "nothing was rejected": like `plan`, one line, exit 2.
            raise CommandError(f"no model {args.model!r}: {model_file} does not exist", EXIT_USAGE)
        print(f"no rejected rows recorded for {args.model}", file=sys.stderr)
        return EXIT_OK
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    # The file's rows are counted (not kept) so the table can say "2 of 5".
    total = sum(1 for _ in _read_lines(chosen.url))
    print(f"{chosen.url} (run {chosen.run_id})")
    print_rejects(rows, total)
    return EXIT_OK


def _cmd_runs(args: argparse.Namespace, settings: Any) -> int:
    from sf_activation.run_history import print_runs

    spec = _load_spec(args.model, settings)  # an unknown model: one line, exit 2
    return print_runs(spec.name, settings, limit=args.limit, as_json=args.json)


def _cmd_inspect(args: argparse.Namespace, settings: Any) -> int:
    from sf_activation.inspector import print_requests

    spec = _load_spec(args.model, settings)
    return print_requests(
        spec.name, settings, run_id=args.run_id, limit=args.limit, as_json=args.json
    )


def _describe_error(exc: BaseException) -> tuple[str, int]:
    """One line a user understands, and the exit status, for the errors we expect."""
    from sf_activation.diff import DeleteRateExceeded
    from sf_activation.lease import LeaseError, LeaseHeld
    from sf_activation.models import ModelError
    from sf_activation.rejects import RejectsError
    from sf_activation.salesforce.errors import MappingError, SalesforceError
    from sf_activation.state import StateError
    from sf_activation.warehouse import WarehouseError

    if isinstance(exc, CommandError):
        return str(exc), exc.exit_code
    from sf_activation.config import SettingsError

    if isinstance(exc, SettingsError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, ModelError | MappingError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, DeleteRateExceeded):
        return str(exc), EXIT_REFUSED
    if isinstance(exc, SalesforceError):
        return f"Salesforce: {exc}", EXIT_FAILED
    if isinstance(exc, WarehouseError):
        return f"warehouse: {exc}", EXIT_FAILED
    if isinstance(exc, RejectsError):
        return f"rejects: {exc}", EXIT_FAILED
    if isinstance(exc, StateError):
        return f"state: {exc}", EXIT_FAILED
    if isinstance(exc, LeaseHeld | LeaseError):
        return str(exc), EXIT_FAILED
    return f"{type(exc).__name__}: {exc}", EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Subcommands cannot be abbreviated, so without the word there is no emulator command
    # (a model named "emulator" only costs the full parser).
    parser = build_parser(with_emulator="emulator" in words)
    args = parser.parse_args(argv)
    if args.command == "emulator":
        from sf_activation.emulator.server import run as run_emulator

        return run_emulator(args)

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from sf_activation.interrupts import SyncInterrupted

    try:
        from sf_activation.config import Settings

        settings = Settings.from_env()
        handlers = {
            "validate": _cmd_validate,
            "plan": _cmd_plan_or_sync,
            "sync": _cmd_plan_or_sync,
            "rejects": _cmd_rejects,
            "runs": _cmd_runs,
            "inspect": _cmd_inspect,
        }
        return handlers[args.command](args, settings)
    except KeyboardInterrupt:
        # A second Ctrl-C: the calls in flight were waited for and committed on the way out.
        print(
            "sf-activation: interrupted; rows Salesforce confirmed are saved, rerun to resume",
            file=sys.stderr,
        )
        return 130
    except SyncInterrupted as exc:
        print(f"sf-activation: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:
        if args.debug:
            raise
        message, code = _describe_error(exc)
        print(f"sf-activation: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
