"""``portal``: the command line operators script and tests drive.

Each sub-command lives in its own module with a ``register(subparsers)``
function; this module only assembles them.
"""

from __future__ import annotations

import argparse
import sys

from edge.settings import ConfigError, settings_help

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from edge.cli import (
        accounts,
        auditlog,
        catalog,
        dev,
        inbox,
        jobs,
        keys,
        ledger,
        migrate,
        overview,
        payments,
        serve,
        simnode,
        workers,
    )

    parser = argparse.ArgumentParser(
        prog="portal",
        description="Inference Portal: sell and serve LLM inference from your own GPU nodes.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (migrate, catalog, keys, accounts, ledger, jobs, payments, inbox, auditlog,
                   overview, serve, workers, simnode, dev):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"portal: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
