"""Credit on the hot path: reserve the worst case, settle the real cost, credit once.

All three are single Lua scripts (``edge/lua/``), so they are atomic across every
worker and host. Each settlement and credit appends an entry to the ledger
stream; :mod:`edge.ledger_writer` copies those entries into SQL.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge.errors import InsufficientCredit, RateLimited
from edge.money import format_usd, token_cost

if TYPE_CHECKING:
    from edge.hotstore import HotStore
    from edge.keys import KeyRecord

__all__ = ["Billing", "CreditResult", "Reservation", "Settlement", "worst_case_tokens"]

#: Seconds a credit reference is remembered in Redis (SQL's unique index is forever).
CREDIT_MARKER_TTL = 90 * 24 * 3600


@dataclasses.dataclass(slots=True)
class Reservation:
    """Credit held for one request until it is settled."""

    request_id: str
    key: KeyRecord
    amount: int  # micro-dollars held
    tokens: int  # tokens held in the tokens-per-minute bucket
    input_price: int
    output_price: int
    balance_after: int


@dataclasses.dataclass(slots=True, frozen=True)
class Settlement:
    charged: int  # micro-dollars actually taken
    balance: int  # balance after, micro-dollars
    settled: bool  # False when someone (the reaper) settled it first


@dataclasses.dataclass(slots=True, frozen=True)
class CreditResult:
    applied: int  # micro-dollars added (negative: taken)
    balance: int
    duplicate: bool  # the reference was applied before; nothing changed


def worst_case_tokens(prompt_estimate: int, max_tokens: int | None, choices: int,
                      context_length: int, prompts: int = 1) -> tuple[int, int]:
    """Upper bounds of ``(prompt, completion)`` tokens for a reservation.

    The prompt bound is the request body's length in bytes (a token is never
    shorter than a byte of the JSON that carried it); both are capped by the
    model's context, which vLLM enforces per prompt and per choice.
    """
    prompt = min(prompt_estimate, context_length * max(1, prompts))
    completion = context_length if max_tokens is None else min(max_tokens, context_length)
    return prompt, completion * max(1, choices)


class Billing:
    """Reserve, settle and credit against the balances held in Redis."""

    def __init__(self, store: HotStore, *, reservation_ttl_ms: int) -> None:
        self.store = store
        self.reservation_ttl_ms = reservation_ttl_ms

    async def reserve(self, key: KeyRecord, request_id: str, *, prompt_tokens: int,
                      completion_tokens: int, input_price: int, output_price: int,
                      meta: dict[str, str | int], ttl_ms: int | None = None) -> Reservation:
        """Hold the worst-case cost of a request.

        ``ttl_ms`` is how long it may stay open before the reaper settles it
        (default: the upstream timeout; a queued job holds it until its deadline).

        Raises:
          RateLimited: a per-minute limit is reached (``retry_after`` in seconds).
          InsufficientCredit: the balance does not cover the worst case.
        """
        amount = token_cost(prompt_tokens, completion_tokens, input_price, output_price)
        tokens = prompt_tokens + completion_tokens
        store = self.store
        keys = [store.balance(key.id), store.limiter(key.id), store.reservation(request_id),
                store.open_reservations]
        args: list[str | int] = [amount, tokens, key.rpm, key.tpm,
                                 ttl_ms or self.reservation_ttl_ms,
                                 request_id, "key", key.id, "pin", input_price,
                                 "pout", output_price]
        for field, value in meta.items():
            args += (field, value)
        code, value = await store.reserve(keys=keys, args=args)
        if code == 0:
            await self.load_balance(key.id)
            code, value = await store.reserve(keys=keys, args=args)
        if code == 1:
            return Reservation(request_id, key, amount, tokens, input_price, output_price, value)
        if code == -1:
            raise InsufficientCredit(
                f"This request may cost up to ${format_usd(amount)} and the key's balance is "
                f"${format_usd(value)}. Top up the key, or lower max_tokens.")
        if code in (-2, -3):
            what = "requests" if code == -2 else "tokens"
            limit = key.rpm if code == -2 else key.tpm
            raise RateLimited(
                f"Rate limit reached: {limit} {what} per minute for this key. "
                f"Try again in {value / 1000:.1f}s.", retry_after=-(-value // 1000))
        raise RuntimeError(f"reserve.lua answered {code}")  # -4: request ids are unique

    async def settle(self, reservation: Reservation, *, prompt_tokens: int,
                     completion_tokens: int, fields: dict[str, str | int]) -> Settlement:
        """Charge the real cost of a reserved request and record its usage, once."""
        cost = token_cost(prompt_tokens, completion_tokens, reservation.input_price,
                          reservation.output_price)
        return await self.settle_amount(
            reservation.request_id, reservation.key.id, cost,
            prompt_tokens + completion_tokens,
            {"t": "usage", "rid": reservation.request_id, "key": reservation.key.id,
             "pt": prompt_tokens, "ct": completion_tokens, "cost": cost, **fields})

    async def settle_amount(self, request_id: str, key_id: int, cost: int, tokens: int,
                            entry: dict[str, str | int]) -> Settlement:
        store = self.store
        args: list[str | int] = [request_id, cost, tokens]
        for field, value in entry.items():
            args += (field, value)
        settled, charged, balance = await store.settle(
            keys=[store.balance(key_id), store.limiter(key_id), store.reservation(request_id),
                  store.open_reservations, store.ledger_stream],
            args=args)
        return Settlement(charged=charged, balance=balance, settled=bool(settled))

    async def progress(self, request_id: str, prompt_tokens: int, completion_tokens: int,
                       *, ttl_ms: int | None = None) -> None:
        """Record what a stream has delivered so far and push back its deadline.

        If the worker dies mid-stream, the reaper charges these figures.
        """
        store = self.store
        await store.progress(
            keys=[store.reservation(request_id), store.open_reservations],
            args=[request_id, prompt_tokens, completion_tokens,
                  ttl_ms or self.reservation_ttl_ms])

    async def credit(self, key_id: int, amount: int, *, reference: str, kind: str,
                     note: str = "") -> CreditResult:
        """Add ``amount`` micro-dollars (negative: take) once per ``reference``."""
        store = self.store
        keys = [store.balance(key_id), store.applied(reference), store.ledger_stream]
        args: list[str | int] = [amount, CREDIT_MARKER_TTL, "t", "credit", "ref", reference,
                                 "key", key_id, "kind", kind, "note", note[:500]]
        code, applied, balance = await store.credit(keys=keys, args=args)
        if code == 0:
            await self.load_balance(key_id)
            code, applied, balance = await store.credit(keys=keys, args=args)
        if code == 0:
            raise RuntimeError("balance vanished while crediting")
        return CreditResult(applied=applied, balance=balance, duplicate=code == -1)

    async def balance(self, key_id: int) -> int:
        """The live balance: what is left after open reservations."""
        raw = await self.store.client.get(self.store.balance(key_id))
        if raw is None:
            return await self.load_balance(key_id)
        return int(raw)

    async def load_balance(self, key_id: int) -> int:
        """Seed Redis with the SQL balance of a key it does not hold yet.

        Correct because a key absent from Redis has nothing pending in the ledger
        stream or in reservations: both need its balance entry to exist.
        """
        from edge.db.models import ApiKey

        row = await ApiKey.get_or_none(id=key_id).only("id", "balance")
        sql_balance = row.balance if row else 0
        await self.store.client.set(self.store.balance(key_id), sql_balance, nx=True)
        return int(await self.store.client.get(self.store.balance(key_id)) or 0)
