"""Ledger stream entries: the typed values, their one encoder and their one decoder.

Every balance change first becomes an entry of the Redis stream ``$ns:ledger``
(:func:`edge.store.keys.ledger_stream`); :mod:`edge.billing.ledger_writer` copies the
entries into SQL, and each process's spool (:mod:`edge.billing.spool`) keeps a JSON
copy of its settlements. An entry on the wire is a flat map of short field names to
strings (integers as decimal text, flags as ``1``/``0``); its ``t`` says which kind:

``usage`` — a request was served (:class:`UsageEntry`)::

    t=usage rid=<request id> key=<key id> acct=<account id> pt=<prompt tokens>
    ct=<completion tokens>
    cost=<real cost> model=<name> node=<node id, or empty> ep=<endpoint> lat=<ms>
    status=<HTTP status> st=<streamed 1/0> cx=<cancelled 1/0> cnt=<node|edge>
    charged=<taken>  [owed_paid=<refund debt collected>] [owed_void=<debt written off>]

  Written by ``settle.lua`` (it adds ``charged`` and, when not zero, ``owed_paid`` and
  ``owed_void``, ahead of the fields it is given) and, for a settlement Redis lost,
  by ``replay.lua`` (it adds ``charged``, never the debt fields).

``credit`` — a top-up, refund or adjustment (:class:`CreditEntry`)::

    t=credit ref=<reference> acct=<account id> kind=<ledger kind> note=<text>
    amount=<applied, signed> requested=<asked> owed=<deferred to open reservations>

  Written by ``credit.lua`` (it adds ``amount``, ``requested`` and ``owed``), by
  ``replay.lua`` for a credit Redis lost (it adds ``amount``), by the heal for refund
  debt it collects (reference ``owed-heal:<generation>:<account id>``, with a negative
  ``owed``: :func:`owed_heal_reference`), and handed straight to the writer by a
  credit SQL takes alone while no Redis answers.

Every field but ``t`` and the identifiers is optional on the wire: entries written
before a field existed decode with its default (``ep`` ``chat``, ``status`` 200,
``cnt`` ``node``, ``requested`` None: as applied, zero otherwise). An entry from before
accounts has no ``acct``: its account is its ``key`` (migrated accounts kept their
key's id). Unknown fields are ignored, so a newer writer's entry still decodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from edge.billing.money import token_cost

__all__ = ["CreditEntry", "Entry", "EntryError", "MalformedEntry", "UnknownEntry",
           "UsageEntry", "decode", "encode", "owed_heal_reference", "script_fields"]


class EntryError(ValueError):
    """A stream entry that does not decode."""


class UnknownEntry(EntryError):
    """An entry whose ``t`` is none this portal knows (skipped by the writer)."""


class MalformedEntry(EntryError):
    """An entry of a known kind that misses a field it cannot do without."""


#: Who counted the tokens of a usage: the node (its ``usage``) or the edge (from
#: what it relayed, when the node sent none).
CountedBy = Literal["node", "edge"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UsageEntry:
    """One served (or refused, or cancelled) request's charge and usage row.

    Money in micro-dollars. ``cost`` is what the edge computed from the tokens;
    ``charged`` is what the settle script really took (None until it ran: never
    more than the balance allowed), with the refund debt the settlement collected
    (``owed_paid``) or wrote off (``owed_void``).
    """

    TYPE: ClassVar[str] = "usage"

    request_id: str
    key_id: int
    account_id: int = 0  # 0: the key's own id (an entry from before accounts)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: int = 0
    model: str = ""
    node_id: int | None = None
    endpoint: str = "chat"
    latency_ms: int = 0  # milliseconds from the request to its settlement
    status: int = 200  # HTTP status; 499 when the client went away
    streamed: bool = False
    cancelled: bool = False
    counted_by: CountedBy = "node"
    charged: int | None = None
    owed_paid: int = 0
    owed_void: int = 0

    def __post_init__(self) -> None:
        if not self.account_id:
            object.__setattr__(self, "account_id", self.key_id)

    @classmethod
    def priced(cls, *, request_id: str, key_id: int, account_id: int, prompt_tokens: int,
               completion_tokens: int, input_price: int, output_price: int,
               **details: Any) -> UsageEntry:
        """The usage of a request, its ``cost`` computed from prices per 1M tokens.

        ``details`` are the other fields (``model``, ``node_id``, ``endpoint``, ...).
        """
        return cls(request_id=request_id, key_id=key_id, account_id=account_id,
                   prompt_tokens=prompt_tokens,
                   completion_tokens=completion_tokens,
                   cost=token_cost(prompt_tokens, completion_tokens, input_price, output_price),
                   **details)

    @property
    def reference(self) -> str:
        """The ledger's reference of the charge (SQL's unique key)."""
        return f"usage:{self.request_id}"

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens: what the tokens-per-minute bucket is charged."""
        return self.prompt_tokens + self.completion_tokens

    def settled(self, charged: int) -> UsageEntry:
        """This entry as the settle script wrote it, having taken ``charged``."""
        return dataclasses.replace(self, charged=charged)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CreditEntry:
    """A change of a balance by reference: a top-up, refund or adjustment.

    Money in micro-dollars. ``amount`` is what was applied (negative: taken),
    ``requested`` what was asked (None: the same), ``owed`` the part of a debit
    deferred to what the account's open reservations release (``edge/store/lua/credit.lua``;
    negative for debt a heal collected).
    """

    TYPE: ClassVar[str] = "credit"

    reference: str
    account_id: int
    kind: str  # the ledger kind: topup, refund, adjustment, ...
    amount: int = 0
    requested: int | None = None
    owed: int = 0
    note: str = ""

    @property
    def asked(self) -> int:
        """What was asked: ``requested``, or ``amount`` when that was not recorded."""
        return self.amount if self.requested is None else self.requested


