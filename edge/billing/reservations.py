"""Credit on the hot path: reserve the worst case, settle the real cost, credit once.

All three are single Lua scripts (``edge/store/lua/``), so they are atomic across every
worker and host. Each settlement and credit appends an entry to the ledger
stream; :mod:`edge.billing.ledger_writer` copies those entries into SQL.

Redis may fail under them. A settlement keeps trying for a moment while Redis
is away or healing (:mod:`edge.billing.heal`), then is kept for later (retried by this
process, and in its spool, :mod:`edge.billing.spool`, should it die): a client who was
answered is always charged. A reservation that vanished with an older
generation of Redis is charged anyway, on top of the healed balance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge.billing.caps import cap_window, load_cap_window
from edge.billing.entries import CreditEntry, Entry, UsageEntry, decode, script_fields
from edge.billing.money import format_usd, token_cost
from edge.errors import InsufficientCredit, RateLimited, ServiceUnavailable
from edge.store.codes import CreditCode, ReplayCode, ReserveCode, SettleCode
from edge.store.generation import HotStale, generation_token
from edge.store.hotstore import RedisUnavailable

if TYPE_CHECKING:
    from edge.billing.spool import Spool
    from edge.db.models import Account
    from edge.identity.keys import KeyRecord
    from edge.store.hotstore import HotStore

__all__ = ["Billing", "CreditResult", "HotStoreHealing", "PendingSettlement", "Reservation",
           "Settlement", "worst_case_tokens"]

log = logging.getLogger(__name__)

#: How the refusal of a capped key names its window.
_CAP_WINDOWS = {"daily": "today (UTC)", "weekly": "this week (UTC)",
                "monthly": "this month (UTC)", "never": "in all"}

#: Seconds a credit reference is remembered in Redis (SQL's unique index is forever).
CREDIT_MARKER_TTL = 90 * 24 * 3600
#: Seconds a settlement keeps trying while Redis is away or healing, before it is
#: kept for later (the client is answered meanwhile).
SETTLE_PATIENCE = 3.0
#: Errors of a Redis that is away or refuses until it is healed.
_AWAY = (*RedisUnavailable, HotStale)


class HotStoreHealing(ServiceUnavailable):
    """Redis is being rebuilt from SQL after it lost or rolled back its state."""

    code = "service_unavailable"


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
    generation: str = ""  # of the hot store that holds it
    #: What the key's per-minute buckets hold after this reservation (None: not known).
    requests_left: int | None = None
    tokens_left: int | None = None

    def usage(self, prompt_tokens: int, completion_tokens: int, **details: Any) -> UsageEntry:
        """The usage entry of this request, priced at the reservation's prices.

        ``details`` are the entry's other fields (``model``, ``node_id``,
        ``endpoint``, ``latency_ms``, ``status``, ``streamed``, ``cancelled``,
        ``counted_by``); give the result to :meth:`Billing.settle_usage`.
        """
        return UsageEntry.priced(request_id=self.request_id, key_id=self.key.id,
                                 account_id=self.key.account_id,
                                 prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens,
                                 input_price=self.input_price, output_price=self.output_price,
                                 **details)


@dataclasses.dataclass(slots=True, frozen=True)
class Settlement:
    charged: int  # micro-dollars actually taken
    balance: int  # balance after, micro-dollars
    settled: bool  # False when someone (the reaper) settled it first
    deferred: bool = False  # Redis was away: charged later (balance is then -1)


@dataclasses.dataclass(slots=True, frozen=True)
class CreditResult:
    applied: int  # micro-dollars added (negative: taken now)
    balance: int
    duplicate: bool  # the reference was applied before; nothing changed
    #: Micro-dollars of a debit that open reservations hold: taken from what they
    #: release when they settle (what they spend instead becomes shortfall).
    deferred: int = 0


@dataclasses.dataclass(slots=True, frozen=True)
class PendingSettlement:
    """A settlement Redis did not take yet: settle.lua's arguments, kept to retry."""

    request_id: str
    key_id: int
    account_id: int
    cost: int  # micro-dollars to charge
    tokens: int  # tokens to take from the bucket (prompt + completion)
    entry: UsageEntry
    generation: str  # of the hot store the reservation was made in

    def record(self) -> dict[str, str | int]:
        """The arguments as a spool's ``pending`` record holds them (``resv``)."""
        return {"rid": self.request_id, "key": self.key_id, "acct": self.account_id,
                "cost": self.cost, "tokens": self.tokens}


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
    """Reserve, settle and credit against the balances held in Redis.

    ``owner`` names the process in its reservations (see :mod:`edge.billing.heartbeat`):
    once its heartbeat stops, the reaper settles them within seconds. Empty: the
    reservations have no owner, and only their deadline releases them.
    """

    def __init__(self, store: HotStore, *, reservation_ttl_ms: int, owner: str = "",
                 spool: Spool | None = None) -> None:
        self.store = store
        self.reservation_ttl_ms = reservation_ttl_ms
        self.owner = owner
        self.spool = spool
        #: Settlements Redis did not take yet, retried in order.
        self.pending: list[PendingSettlement] = []

    async def reserve(self, key: KeyRecord, request_id: str, *, prompt_tokens: int,
                      completion_tokens: int, input_price: int, output_price: int,
                      meta: dict[str, str | int], ttl_ms: int | None = None) -> Reservation:
        """Hold the worst-case cost of a request.

        ``ttl_ms`` is how long it may stay open before the reaper settles it
        (default: the upstream timeout; a queued job holds it until its deadline).
        A reservation given its own ``ttl_ms`` belongs to its job, not to this
        process: it gets no owner, so this process's death does not release it.

        Raises:
          RateLimited: a per-minute limit is reached (``retry_after`` in seconds).
          InsufficientCredit: the balance, or the key's credit cap, does not cover the
            worst case.
        """
        amount = token_cost(prompt_tokens, completion_tokens, input_price, output_price)
        tokens = prompt_tokens + completion_tokens
        store = self.store
        now = datetime.now(UTC) if key.cap is not None else None
        window = cap_window(key.cap_reset, now) if now is not None else ""  # unused uncapped
        keys = [store.balance(key.account_id), store.limiter(key.id),
                store.reservation(request_id), store.open_reservations,
                store.held(key.account_id), store.generation, store.cap(key.id)]
        args: list[str | int] = [amount, tokens, key.rpm, key.tpm,
                                 ttl_ms or self.reservation_ttl_ms, request_id,
                                 -1 if key.cap is None else key.cap, window,
                                 "key", key.id, "acct", key.account_id, "pin", input_price,
                                 "pout", output_price]
        if self.owner and ttl_ms is None:
            args += ("own", self.owner)
        for field, value in meta.items():
            args += (field, value)
        reply = await store.reserve(keys=keys, args=args)
        if reply[0] == ReserveCode.NOT_LOADED:
            await self.load_balance(key.account_id)
            reply = await store.reserve(keys=keys, args=args)
        if reply[0] == ReserveCode.CAP_NOT_LOADED and now is not None:
            await load_cap_window(store, key.id, key.cap_reset, now)
            reply = await store.reserve(keys=keys, args=args)
        code, value = reply[0], reply[1]
        if code == ReserveCode.RESERVED:
            return Reservation(request_id, key, amount, tokens, input_price, output_price, value,
                               generation_token(reply[2]),
                               *(int(v) for v in reply[3:5]))
        if code == ReserveCode.HEALING:
            raise HotStoreHealing("The portal is rebuilding its balances after a Redis "
                                  "failure; retry in a second.", retry_after=1)
        if code == ReserveCode.INSUFFICIENT:
            raise InsufficientCredit(
                f"This request may cost up to ${format_usd(amount)} and the account's balance "
                f"is ${format_usd(value)}. Top up the account, or lower max_tokens.")
        if code == ReserveCode.CAPPED:
            raise InsufficientCredit(
                f"This request may cost up to ${format_usd(amount)} and this key's credit "
                f"cap leaves ${format_usd(value)} {_CAP_WINDOWS.get(key.cap_reset, '')}. "
                f"Raise the key's cap, or lower max_tokens.", code="credit_cap_reached")
        if code in (ReserveCode.RPM_LIMITED, ReserveCode.TPM_LIMITED):
            rpm = code == ReserveCode.RPM_LIMITED
            what = "requests" if rpm else "tokens"
            limit = key.rpm if rpm else key.tpm
            raise RateLimited(
                f"Rate limit reached: {limit} {what} per minute for this key. "
                f"Try again in {value / 1000:.1f}s.", retry_after=-(-value // 1000))
        if code == ReserveCode.DUPLICATE:
            # Request ids are unique: this is our own call, run again by the client's
            # retry after its reply was lost. Reserved, if the hash holds what we asked.
            async with store.client.pipeline(transaction=False) as pipe:
                pipe.hmget(store.reservation(request_id), "key", "amount", "tokens")
                pipe.get(store.balance(key.account_id))
                held, balance = await pipe.execute()
            if None not in held and [int(v) for v in held] == [key.id, amount, tokens]:
                generation = await store.client.get(store.generation) or b""
                return Reservation(request_id, key, amount, tokens, input_price, output_price,
                                   int(balance or 0), generation_token(generation))
        raise RuntimeError(f"reserve.lua answered {code}")

    async def settle_usage(self, held: Reservation | str, entry: UsageEntry, *,
                           generation: str = "", spool: bool = True) -> Settlement:
        """Charge ``entry.cost`` for a reserved request and record its usage, once.

        The settlement takes ``entry.tokens`` back from the tokens-per-minute
        bucket's hold and appends ``entry`` (with what was really charged) to the
        ledger stream. It keeps trying while Redis is away or healing, then keeps
        it for later: a client who was answered is always charged.

        Parameters:
          held: the reservation (:meth:`Reservation.usage` makes its entry), or the
            request id of one this process does not hold (a job's, a dead worker's).
          entry: what to charge and record; its ``charged`` is the script's to set.
          generation: the hot store's generation the reservation was made in
            (default: a ``Reservation``'s own); a reservation missing from a later one
            vanished with Redis, and is charged anyway. Empty: unknown (then a missing
            reservation counts as settled).
          spool: keep it for later when Redis does not take it (False: the spool
            drainer, which has it already).

        Raises:
          ValueError: ``entry`` is not the usage of ``held``.
        """
        if isinstance(held, Reservation):
            if (held.request_id, held.key.id) != (entry.request_id, entry.key_id):
                raise ValueError(f"usage of {entry.request_id} (key {entry.key_id}) given to "
                                 f"reservation {held.request_id} (key {held.key.id})")
            generation = generation or held.generation
        elif held != entry.request_id:
            raise ValueError(f"usage of {entry.request_id} given to reservation {held}")
        return await self._settle(entry.cost, entry.tokens, entry, generation=generation,
                                  spool=spool)

    async def settle(self, reservation: Reservation, *, prompt_tokens: int,
                     completion_tokens: int, fields: Mapping[str, str | int]) -> Settlement:
        """Compatibility: :meth:`settle_usage` with the entry's other fields as wire names.

        ``fields`` holds ``model``, ``node``, ``ep``, ``lat``, ``status``, ``st``, ``cx``,
        ``cnt`` (:mod:`edge.billing.entries`); use ``settle_usage(reservation,
        reservation.usage(...))`` instead.
        """
        cost = token_cost(prompt_tokens, completion_tokens, reservation.input_price,
                          reservation.output_price)
        entry = decode({"t": "usage", "rid": reservation.request_id,
                        "key": reservation.key.id, "acct": reservation.key.account_id,
                        "pt": prompt_tokens, "ct": completion_tokens, "cost": cost, **fields})
        assert isinstance(entry, UsageEntry)
        return await self._settle(cost, prompt_tokens + completion_tokens, entry,
                                  generation=reservation.generation, spool=True)

    async def settle_amount(self, cost: int, tokens: int, entry: UsageEntry | Mapping[str, Any],
                            *, generation: str = "", spool: bool = True) -> Settlement:
        """Settle a reservation at ``cost`` micro-dollars and ``tokens``, whatever Redis does.

        For a settlement kept for later (the spool's), whose cost is fixed already.
        ``entry``: a :class:`UsageEntry`, or its wire fields (``{"t": "usage", "rid",
        …}``).
        """
        usage = entry if isinstance(entry, UsageEntry) else decode(entry)
        if not isinstance(usage, UsageEntry):
            raise TypeError(f"settling with a {usage.TYPE} entry")
        return await self._settle(cost, tokens, usage, generation=generation, spool=spool)

    async def _settle(self, cost: int, tokens: int, entry: UsageEntry, *, generation: str,
                      spool: bool) -> Settlement:
        """settle.lua with ``cost`` and ``tokens``, retried while Redis is away or healing."""
        request_id = entry.request_id
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_PATIENCE
        delay = 0.05
        while True:
            try:
                reply = await self._settle_script(cost, tokens, entry)
            except _AWAY as exc:
                reply = None
                log.warning("settling %s: Redis unavailable (%s)", request_id, exc)
            if reply is not None and reply[0] != SettleCode.HEALING:
                break
            if loop.time() > give_up:
                if spool:
                    self._keep_for_later(PendingSettlement(
                        request_id, entry.key_id, entry.account_id, cost, tokens, entry,
                        generation))
                return Settlement(charged=cost, balance=-1, settled=True, deferred=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        return await self._outcome(reply, request_id, cost, entry, generation, spool=spool)

    async def _outcome(self, reply: list[Any], request_id: str, cost: int,
                       entry: UsageEntry, generation: str, *, spool: bool) -> Settlement:
        """What a settle script's answer means: settled, settled before, or lost with Redis."""
        code, charged, balance = reply[0], reply[1], reply[2]
        current = generation_token(reply[3])
        if code == SettleCode.SETTLED:
            if self.spool is not None and spool:
                self.spool.append("done", current, entry.settled(charged))
            return Settlement(charged=charged, balance=balance, settled=True)
        if generation and current != generation:
            # Its reservation vanished with an older Redis: charge what was served.
            log.warning("reservation %s vanished with Redis generation %s; charging it "
                        "on top of generation %s", request_id, generation, current)
            applied = await self._replay_or_spool(entry.settled(cost), generation,
                                                  spool=spool)
            if applied is not False:
                return Settlement(charged=cost, balance=-1, settled=True,
                                  deferred=applied is None)
        return Settlement(charged=0, balance=balance, settled=False)

    async def _settle_script(self, cost: int, tokens: int, entry: UsageEntry) -> list[Any]:
        store = self.store
        account, key = entry.account_id, entry.key_id
        args: list[str | int] = [entry.request_id, cost, tokens,
                                 *script_fields(entry, "settle")]
        reply: list[Any] = await store.settle(
            keys=[store.balance(account), store.limiter(key), store.reservation(entry.request_id),
                  store.open_reservations, store.ledger_stream, store.held(account),
                  store.owed(account), store.generation, store.cap(key)],
            args=args)
        return reply

    def _keep_for_later(self, pending: PendingSettlement) -> None:
        log.error("settling %s: Redis did not take it; retrying it in the background",
                  pending.request_id)
        self.pending.append(pending)
        if self.spool is not None:
            self.spool.append("pending", pending.generation, pending.entry,
                              resv=pending.record())

    async def settle_pending(self) -> int:
        """Try the settlements Redis did not take again; returns how many it took now."""
        done = 0
        while self.pending:
            p = self.pending[0]
            try:
                reply = await self._settle_script(p.cost, p.tokens, p.entry)
            except _AWAY:
                return done
            if reply[0] == SettleCode.HEALING:
                return done
            self.pending.pop(0)
            done += 1
            await self._outcome(reply, p.request_id, p.cost, p.entry, p.generation, spool=True)
        return done

    async def run_pending(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        """Background chore of a process that settles: retry what Redis did not take."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
            if self.pending:
                try:
                    await self.settle_pending()
                except Exception:
                    log.exception("retrying pending settlements failed")

    async def _replay_or_spool(self, usage: UsageEntry, generation: str, *,
                               spool: bool = True) -> bool | None:
        """True: charged now; False: it was charged before; None: kept for later."""
        try:
            return await self.replay(usage)
        except Exception as exc:  # Redis or SQL away: the spool drainer does it later
            log.warning("could not charge %s now (%r); kept in the spool", usage.request_id,
                        exc)
            if self.spool is not None and spool:
                self.spool.append("owed", generation, usage)
            return None

    async def replay(self, entry: Entry | Mapping[str, Any]) -> bool:
        """Apply a settlement or credit Redis lost, once, on top of the healed balance.

        SQL is asked first: a change it holds was not lost. Returns True when it
        was applied now (False: SQL or an earlier replay has it).

        ``entry``: a usage entry with what it ``charged`` (or should have), or a
        credit entry with its ``amount``; or either's wire fields (a spool's copy).

        Raises:
          HotStoreHealing: Redis is being rebuilt; try again later.
          ValueError: a usage entry without ``charged``.
        """
        from edge.db.models import LedgerEntry, UsageRecord
        from edge.metrics import SPOOL_REPLAYS

        if not isinstance(entry, UsageEntry | CreditEntry):
            entry = decode(entry)
        usage = isinstance(entry, UsageEntry)
        reference = entry.reference
        if isinstance(entry, UsageEntry):
            if entry.charged is None:
                raise ValueError(f"replaying {reference} without what it charged")
            if await UsageRecord.exists(request_id=entry.request_id):
                return False
            amount, shown = -entry.charged, "charged"
        else:
            if await LedgerEntry.exists(reference=reference):
                return False
            amount, shown = entry.amount, "amount"
        account_id = entry.account_id
        store = self.store
        args: list[Any] = [amount, CREDIT_MARKER_TTL, shown, *script_fields(entry, "replay")]
        keys = [store.balance(account_id), store.applied(reference), store.ledger_stream,
                store.generation]
        reply = await store.replay(keys=keys, args=args)
        if reply[0] == ReplayCode.NOT_LOADED and await store.client.exists(store.generation):
            await self.load_balance(account_id)
            reply = await store.replay(keys=keys, args=args)
        code = ReplayCode(reply[0])
        if code is ReplayCode.NOT_LOADED:
            raise HotStoreHealing("The hot store is healing.", retry_after=1)
        if code is ReplayCode.APPLIED:
            SPOOL_REPLAYS.inc()
            log.warning("charged again what Redis lost: %s, %d micro-dollars", reference,
                        -reply[1] if usage else reply[1])
        return code is ReplayCode.APPLIED

    async def progress(self, request_id: str, prompt_tokens: int, completion_tokens: int,
                       *, ttl_ms: int | None = None) -> None:
        """Record what a stream has delivered so far and push back its deadline.

        If the worker dies mid-stream, the reaper charges these figures.
        """
        store = self.store
        try:
            await store.progress(
                keys=[store.reservation(request_id), store.open_reservations],
                args=[request_id, prompt_tokens, completion_tokens,
                      ttl_ms or self.reservation_ttl_ms])
        except _AWAY as exc:  # a record missed: the stream goes on, its settlement counts
            log.warning("progress of %s not recorded: %r", request_id, exc)

    async def credit(self, account_id: int, amount: int, *, reference: str, kind: str,
                     note: str = "") -> CreditResult:
        """Add ``amount`` micro-dollars (negative: take) once per ``reference``.

        A debit takes what the balance has now and defers the rest, up to what the
        account's open reservations hold, to when they settle (``deferred``); what is
        left beyond both is the shortfall. A top-up does not pay deferred debt.
        """
        store = self.store
        keys = [store.balance(account_id), store.applied(reference), store.ledger_stream,
                store.held(account_id), store.owed(account_id), store.generation]
        entry = CreditEntry(reference=reference, account_id=account_id, kind=kind,
                            amount=amount,
                            note=note[:500])
        args: list[str | int] = [amount, CREDIT_MARKER_TTL, *script_fields(entry, "credit")]
        reply = await store.credit(keys=keys, args=args)
        if reply[0] == CreditCode.NOT_LOADED:
            await self.load_balance(account_id)
            reply = await store.credit(keys=keys, args=args)
        if reply[0] == CreditCode.HEALING:
            raise HotStoreHealing("The portal is rebuilding its balances after a Redis "
                                  "failure; nothing was credited. Try again in a second.",
                                  retry_after=1)
        code, applied, balance = reply[:3]
        if code == CreditCode.NOT_LOADED:
            raise RuntimeError("balance vanished while crediting")
        return CreditResult(applied=applied, balance=balance,
                            duplicate=code == CreditCode.DUPLICATE,
                            deferred=int(reply[3]) if len(reply) > 3 else 0)

    async def balance(self, account_id: int) -> int:
        """An account's live balance: what is left after open reservations."""
        raw = await self.store.client.get(self.store.balance(account_id))
        if raw is None:
            return await self.load_balance(account_id)
        return int(raw)

    async def balances(self, accounts: Sequence[Account]) -> dict[int, int]:
        """Many accounts' live balances in one round trip, by account id; the SQL balance
        of one Redis does not hold yet (nothing is pending for it then, see
        :meth:`load_balance`)."""
        if not accounts:
            return {}
        raw = await self.store.client.mget([self.store.balance(a.id) for a in accounts])
        return {account.id: int(value) if value is not None else account.balance
                for account, value in zip(accounts, raw, strict=True)}

    async def load_balance(self, account_id: int) -> int:
        """Seed Redis with the SQL balance of an account it does not hold yet.

        Correct because an account absent from Redis has nothing pending in the ledger
        stream or in reservations: both need its balance entry to exist.
        """
        from edge.db.models import Account

        row = await Account.get_or_none(id=account_id).only("id", "balance")
        sql_balance = row.balance if row else 0
        await self.store.client.set(self.store.balance(account_id), sql_balance, nx=True)
        return int(await self.store.client.get(self.store.balance(account_id)) or 0)
