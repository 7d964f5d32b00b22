"""``portal audit list``: what operators changed, newest first (:mod:`edge.audit`)."""

from __future__ import annotations

import argparse
import json

from edge.audit import entry_view, recent
from edge.cli.runtime import CommandContext, print_table, run_command

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="the operators' audit log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    listing = audit.add_parser("list", help="changes, newest first")
    listing.add_argument("--target", help="only this target, like node:3 or key:7")
    listing.add_argument("--action", help="only this action, like key.revoke")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_cmd(c, a)))


async def list_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [entry_view(e) for e in await recent(target=args.target, action=args.action,
                                                limit=max(1, args.limit))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table([{**r, "created_at": r["created_at"][:19]} for r in rows],
                ["id", "created_at", "actor", "action", "target"])
    return 0
