"""``portal contact list``: the contact page's messages, newest first, and whether each
was mailed (the inbox is SQL's: a message the mail server refused is still here)."""

from __future__ import annotations

import argparse
import json

from edge.cli.runtime import CommandContext, print_table, run_command
from edge.contact.inbox import message_view, recent

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    contact = commands.add_parser("contact", help="messages from the contact page") \
        .add_subparsers(dest="contact_command", metavar="ACTION", required=True)
    listing = contact.add_parser("list", help="messages, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_cmd(c, a)))


async def list_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [message_view(m) for m in await recent(max(1, args.limit))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mailed = f"mailed {row['mailed_at']}" if row["mailed_at"] else \
            f"NOT MAILED: {row['mail_error']}" if row["mail_error"] else "stored only"
        print(f"#{row['id']} {row['created_at']} {row['name']} <{row['email']}> "
              f"from {row['client_ip']} ({mailed})")
        print("    " + row["message"].replace("\n", "\n    "))
    if not rows:
        print_table([], [])
    return 0
