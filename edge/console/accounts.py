"""The console's accounts pages: a search over accounts, and one account with its live
balance, its keys and its recent ledger rows.

The actions are the admin API's: credit and debit with a required note
(``POST /admin/accounts/<id>/credit``, ``/debit``), freeze and unfreeze
(``POST /admin/accounts/<id>/freeze``, ``/unfreeze``), a key's limits
(``PATCH /admin/keys/<id>``), revoking (``POST /admin/keys/<id>/revoke``) and making a
key for the account (``POST /admin/keys``, its secret shown once on the page).
"""

from __future__ import annotations

from sanic import HTTPResponse, Request
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from edge.api.shapes import account_view, key_view, ledger_view, money
from edge.console.common import bp, page_limit, render
from edge.db.models import (
    MAX_ID,
    Account,
    ApiKey,
    CapReset,
    KeyScope,
    LedgerEntry,
    Payment,
    PaymentStatus,
)

__all__ = ["account_page", "accounts_page", "matching_accounts"]

#: The longest search the page takes, in characters (as ``GET /admin/accounts``).
SEARCH_LENGTH = 128
#: How many ledger rows the account page shows (the ledger page has them all).
LEDGER_ROWS = 20


async def matching_accounts(search: str) -> QuerySet[Account]:
    """The accounts a search names, by id: a part of the account's name, its id, or the
    start of one of its keys' prefixes (all accounts for an empty search).

    The same matching as ``GET /admin/accounts``; it needs nothing but SQL, so that route
    may take it from here (or from wherever it moves) instead of its own copy. A search
    that is not printable text matches nothing (it names no account, and PostgreSQL
    refuses a NUL in a string).
    """
    query = Account.all().order_by("id")
    search = search.strip()[:SEARCH_LENGTH]
    if not search:
        return query
    if not search.isprintable():
        return query.filter(id__in=[])
    matches = Q(name__icontains=search)
    if search.isascii() and search.isdigit() and int(search) <= MAX_ID:
        matches |= Q(id=int(search))
    owners = await ApiKey.filter(prefix__startswith=search).values_list("account_id", flat=True)
    if owners:
        matches |= Q(id__in=list(owners))
    return query.filter(matches)


async def live_balances(request: Request, accounts: list[Account]) -> dict[int, int]:
    """Each account's live balance, micro-dollars, in one Redis round trip; SQL's where
    Redis holds none (then nothing is pending for it, see ``Billing.load_balance``)."""
    if not accounts:
        return {}
    store = request.app.ctx.portal.store
    raw = await store.client.mget([store.balance(account.id) for account in accounts])
    return {account.id: int(value) if value is not None else account.balance
            for account, value in zip(accounts, raw, strict=True)}


@bp.get("/accounts")
async def accounts_page(request: Request) -> HTTPResponse:
    search = (request.args.get("q") or "").strip()[:SEARCH_LENGTH]
    accounts = await (await matching_accounts(search)).limit(page_limit(request))
    balances = await live_balances(request, accounts)
    rows = [account_view(account, balance=balances[account.id]) for account in accounts]
    return await render(request, "console/accounts.html", section="accounts",
                        accounts=rows, q=search)


@bp.get("/accounts/<account_id:int>")
async def account_page(request: Request, account_id: int) -> HTTPResponse:
    account = await Account.get_or_none(id=account_id) if 0 < account_id <= MAX_ID else None
    if account is None:
        return await render(request, "console/error.html", status=404, section="accounts",
                            message=f"No account {account_id}.")
    portal = request.app.ctx.portal
    balance = await portal.billing.balance(account.id)
    held = await portal.store.client.get(portal.store.held(account.id))
    disputes = await Payment.filter(account_id=account.id,
                                    status=PaymentStatus.DISPUTED).count()
    keys = [key_view(key) for key in await ApiKey.filter(account_id=account.id).order_by("id")]
    ledger = await LedgerEntry.filter(account_id=account.id).order_by("-id").limit(LEDGER_ROWS)
    shown = {**account_view(account, balance=balance), **money("reserved", int(held or 0)),
             **money("owed", account.owed), "open_disputes": disputes}
    return await render(request, "console/account.html", section="accounts",
                        account=shown, keys=keys,
                        ledger=[ledger_view(entry) for entry in ledger],
                        ledger_rows=LEDGER_ROWS, scopes=[str(s) for s in KeyScope],
                        cap_resets=[str(c) for c in CapReset])
