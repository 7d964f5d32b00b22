"""``portal payments …``: list payments, reconcile a day with Stripe, unfreeze an account."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta

from edge.billing.money import format_usd
from edge.cli.runtime import CommandContext, fail, print_table, run_command
from edge.db.models import Account, PaymentStatus
from edge.errors import APIError

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    payments = commands.add_parser("payments", help="Stripe payments").add_subparsers(
        dest="payments_command", metavar="ACTION", required=True)
    listing = payments.add_parser("list", help="payments, newest first")
    listing.add_argument("--account", type=int, help="only this account's")
    listing.add_argument("--status", choices=[s.value for s in PaymentStatus])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_cmd(c, a)))

    reconcile = payments.add_parser(
        "reconcile", help="compare a day of Stripe Checkout Sessions with the ledger "
        "(exit status 1 when they differ)")
    reconcile.add_argument("--day", type=_day, default=None,
                           help="YYYY-MM-DD, in UTC (default: yesterday)")
    reconcile.add_argument("--apply", action="store_true",
                           help="credit paid sessions that were not credited (once each)")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(func=lambda a: run_command(lambda c: reconcile_cmd(c, a)))

    unfreeze = payments.add_parser("unfreeze", help="let an account frozen by a dispute work again")
    unfreeze.add_argument("account_id", type=int)
    unfreeze.set_defaults(func=lambda a: run_command(lambda c: unfreeze_cmd(c, a)))


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2025-01-31") from None


async def list_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    from edge.payments.history import list_payments

    rows = await list_payments(account_id=args.account, status=args.status, limit=args.limit,
                               admin=True)
    print_table(rows, ["created_at", "id", "account_id", "status", "amount", "paid", "refunded",
                       "credited", "debited"], as_json=args.json)
    return 0


async def reconcile_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    from edge.payments.config import PaymentsOff
    from edge.payments.reconcile import StripeUnreachable, apply_missing, reconcile_day

    day = args.day or (datetime.now(UTC).date() - timedelta(days=1))
    try:
        lines = await reconcile_day(ctx, day)
        applied = await apply_missing(ctx, lines) if args.apply else []
        if applied:
            await ctx.audit("payments.reconcile", f"day:{day.isoformat()}", None,
                            {"applied": applied})
        if applied:
            lines = await reconcile_day(ctx, day)
    except (PaymentsOff, StripeUnreachable) as exc:
        raise fail(f"cannot reconcile: {exc}") from None
    except APIError as exc:
        raise fail(f"reconcile --apply stopped: {exc.message}") from None
    differences = [line for line in lines if line.problem]
    if args.json:
        print(json.dumps({"day": day.isoformat(), "applied": applied,
                          "differences": len(differences),
                          "paid": format_usd(sum(line.paid for line in lines)),
                          "credited": format_usd(sum(line.credited for line in lines)),
                          "refunded": format_usd(sum(line.refunded for line in lines)),
                          "taken_back": format_usd(sum(line.taken for line in lines)),
                          "sessions": [line.row() for line in lines]}, indent=2))
    else:
        for outcome in applied:
            print(f"applied: {outcome}")
        print_table([line.row() for line in lines],
                    ["session", "account", "status", "stripe", "paid", "credited", "refunded",
                     "taken back", "problem"])
        print(f"{day}: {len(lines)} sessions, paid ${format_usd(sum(li.paid for li in lines))}, "
              f"credited ${format_usd(sum(li.credited for li in lines))}, "
              f"{len(differences)} difference(s)")
    return 1 if differences else 0


async def unfreeze_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    from edge.identity.accounts import set_frozen

    account = await Account.get_or_none(id=args.account_id)
    if account is None:
        raise fail(f"no account {args.account_id}")
    await set_frozen(args.account_id, False, ctx.store)
    if account.frozen:
        await ctx.audit("account.unfreeze", f"account:{account.id}", {"frozen": True},
                        {"frozen": False})
    print(f"account {args.account_id} unfrozen")
    return 0
