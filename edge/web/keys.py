"""The account page and its keys: list, make, edit, rotate and revoke them.

Every key an id names is looked up within the signed-in key's account: another
account's id is "not found" (404), whatever the form or path, and changes nothing.
Settings are checked whole by :mod:`edge.identity.accounts` before anything is
written; a refused form is shown again with the field named, and status 400.
A new secret is shown once, on a page no cache keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sanic import HTTPResponse, Request, redirect

from edge.billing.caps import used_in_window
from edge.billing.money import format_usd
from edge.db.models import Account, ApiKey, UsageRecord
from edge.errors import NotFound
from edge.identity.accounts import (
    KeySettingsError,
    create_key,
    revoke_key,
    rotate_key,
    update_key,
)
from edge.identity.csrf import check_csrf
from edge.identity.keys import ROUTES
from edge.identity.sessions import COOKIE, TTL
from edge.web.common import (
    bp,
    catalog_models,
    form_field,
    form_list,
    render,
    set_cookie,
    sign_out,
    signed_in,
)
from edge.web.keyforms import KeyForm, describe_error, grace_of

if TYPE_CHECKING:
    from edge.identity.keys import KeyRecord

__all__ = ["key_state", "owned_key"]

#: The largest id ``api_keys.id`` holds.
_MAX_KEY_ID = 2**31 - 1

#: What a finished action says on the page it leads to (``?done=``): never typed text.
_DONE = {
    "saved": "Saved. Every worker applies the change within a second.",
    "revoked": "The key is revoked: it no longer works anywhere.",
}

#: Words for a cap's window, as "… per day".
_WINDOWS = {"daily": "per day", "weekly": "per week", "monthly": "per month",
            "never": "in total"}


async def owned_key(key: KeyRecord, key_id: int | str) -> ApiKey:
    """The key ``key_id`` of ``key``'s account, or 404 (another account's, or none)."""
    try:
        wanted = int(key_id)
    except (TypeError, ValueError):
        wanted = 0
    # api_keys.id is an INTEGER: a larger number names no key (and no SQL may see it).
    row = await ApiKey.get_or_none(id=wanted, account_id=key.account_id) \
        if 0 < wanted <= _MAX_KEY_ID else None
    if row is None:
        raise NotFound("No such key in this account.")
    return row


def key_state(row: ApiKey, *, frozen: bool = False,
              now: datetime | None = None) -> tuple[str, str]:
    """A key's state as words and a CSS kind: active, revoked, expired, frozen, or active
    with its old secret still valid until the end of a rotation's grace."""
    now = now or datetime.now(UTC)
    if row.revoked_at is not None:
        return "revoked", "off"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired", "off"
    if frozen:
        return "frozen", "warn"
    if row.previous_prefix and row.previous_until and row.previous_until > now:
        return f"old secret valid until {_when(row.previous_until)}", "warn"
    return "active", "ok"


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


async def _cap_used(request: Request, row: ApiKey) -> int | None:
    """What the key spent in its cap's current window (Redis's live count), or None."""
    if row.cap is None:
        return None
    return await used_in_window(request.app.ctx.portal.store, row.id, str(row.cap_reset))


async def _key_row_view(request: Request, row: ApiKey, account: Account,
                        signed: KeyRecord) -> dict[str, Any]:
    state, kind = key_state(row, frozen=account.frozen)
    used = await _cap_used(request, row)
    return {
        "id": row.id, "name": row.name, "prefix": row.prefix, "scope": str(row.scope),
        "models": row.models, "routes": row.routes, "rpm": row.rpm, "tpm": row.tpm,
        "cap": None if row.cap is None else format_usd(row.cap),
        "cap_window": _WINDOWS.get(str(row.cap_reset), str(row.cap_reset)),
        "cap_used": None if used is None else format_usd(used),
        "spent": format_usd(row.spent), "expires": _when(row.expires_at),
        "state": state, "state_kind": kind, "revoked": row.revoked_at is not None,
        "yours": row.id == signed.id, "created": f"{row.created_at:%Y-%m-%d}",
    }


def _form_choices(request: Request, form: KeyForm) -> dict[str, Any]:
    """The checkboxes a key form offers: the enabled catalogue (and any model the key
    already lists, so that saving does not drop it silently), and every route."""
    names = [m["id"] for m in catalog_models(request)]
    names += sorted(set(form.models) - set(names))
    return {"model_choices": names, "route_choices": ROUTES}


async def _account_page(request: Request, key: KeyRecord, *, status: int = 200,
                        flash: str | None = None, flash_kind: str | None = None,
                        form: KeyForm | None = None, bad: str | None = None) -> HTTPResponse:
    portal = request.app.ctx.portal
    account = await Account.get(id=key.account_id)
    rows = await ApiKey.filter(account_id=key.account_id).order_by("id")
    keys = [await _key_row_view(request, row, account, key) for row in rows]
    names = {row.id: row.name for row in rows}
    usage = [{"when": u.created_at.strftime("%Y-%m-%d %H:%M"), "model": u.model,
              "key": names.get(u.key_id, str(u.key_id)),
              "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
              "cost": format_usd(u.cost), "status": u.status}
             for u in await UsageRecord.filter(account_id=key.account_id)
             .order_by("-id").limit(20)]
    from edge.payments.history import list_payments

    payments = [{"when": p["created_at"][:16].replace("T", " "), "amount": p["amount"],
                 "status": p["status"]}
                for p in await list_payments(account_id=key.account_id, limit=20)]
    own = next(row for row in rows if row.id == key.id)
    settings = portal.settings
    form = form or KeyForm.blank(rpm=settings.default_rpm, tpm=settings.default_tpm)
    return await render(
        request, "account.html", status=status, key=key, account=account,
        balance=format_usd(await portal.billing.balance(key.account_id)),
        spent=format_usd(own.spent), account_spent=format_usd(account.spent), keys=keys,
        usage=usage, payments=payments, form=form, bad=bad,
        **_form_choices(request, form),
        flash=flash or _topup_flash(request) or _DONE.get(request.args.get("done", "")),
        flash_kind=flash_kind)


