"""``portal keys …``: create, list, top up and revoke API keys."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from edge.billing.credits import credit
from edge.billing.money import format_usd
from edge.cli.runtime import CommandContext, fail, print_table, run_command, usd_argument
from edge.db.models import ApiKey, LedgerKind
from edge.identity.accounts import create_key, revoke_key
from edge.identity.pepper import load_pepper

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True)
    create = keys.add_parser("create", help="make a key (its secret is printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--credit", type=usd_argument, default=0, help="opening credit in USD")
    create.add_argument("--rpm", type=int, help="requests per minute (default: settings)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: settings)")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--json", action="store_true", help='print {"id","key","balance"}')
    create.set_defaults(func=lambda a: run_command(lambda c: create_cmd(c, a)))

    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_keys(c, a)))

    topup = keys.add_parser("topup", help="add credit to a key")
    topup.add_argument("key_id", type=int)
    topup.add_argument("usd", type=usd_argument)
    topup.add_argument("--reference", help="unique reference; the same one applies once")
    topup.add_argument("--note", default="operator top-up")
    topup.add_argument("--json", action="store_true")
    topup.set_defaults(func=lambda a: run_command(lambda c: top_up(c, a)))

    revoke = keys.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(func=lambda a: run_command(lambda c: revoke_cmd(c, a)))


async def create_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    expires = None
    if args.expires_in_days:
        expires = datetime.now(UTC) + timedelta(days=args.expires_in_days)
    created = await create_key(
        name=args.name, pepper=load_pepper(ctx.settings), credit=args.credit,
        rpm=args.rpm or ctx.settings.default_rpm, tpm=args.tpm or ctx.settings.default_tpm,
        expires_at=expires, store=ctx.store)
    row = created.row
    if args.json:
        print(json.dumps({"id": row.id, "key": created.secret, "balance": format_usd(row.balance),
                          "balance_micros": row.balance, "prefix": row.prefix,
                          "name": row.name}))
    else:
        print(f"key {row.id} ({row.name}) created with ${format_usd(row.balance)}.")
        print(f"secret (shown once, store it now): {created.secret}")
    return 0


async def list_keys(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [{
        "id": k.id, "name": k.name, "prefix": k.prefix, "balance": format_usd(k.balance),
        "spent": format_usd(k.spent), "rpm": k.rpm, "tpm": k.tpm,
        "created_at": k.created_at.isoformat(timespec="seconds"),
        "revoked": k.revoked_at is not None, "frozen": k.frozen,
    } for k in await ApiKey.all().order_by("id")]
    print_table(rows, ["id", "name", "prefix", "balance", "spent", "rpm", "tpm", "revoked"],
                as_json=args.json)
    return 0


async def _key(key_id: int) -> ApiKey:
    key = await ApiKey.get_or_none(id=key_id)
    if key is None:
        raise fail(f"no key {key_id}")
    return key


async def top_up(ctx: CommandContext, args: argparse.Namespace) -> int:
    key = await _key(args.key_id)
    # No grace for the bookkeeper: no server may be running beside the command.
    applied, duplicate, _deferred = await credit(
        key.id, args.usd, kind=LedgerKind.TOPUP, reference=args.reference, note=args.note,
        store=ctx.store, grace=0.0)
    await key.refresh_from_db(fields=["balance"])
    if args.json:
        print(json.dumps({"id": key.id, "applied": format_usd(applied), "duplicate": duplicate,
                          "balance": format_usd(key.balance)}))
    elif duplicate:
        print(f"reference {args.reference} was applied before; nothing changed")
    else:
        print(f"key {key.id}: +${format_usd(applied)}, balance ${format_usd(key.balance)}")
    return 0


async def revoke_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    key = await _key(args.key_id)
    await revoke_key(key, store=ctx.store)
    print(f"key {key.id} ({key.prefix}…) revoked")
    return 0
