"""``portal keys …``: create, list, update, rotate, top up and revoke API keys.

A key made without ``--account`` opens a new account (and is its manage key); with
it, the key joins that account. Every option of ``create`` can be changed later with
``update``; options left out stay as they are.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.api.shapes import account_view, key_view
from edge.billing.credits import credit
from edge.billing.money import format_usd
from edge.cli.runtime import CommandContext, fail, print_table, run_command, usd_argument
from edge.db.models import Account, ApiKey, LedgerKind
from edge.identity.accounts import (
    KeySettings,
    KeySettingsError,
    create_key,
    revoke_key,
    rotate_key,
    update_key,
)
from edge.identity.pepper import load_pepper

__all__ = ["register"]


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _key_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    """The options ``create`` and ``update`` share."""
    if not creating:
        parser.add_argument("--name")
    parser.add_argument("--scope", choices=["manage", "api"],
                        help="manage: pages, keys and top-ups too (default: api; the first "
                             "key of an account is always manage)")
    parser.add_argument("--models", type=_names, help="comma-separated models it may call")
    parser.add_argument("--routes", type=_names,
                        help="comma-separated routes it may call: chat/completions, "
                             "completions, embeddings, jobs, chat")
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--cap", type=usd_argument, help="credit cap in USD per window")
    parser.add_argument("--cap-reset", choices=["daily", "weekly", "monthly", "never"])
    parser.add_argument("--expires", type=_moment, help="expiry, ISO 8601 (UTC if no offset)")
    parser.add_argument("--json", action="store_true")
    if not creating:
        parser.add_argument("--all-models", action="store_true", help="drop the model list")
        parser.add_argument("--all-routes", action="store_true", help="drop the route list")
        parser.add_argument("--no-cap", action="store_true", help="drop the credit cap")
        parser.add_argument("--no-expiry", action="store_true", help="never expire")


def register(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True)
    create = keys.add_parser("create", help="make a key (its secret is printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--account", type=int, help="the account it joins (default: a new one)")
    create.add_argument("--credit", type=usd_argument, default=0,
                        help="opening credit in USD of a new account")
    create.add_argument("--expires-in-days", type=float)
    _key_options(create, creating=True)
    create.set_defaults(func=lambda a: run_command(lambda c: create_cmd(c, a)))

    update = keys.add_parser("update", help="change a key's settings")
    update.add_argument("key_id", type=int)
    _key_options(update, creating=False)
    update.set_defaults(func=lambda a: run_command(lambda c: update_cmd(c, a)))

    rotate = keys.add_parser("rotate", help="give a key a new secret (printed once)")
    rotate.add_argument("key_id", type=int)
    rotate.add_argument("--grace", type=float, default=0,
                        help="seconds the old secret keeps working (default 0)")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=lambda a: run_command(lambda c: rotate_cmd(c, a)))

    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--account", type=int, help="only this account's")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_keys(c, a)))

    topup = keys.add_parser("topup", help="add credit to a key's account")
    topup.add_argument("key_id", type=int)
    topup.add_argument("usd", type=usd_argument)
    topup.add_argument("--reference", help="unique reference; the same one applies once")
    topup.add_argument("--note", default="operator top-up")
    topup.add_argument("--json", action="store_true")
    topup.set_defaults(func=lambda a: run_command(lambda c: top_up(c, a)))

    revoke = keys.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(func=lambda a: run_command(lambda c: revoke_cmd(c, a)))


def _settings(args: argparse.Namespace) -> KeySettings:
    """What the options ask for: only what was given is changed."""
    given: dict[str, Any] = {}
    for option, field in (("name", "name"), ("scope", "scope"), ("models", "models"),
                          ("routes", "routes"), ("rpm", "rpm"), ("tpm", "tpm"), ("cap", "cap"),
                          ("cap_reset", "cap_reset"), ("expires", "expires_at")):
        value = getattr(args, option, None)
        if value is not None:
            given[field] = value
    for flag, field in (("all_models", "models"), ("all_routes", "routes"), ("no_cap", "cap"),
                        ("no_expiry", "expires_at")):
        if getattr(args, flag, False):
            given[field] = None
    return KeySettings(**given)


async def _balance(ctx: CommandContext, account: Account) -> int:
    """The account's live balance (Redis's; SQL's when the command runs without Redis)."""
    from edge.billing.reservations import Billing

    if ctx.store is None:
        return int(account.balance)
    return await Billing(ctx.store, reservation_ttl_ms=0).balance(account.id)


def _refused(exc: KeySettingsError) -> Exception:
    return fail(f"{exc.param}: {exc.message}")


async def _output(ctx: CommandContext, row: ApiKey, account: Account, *, as_json: bool,
                  secret: str | None = None, said: str) -> int:
    balance = await _balance(ctx, account)
    if as_json:
        out = {**key_view(row), "account": account.id, "balance": format_usd(balance),
               "balance_micros": balance}
        if secret is not None:
            out["key"] = secret
        print(json.dumps(out))
        return 0
    print(f"key {row.id} ({row.name}, {row.scope}) of account {account.id} {said}; "
          f"balance ${format_usd(balance)}.")
    if secret is not None:
        print(f"secret (shown once, store it now): {secret}")
    return 0


