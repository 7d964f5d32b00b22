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
from edge.identity.accounts import SEARCH_LENGTH, matching_accounts

__all__ = ["account_page", "accounts_page"]

#: How many ledger rows the account page shows (the ledger page has them all).
LEDGER_ROWS = 20


@bp.get("/accounts")
async def accounts_page(request: Request) -> HTTPResponse:
    search = (request.args.get("q") or "").strip()[:SEARCH_LENGTH]
    accounts = await (await matching_accounts(search)).limit(page_limit(request))
    balances = await request.app.ctx.portal.billing.balances(accounts)
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
