"""``portal accounts …``: list accounts and show one with its keys."""

from __future__ import annotations

import argparse
import json

from tortoise.functions import Count

from edge.billing.money import format_usd
from edge.cli.keys import show_account
from edge.cli.runtime import CommandContext, fail, print_table, run_command
from edge.db.models import Account

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    accounts = commands.add_parser("accounts", help="customer accounts").add_subparsers(
        dest="accounts_command", metavar="ACTION", required=True)
    listing = accounts.add_parser("list", help="list accounts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_accounts(c, a)))
    show = accounts.add_parser("show", help="an account, its balance and its keys")
    show.add_argument("account_id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=lambda a: run_command(lambda c: show_cmd(c, a)))


async def list_accounts(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [{
        "id": a.id, "name": a.name, "balance": format_usd(a.balance),
        "spent": format_usd(a.spent), "keys": getattr(a, "key_count", 0), "frozen": a.frozen,
        "created_at": a.created_at.isoformat(timespec="seconds"),
    } for a in await Account.all().annotate(key_count=Count("keys")).order_by("id")]
    print_table(rows, ["id", "name", "balance", "spent", "keys", "frozen"], as_json=args.json)
    return 0


async def show_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    account = await Account.get_or_none(id=args.account_id)
    if account is None:
        raise fail(f"no account {args.account_id}")
    view = await show_account(ctx, account)
    if args.json:
        print(json.dumps(view))
        return 0
    print(f"account {account.id} ({account.name}): balance ${view['balance']}, "
          f"spent ${view['spent']}{', FROZEN' if account.frozen else ''}")
    print_table([{**k, "cap": k["cap"] or "-", "models": ",".join(k["models"] or []) or "all"}
                 for k in view["keys"]],
                ["id", "name", "prefix", "scope", "models", "cap", "cap_reset", "revoked"])
    return 0
