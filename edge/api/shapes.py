"""How keys, accounts and ledger rows are shown: one JSON shape for the CLI, the admin API,
``/v1/key`` and the pages. Never a secret; money as a USD string beside its micro-dollars."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.billing.money import format_usd

if TYPE_CHECKING:
    from edge.db.models import Account, ApiKey, LedgerEntry

__all__ = ["account_view", "key_view", "ledger_view", "money"]


def money(name: str, micros: int | None) -> dict[str, Any]:
    """``{name: "1.500000", name_micros: 1500000}`` (both None for None)."""
    return {name: None if micros is None else format_usd(micros), f"{name}_micros": micros}


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def key_view(row: ApiKey) -> dict[str, Any]:
    """A key's settings and spend."""
    return {
        "id": row.id,
        "account": row.account_id,
        "name": row.name,
        "prefix": row.prefix,
        "scope": str(row.scope),
        "models": row.models,
        "routes": row.routes,
        "limits": {"requests_per_minute": row.rpm, "tokens_per_minute": row.tpm},
        **money("cap", row.cap),
        "cap_reset": str(row.cap_reset),
        **money("spent", row.spent),
        "created_at": _time(row.created_at),
        "expires_at": _time(row.expires_at),
        "revoked_at": _time(row.revoked_at),
        "revoked": row.revoked_at is not None,
        "previous_prefix": row.previous_prefix if row.previous_until else None,
        "previous_until": _time(row.previous_until),
    }


def account_view(account: Account, *, balance: int | None = None) -> dict[str, Any]:
    """An account's money; ``balance``: its live balance (default: SQL's)."""
    return {
        "id": account.id,
        "name": account.name,
        **money("balance", account.balance if balance is None else balance),
        **money("spent", account.spent),
        "frozen": account.frozen,
        "created_at": _time(account.created_at),
    }


def ledger_view(row: LedgerEntry) -> dict[str, Any]:
    """A ledger row: ``amount`` is negative for what was taken (usage, refunds, debits)."""
    return {
        "id": row.id,
        "account": row.account_id,
        "kind": str(row.kind),
        **money("amount", row.amount),
        "reference": row.reference,
        "note": row.note,
        "created_at": _time(row.created_at),
    }