#: A ledger stream entry of any kind.
Entry = UsageEntry | CreditEntry

Script = Literal["settle", "credit", "replay"]


def owed_heal_reference(generation: str, account_id: int) -> str:
    """The reference of refund debt a heal collects from an account (``generation``: the
    heal's)."""
    return f"owed-heal:{generation}:{account_id}"


def _parts(entry: Entry) -> tuple[list[str | int], list[str | int], list[str | int]]:
    """The wire fields as ``name, value, …`` in three parts, in the scripts' order.

    First what every script that writes the kind adds itself (``charged``; ``amount``),
    then what only settle.lua or credit.lua adds (the debt fields; ``requested`` and
    ``owed``), then what the caller passes.
    """
    if isinstance(entry, UsageEntry):
        applied: list[str | int] = [] if entry.charged is None else ["charged", entry.charged]
        debt: list[str | int] = []
        if entry.owed_paid:
            debt += ("owed_paid", entry.owed_paid)
        if entry.owed_void:
            debt += ("owed_void", entry.owed_void)
        return applied, debt, [
            "t", UsageEntry.TYPE, "rid", entry.request_id, "key", entry.key_id,
            "acct", entry.account_id, "pt", entry.prompt_tokens,
            "ct", entry.completion_tokens, "cost", entry.cost,
            "model", entry.model, "node", "" if entry.node_id is None else entry.node_id,
            "ep", entry.endpoint, "lat", entry.latency_ms, "status", entry.status,
            "st", int(entry.streamed), "cx", int(entry.cancelled), "cnt", entry.counted_by]
    if isinstance(entry, CreditEntry):
        asked: list[str | int] = [] if entry.requested is None else ["requested",
                                                                      entry.requested]
        return ["amount", entry.amount], [*asked, "owed", entry.owed], [
            "t", CreditEntry.TYPE, "ref", entry.reference, "acct", entry.account_id,
            "kind", entry.kind, "note", entry.note]
    raise TypeError(f"not a ledger entry: {entry!r}")


def encode(entry: Entry) -> dict[str, str | int]:
    """The entry's wire fields, in the order the scripts write them.

    Values are ``str`` or ``int`` (what ``XADD`` and the scripts' ARGV take, and what
    JSON keeps); flags are 1 or 0, a missing node is ``""``; ``charged`` (None) and
    the debt fields (zero) are left out when there is nothing to say.
    """
    applied, written, passed = _parts(entry)
    flat = applied + written + passed
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def script_fields(entry: Entry, script: Script) -> list[str | int]:
    """The ``field, value, …`` ARGV tail that ``script``'s ``XADD`` appends to the stream.

    Leaves out what the script writes itself: settle.lua ``charged`` and the debt
    fields; credit.lua ``amount``, ``requested`` and ``owed``; replay.lua ``charged``
    or ``amount``.
    """
    _applied, written, passed = _parts(entry)
    return passed if script != "replay" else written + passed


def decode(raw: Mapping[Any, Any]) -> Entry:
    """The entry in ``raw``: a stream entry's fields (bytes), or a spool's JSON copy.

    Names and values may be bytes, text or numbers; fields missing from an older
    entry get their defaults, unknown ones are ignored.

    Raises:
      UnknownEntry: ``t`` is missing or names no kind this portal knows.
      MalformedEntry: a field the kind cannot do without is missing or not a number.
    """
    fields = {_text(name): _text(value) for name, value in raw.items()}
    kind = fields.get("t")
    try:
        if kind == UsageEntry.TYPE:
            return _decode_usage(fields)
        if kind == CreditEntry.TYPE:
            return _decode_credit(fields)
    except (KeyError, ValueError) as exc:
        raise MalformedEntry(f"{kind} entry {fields!r}: {exc!r}") from exc
    raise UnknownEntry(f"ledger entry of unknown type {kind!r}: {fields!r}")


def _decode_usage(fields: dict[str, str]) -> UsageEntry:
    charged = fields.get("charged")
    return UsageEntry(
        request_id=fields["rid"], key_id=int(fields["key"]),
        account_id=int(fields.get("acct") or fields["key"]),
        prompt_tokens=_int(fields, "pt"), completion_tokens=_int(fields, "ct"),
        # cost is the edge's own figure: an entry without one cost what it charged.
        cost=int(fields.get("cost") or charged or 0),
        model=fields.get("model", ""), node_id=int(fields["node"]) if fields.get("node") else None,
        endpoint=fields.get("ep", "chat"), latency_ms=_int(fields, "lat"),
        status=_int(fields, "status", 200), streamed=fields.get("st") == "1",
        cancelled=fields.get("cx") == "1",
        counted_by="edge" if fields.get("cnt") == "edge" else "node",
        charged=int(charged) if charged else None,
        owed_paid=_int(fields, "owed_paid"), owed_void=_int(fields, "owed_void"))


def _decode_credit(fields: dict[str, str]) -> CreditEntry:
    requested = fields.get("requested")
    return CreditEntry(reference=fields["ref"],
                       account_id=int(fields.get("acct") or fields["key"]), kind=fields["kind"],
                       amount=int(fields["amount"]),
                       requested=int(requested) if requested else None,
                       owed=_int(fields, "owed"), note=fields.get("note", ""))


def _int(fields: dict[str, str], name: str, default: int = 0) -> int:
    value = fields.get(name)
    return int(value) if value else default


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, bool):  # before int: True is an int
        return "1" if value else "0"
    if value is None:
        return ""
    return str(value)
