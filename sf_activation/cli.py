"""The `sf-activation` command."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sf-activation",
        description="Sync warehouse models into Salesforce (reverse ETL).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from sf_activation.emulator.server import configure_parser as configure_emulator

    configure_emulator(
        commands.add_parser(
            "emulator",
            help="run the local Salesforce API emulator",
            description="Run a local Salesforce REST + Bulk API 2.0 emulator.",
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "emulator":
        from sf_activation.emulator.server import run as run_emulator

        return run_emulator(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