def _topup_flash(request: Request) -> str | None:
    outcome = request.args.get("topup")
    if outcome == "success":
        return "Thank you! Your credit appears as soon as Stripe confirms the payment."
    if outcome == "cancelled":
        return "The payment was cancelled; nothing was charged."
    return None


def _posted_form(request: Request) -> KeyForm:
    return KeyForm.of_form(lambda name: form_field(request, name),
                           lambda name: form_list(request, name))


async def _secret_page(request: Request, key: KeyRecord, row: ApiKey, secret: str, *,
                       rotated: bool, status: int = 200) -> HTTPResponse:
    response = await render(request, "key_secret.html", status=status, key=key, row=row,
                            secret=secret, rotated=rotated,
                            previous_until=_when(row.previous_until)
                            if row.previous_prefix and row.previous_until else "")
    response.headers["cache-control"] = "no-store"
    return response


@bp.get("/account")
async def account(request: Request):
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    return await _account_page(request, key)


@bp.post("/account/keys")
async def create(request: Request):
    await check_csrf(request)
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    portal = request.app.ctx.portal
    form = _posted_form(request)
    form.rpm = form.rpm or str(portal.settings.default_rpm)  # left empty: the defaults
    form.tpm = form.tpm or str(portal.settings.default_tpm)
    try:
        settings = form.for_create()
        given = settings.given()
        created = await create_key(
            name=given.pop("name"), rpm=given.pop("rpm"), tpm=given.pop("tpm"),
            expires_at=given.pop("expires_at"), pepper=portal.pepper, store=portal.store,
            account=await Account.get(id=key.account_id), settings=settings,
            max_keys=portal.settings.max_keys_per_account)
    except KeySettingsError as exc:
        return await _account_page(request, key, status=400, flash=describe_error(exc),
                                   flash_kind="error", form=form, bad=exc.param)
    return await _secret_page(request, key, created.row, created.secret, rotated=False)


@bp.get("/account/keys/<key_id:int>")
async def key_page(request: Request, key_id: int):
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    row = await owned_key(key, key_id)
    return await _key_page(request, key, row)


async def _key_page(request: Request, key: KeyRecord, row: ApiKey, *, status: int = 200,
                    flash: str | None = None, form: KeyForm | None = None,
                    bad: str | None = None) -> HTTPResponse:
    account = await Account.get(id=key.account_id)
    form = form or KeyForm.of_key(row)
    return await render(request, "key.html", status=status, key=key,
                        row=await _key_row_view(request, row, account, key), form=form,
                        bad=bad, **_form_choices(request, form),
                        flash=flash or _DONE.get(request.args.get("done", "")),
                        flash_kind="error" if flash else None)


@bp.post("/account/keys/<key_id:int>")
async def edit(request: Request, key_id: int):
    await check_csrf(request)
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    row = await owned_key(key, key_id)
    form = _posted_form(request)
    try:
        await update_key(row, form.for_update(row), store=request.app.ctx.portal.store)
    except KeySettingsError as exc:
        row = await owned_key(key, key_id)  # as it is in SQL: the refused form changed nothing
        return await _key_page(request, key, row, status=400, flash=describe_error(exc),
                               form=form, bad=exc.param)
    return redirect(f"/account/keys/{row.id}?done=saved")


@bp.post("/account/keys/<key_id:int>/rotate")
async def rotate(request: Request, key_id: int):
    await check_csrf(request)
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    portal = request.app.ctx.portal
    row = await owned_key(key, key_id)
    try:
        rotated = await rotate_key(row, pepper=portal.pepper,
                                   grace=grace_of(form_field(request, "grace")),
                                   store=portal.store)
    except KeySettingsError as exc:
        row = await owned_key(key, key_id)
        return await _key_page(request, key, row, status=400, flash=describe_error(exc),
                               bad=exc.param)
    if row.id != key.id:
        return await _secret_page(request, key, rotated.row, rotated.secret, rotated=True)
    # The session stood for the replaced secret: it follows the key to its new one.
    await portal.sessions.destroy(request.cookies.get(COOKIE))
    session = await portal.sessions.create(row.id, rotated.row.prefix)
    request.ctx.session = session
    record = await portal.keys.lookup(rotated.row.prefix)
    response = await _secret_page(request, record or key, rotated.row, rotated.secret,
                                  rotated=True)
    set_cookie(request, response, COOKIE, session.id, max_age=TTL)
    return response


@bp.post("/account/keys/<key_id:int>/revoke")
async def revoke(request: Request, key_id: int):
    await check_csrf(request)
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    row = await owned_key(key, key_id)
    await revoke_key(row, store=request.app.ctx.portal.store)
    if row.id == key.id:
        return await sign_out(request)
    return redirect("/account?done=revoked")


@bp.post("/account/revoke")
async def revoke_own(request: Request):
    """Revoke the key signed in (and so sign out)."""
    await check_csrf(request)
    key, away = await signed_in(request)
    if away:
        return away
    assert key is not None
    await revoke_key(await ApiKey.get(id=key.id), store=request.app.ctx.portal.store)
    return await sign_out(request)