async def create_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.expires_in_days:
        settings.expires_at = datetime.now(UTC) + timedelta(days=args.expires_in_days)
    expires = settings.given().get("expires_at")
    account = None
    if args.account is not None:
        account = await Account.get_or_none(id=args.account)
        if account is None:
            raise fail(f"no account {args.account}")
    try:
        created = await create_key(
            name=args.name, pepper=load_pepper(ctx.settings), credit=args.credit,
            rpm=ctx.settings.default_rpm if args.rpm is None else args.rpm,
            tpm=ctx.settings.default_tpm if args.tpm is None else args.tpm,
            expires_at=expires, store=ctx.store, account=account, settings=settings,
            max_keys=ctx.settings.max_keys_per_account)
    except KeySettingsError as exc:
        raise _refused(exc) from None
    await ctx.audit("key.create", f"key:{created.row.id}", None, key_view(created.row))
    return await _output(ctx, created.row, created.account, as_json=args.json,
                         secret=created.secret, said="created")


async def update_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    key = await _key(args.key_id)
    before = key_view(key)
    try:
        await update_key(key, _settings(args), store=ctx.store)
    except KeySettingsError as exc:
        raise _refused(exc) from None
    if key_view(key) != before:
        await ctx.audit("key.update", f"key:{key.id}", before, key_view(key))
    return await _output(ctx, key, await Account.get(id=key.account_id), as_json=args.json,
                         said="updated")


async def rotate_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    key = await _key(args.key_id)
    before = key_view(key)
    try:
        rotated = await rotate_key(key, pepper=load_pepper(ctx.settings), grace=args.grace,
                                   store=ctx.store)
    except KeySettingsError as exc:
        raise _refused(exc) from None
    await ctx.audit("key.rotate", f"key:{key.id}", before, key_view(rotated.row))
    said = f"rotated (the old secret works until {key.previous_until:%Y-%m-%d %H:%M:%S} UTC)" \
        if key.previous_until else "rotated (the old secret no longer works)"
    return await _output(ctx, rotated.row, rotated.account, as_json=args.json,
                         secret=rotated.secret, said=said)


async def list_keys(ctx: CommandContext, args: argparse.Namespace) -> int:
    query = ApiKey.all().select_related("account").order_by("id")
    if args.account is not None:
        query = query.filter(account_id=args.account)
    rows = []
    for k in await query:
        view = key_view(k)
        view.update(spent=format_usd(k.spent), rpm=k.rpm, tpm=k.tpm,
                    cap=view["cap"] or "-", models=",".join(k.models or []) or "all",
                    balance=format_usd(k.account.balance), frozen=k.account.frozen)
        rows.append(view)
    print_table(rows, ["id", "account", "name", "prefix", "scope", "models", "cap", "spent",
                       "balance", "rpm", "tpm", "revoked"], as_json=args.json)
    return 0


async def _key(key_id: int) -> ApiKey:
    key = await ApiKey.get_or_none(id=key_id)
    if key is None:
        raise fail(f"no key {key_id}")
    return key


async def top_up(ctx: CommandContext, args: argparse.Namespace) -> int:
    key = await _key(args.key_id)
    holder = await Account.get(id=key.account_id)
    before = account_view(holder, balance=await _balance(ctx, holder))
    # No grace for the bookkeeper: no server may be running beside the command.
    applied, duplicate, _deferred = await credit(
        key.account_id, args.usd, kind=LedgerKind.TOPUP, reference=args.reference,
        note=args.note, store=ctx.store, grace=0.0)
    account = await Account.get(id=key.account_id)
    if not duplicate:
        await ctx.audit("account.credit", f"account:{account.id}", before, {
            **account_view(account, balance=await _balance(ctx, account)),
            "applied": format_usd(applied), "reference": args.reference, "note": args.note,
            "key": key.id})
    if args.json:
        print(json.dumps({"id": key.id, "account": account.id, "applied": format_usd(applied),
                          "duplicate": duplicate, "balance": format_usd(account.balance)}))
    elif duplicate:
        print(f"reference {args.reference} was applied before; nothing changed")
    else:
        print(f"account {account.id} (key {key.id}): +${format_usd(applied)}, "
              f"balance ${format_usd(account.balance)}")
    return 0


async def revoke_cmd(ctx: CommandContext, args: argparse.Namespace) -> int:
    key = await _key(args.key_id)
    before = key_view(key)
    await revoke_key(key, store=ctx.store)
    if key_view(key) != before:
        await ctx.audit("key.revoke", f"key:{key.id}", before, key_view(key))
    print(f"key {key.id} ({key.prefix}…) revoked")
    return 0


async def show_account(ctx: CommandContext, account: Account) -> dict[str, Any]:
    """An account with its live balance and its keys (``portal accounts show``)."""
    balance = await _balance(ctx, account)
    keys = await ApiKey.filter(account_id=account.id).order_by("id")
    return {**account_view(account, balance=balance), "keys": [key_view(k) for k in keys]}
