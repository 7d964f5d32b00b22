"""``/admin/accounts`` and ``/admin/keys``: what ``portal keys`` and ``portal accounts`` do,
over HTTP for the operator (bearer ``PORTAL_ADMIN_TOKEN``).

Bodies are JSON; money is USD as a string or number (``"cap": "2.50"``), times ISO 8601.
Every change goes through :mod:`edge.identity.accounts`, so bad input is a 400 naming
its field and changes nothing, and running workers apply a change within a second; each
one appends a row to the audit log (:func:`edge.audit.record`, as
:func:`edge.admin.admin_actor` names the caller).

Credits and debits are ledger rows like every other, through the one credit function
(:func:`edge.billing.credits.credit`): once per reference, with the operator's note on
the row, and a debit never takes a balance below zero (what open reservations hold is
taken when they settle; the rest is a shortfall).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge import audit
from edge.admin import admin_actor, require_admin
from edge.api.fields import query_limit, usd
from edge.api.shapes import account_view, key_view, money
from edge.billing.credits import CreditNotDurable, credit
from edge.db.models import MAX_ID, Account, ApiKey, LedgerKind, Payment, PaymentStatus
from edge.errors import InvalidRequest, NotFound, ServiceUnavailable
from edge.identity.accounts import (
    KeySettings,
    KeySettingsError,
    create_key,
    matching_accounts,
    revoke_key,
    rotate_key,
    set_frozen,
    update_key,
)
from edge.jsonbody import json_object

__all__ = ["bp"]

bp = Blueprint("admin_keys", url_prefix="/admin")
bp.on_request(require_admin)

#: Body fields that are key settings, and how each is read.
_SETTINGS = ("name", "scope", "models", "routes", "rpm", "tpm", "cap", "cap_reset",
             "expires_at")


#: The largest credit or debit an operator makes at once, micro-dollars (one million
#: dollars): beyond it an amount is a typo.
MAX_ADJUSTMENT = 10**12
#: The longest note a ledger row or an audit row keeps, in characters.
NOTE_LENGTH = 500


def _moment(value: Any, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidRequest(f"'{field}' is an ISO 8601 time.", param=field)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _names(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"'{field}' is a list of names, or null for all.", param=field)
    return value


def _settings(body: dict[str, Any]) -> KeySettings:
    """The key settings a body gives (only those it names change)."""
    given: dict[str, Any] = {}
    for field in _SETTINGS:
        if field not in body:
            continue
        value = body[field]
        if field == "cap":
            given[field] = None if value is None else usd(value, field)
        elif field == "expires_at":
            given[field] = None if value is None else _moment(value, field)
        elif field in ("models", "routes"):
            given[field] = _names(value, field)
        elif field in ("rpm", "tpm"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(f"'{field}' is a whole number.", param=field)
            given[field] = value
        else:
            if not isinstance(value, str):
                raise InvalidRequest(f"'{field}' is a string.", param=field)
            given[field] = value
    return KeySettings(**given)


def _refused(exc: KeySettingsError) -> InvalidRequest:
    return InvalidRequest(exc.message, param=exc.param)


async def _account(account_id: int) -> Account:
    account = await Account.get_or_none(id=account_id) if 0 < account_id <= MAX_ID else None
    if account is None:
        raise NotFound(f"No account {account_id}.")
    return account


async def _key(key_id: int) -> ApiKey:
    key = await ApiKey.get_or_none(id=key_id) if 0 < key_id <= MAX_ID else None
    if key is None:
        raise NotFound(f"No key {key_id}.")
    return key


async def _account_out(request: Request, account: Account) -> dict[str, Any]:
    """The account as ``GET /admin/accounts/{id}`` shows it: its live balance, what its
    open reservations hold now, the refund debt still to collect, its open disputes
    and its keys."""
    portal = request.app.ctx.portal
    balance = await portal.billing.balance(account.id)
    held = await portal.store.client.get(portal.store.held(account.id))
    disputes = await Payment.filter(account_id=account.id,
                                    status=PaymentStatus.DISPUTED).count()
    keys = await ApiKey.filter(account_id=account.id).order_by("id")
    return {**account_view(account, balance=balance), **money("reserved", int(held or 0)),
            **money("owed", account.owed), "open_disputes": disputes,
            "keys": [key_view(k) for k in keys]}


def _note(body: dict[str, Any], *, required: bool) -> str:
    note = body.get("note")
    if note is None and not required:
        return ""
    if not isinstance(note, str) or not note.strip() or len(note) > NOTE_LENGTH:
        raise InvalidRequest(f"'note' is {'required: ' if required else ''}a string of 1 to "
                             f"{NOTE_LENGTH} characters saying why.", param="note")
    return note.strip()


def _reference(body: dict[str, Any]) -> str | None:
    reference = body.get("reference")
    if reference is not None and (not isinstance(reference, str) or not 0 < len(reference)
                                  <= 200 or not reference.isprintable()):
        raise InvalidRequest("'reference' is a string of 1 to 200 printable characters.",
                             param="reference")
    return reference


async def _adjust(request: Request, account_id: int, *, debit: bool) -> dict[str, Any]:
    """Credit (or debit) the account what the body says, once per reference, and audit it
    (``account.credit``, ``account.debit``). Body: ``usd`` and ``note`` (required),
    ``reference`` (the same one applies once; default: a new one)."""
    account = await _account(account_id)
    body = json_object(request.body)
    amount = usd(body.get("usd"), "usd", most=MAX_ADJUSTMENT, positive=True)
    reference, note = _reference(body), _note(body, required=True)
    portal = request.app.ctx.portal
    before = account_view(account, balance=await portal.billing.balance(account.id))
    try:
        done = await credit(account.id, -amount if debit else amount,
                            kind=LedgerKind.ADJUSTMENT if debit else LedgerKind.TOPUP,
                            reference=reference, note=note, store=portal.store)
    except CreditNotDurable as exc:
        raise ServiceUnavailable(
            f"The ledger is behind: the change is applied and reaches it by itself; to be "
            f"sure, send it again with the reference '{exc.reference}' (it applies once).",
            retry_after=5) from None
    await account.refresh_from_db()
    shown = await _account_out(request, account)
    outcome: dict[str, Any] = {**money("applied", done.applied)}
    if debit:
        outcome.update({**money("deferred", done.deferred),
                        **money("shortfall", amount + done.applied - done.deferred)})
    if not done.duplicate:
        await audit.record(admin_actor(request), f"account.{'debit' if debit else 'credit'}",
                           f"account:{account.id}", before, {
                               **{k: v for k, v in shown.items() if k != "keys"}, **outcome,
                               "reference": reference, "note": note})
    return {"account": account.id, **outcome, "duplicate": done.duplicate, **shown}


@bp.get("/accounts")
async def list_accounts(request: Request):
    """Query: ``q`` (a name's part, an account id or a key prefix), ``limit`` (≤ 500).
    Balances are live (what open calls hold is taken off), as the account shows them."""
    search = request.args.get("q") or ""
    accounts = await (await matching_accounts(search)).limit(query_limit(request))
    balances = await request.app.ctx.portal.billing.balances(accounts)
    return json_response({"object": "list", "data": [
        account_view(a, balance=balances[a.id]) for a in accounts]})


@bp.get("/accounts/<account_id:int>")
async def show_account(request: Request, account_id: int):
    return json_response(await _account_out(request, await _account(account_id)))


@bp.post("/accounts/<account_id:int>/credit")
async def credit_account(request: Request, account_id: int):
    """Body: ``usd`` and ``note`` (required), ``reference`` (the same one applies once)."""
    return json_response(await _adjust(request, account_id, debit=False))


@bp.post("/accounts/<account_id:int>/debit")
async def debit_account(request: Request, account_id: int):
    """Body: ``usd`` and ``note`` (required), ``reference`` (the same one applies once).
    Never below zero: ``applied`` is what was taken now, ``deferred`` what open
    reservations hold (taken when they settle), ``shortfall`` the rest."""
    return json_response(await _adjust(request, account_id, debit=True))


async def _set_frozen(request: Request, account_id: int, frozen: bool) -> dict[str, Any]:
    """Freeze or unfreeze the account's keys (every worker within a second), and audit
    it when it changed (``account.freeze``, ``account.unfreeze``). Body: ``note``."""
    account = await _account(account_id)
    note = _note(json_object(request.body, empty_ok=True), required=False)
    before = account_view(account)
    await set_frozen(account.id, frozen, request.app.ctx.portal.store)
    await account.refresh_from_db()
    if account.frozen != before["frozen"]:
        await audit.record(admin_actor(request), f"account.{'freeze' if frozen else 'unfreeze'}",
                           f"account:{account.id}", before, {**account_view(account),
                                                             "note": note})
    return await _account_out(request, account)


@bp.post("/accounts/<account_id:int>/freeze")
async def freeze_account(request: Request, account_id: int):
    return json_response(await _set_frozen(request, account_id, True))


@bp.post("/accounts/<account_id:int>/unfreeze")
async def unfreeze_account(request: Request, account_id: int):
    """An account a dispute froze may be unfrozen too (``open_disputes`` says so)."""
    return json_response(await _set_frozen(request, account_id, False))


@bp.post("/keys")
async def create(request: Request):
    """Body: ``name``; ``account`` (default: a new account), ``credit`` (USD, a new
    account's opening credit) and any key setting. Answers the secret, once."""
    portal = request.app.ctx.portal
    body = json_object(request.body)
    settings = _settings(body)
    name = settings.given().get("name")
    if name is None:
        raise InvalidRequest("'name' is required.", param="name")
    account = None
    if body.get("account") is not None:
        account_id = body["account"]
        if isinstance(account_id, bool) or not isinstance(account_id, int):
            raise InvalidRequest("'account' is an account id.", param="account")
        account = await _account(account_id)
    opening = usd(body["credit"], "credit") if body.get("credit") is not None else 0
    given = settings.given()
    try:
        created = await create_key(
            name=name, pepper=portal.pepper, credit=opening,
            rpm=given.get("rpm", portal.settings.default_rpm),
            tpm=given.get("tpm", portal.settings.default_tpm),
            expires_at=given.get("expires_at"), store=portal.store, account=account,
            settings=settings, max_keys=portal.settings.max_keys_per_account)
    except KeySettingsError as exc:
        raise _refused(exc) from None
    await audit.record(admin_actor(request), "key.create", f"key:{created.row.id}", None,
                       key_view(created.row))
    return json_response({**key_view(created.row), "key": created.secret}, status=201,
                         headers={"cache-control": "no-store"})


@bp.get("/keys/<key_id:int>")
async def show_key(request: Request, key_id: int):
    return json_response(key_view(await _key(key_id)))


@bp.patch("/keys/<key_id:int>")
async def update(request: Request, key_id: int):
    key = await _key(key_id)
    before = key_view(key)
    try:
        await update_key(key, _settings(json_object(request.body)),
                         store=request.app.ctx.portal.store)
    except KeySettingsError as exc:
        raise _refused(exc) from None
    if key_view(key) != before:
        await audit.record(admin_actor(request), "key.update", f"key:{key.id}", before,
                           key_view(key))
    return json_response(key_view(key))


@bp.post("/keys/<key_id:int>/rotate")
async def rotate(request: Request, key_id: int):
    """Body: ``grace``, seconds the old secret keeps working (default 0)."""
    key = await _key(key_id)
    grace = json_object(request.body, empty_ok=True).get("grace", 0)
    if isinstance(grace, bool) or not isinstance(grace, int | float):
        raise InvalidRequest("'grace' is a number of seconds.", param="grace")
    portal = request.app.ctx.portal
    before = key_view(key)
    try:
        rotated = await rotate_key(key, pepper=portal.pepper, grace=grace, store=portal.store)
    except KeySettingsError as exc:
        raise _refused(exc) from None
    await audit.record(admin_actor(request), "key.rotate", f"key:{key.id}", before,
                       key_view(rotated.row))
    return json_response({**key_view(rotated.row), "key": rotated.secret},
                         headers={"cache-control": "no-store"})


@bp.post("/keys/<key_id:int>/revoke")
async def revoke(request: Request, key_id: int):
    key = await _key(key_id)
    before = key_view(key)
    await revoke_key(key, store=request.app.ctx.portal.store)
    if key_view(key) != before:
        await audit.record(admin_actor(request), "key.revoke", f"key:{key.id}", before,
                           key_view(key))
    return json_response(key_view(key))
