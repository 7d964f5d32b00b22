"""Ledger stream entries: one encoder, one decoder, and the wire format they keep.

Unit tests for every kind (round trips, entries in the format written before the
typed values existed), then on the test Redis: what the scripts really append
decodes to what was settled, credited or replayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge.billing.entries import (
    CreditEntry,
    MalformedEntry,
    UnknownEntry,
    UsageEntry,
    decode,
    encode,
    owed_heal_reference,
    script_fields,
)
from edge.billing.money import token_cost
from edge.billing.reservations import Billing
from edge.identity.keys import KeyRecord
from edge.store.hotstore import HotStore
from tests.support.hot import hot_store

FULL_USAGE = UsageEntry(
    request_id="req-1", key_id=7, prompt_tokens=12, completion_tokens=30, cost=75,
    model="m1", node_id=3, endpoint="chat", latency_ms=420, status=200, streamed=True,
    cancelled=False, counted_by="edge", charged=75, owed_paid=20, owed_void=5)

EVERY_KIND = [
    pytest.param(FULL_USAGE, id="usage, settled, with refund debt"),
    pytest.param(UsageEntry(request_id="req-2", key_id=1), id="usage, bare"),
    pytest.param(UsageEntry(request_id="job-1", key_id=2, endpoint="job-chat", status=499,
                            cancelled=True, charged=0), id="usage of a cancelled job"),
    pytest.param(CreditEntry(reference="checkout:cs_1", account_id=7, kind="topup",
                             amount=5_000_000, requested=5_000_000, note="Stripe"),
                 id="credit, top-up"),
    pytest.param(CreditEntry(reference="refund:cs_1:re_1", account_id=7, kind="refund",
                             amount=-90_000, requested=-5_000_000, owed=4_910_000),
                 id="credit, refund deferred to reservations"),
    pytest.param(CreditEntry(reference=owed_heal_reference("abcd", 7), account_id=7,
                             kind="refund", amount=-300, requested=-400, owed=-400,
                             note="refund debt collected when Redis was rebuilt"),
                 id="credit, refund debt a heal collected"),
    pytest.param(CreditEntry(reference="adj:1", account_id=3, kind="adjustment", amount=10),
                 id="credit, requested not recorded"),
]


def as_redis(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """What XRANGE gives back for an entry XADD got as ``fields``."""
    return {str(k).encode(): str(v).encode() for k, v in fields.items()}


@pytest.mark.parametrize("entry", EVERY_KIND)
def test_every_kind_round_trips_as_text_bytes_and_json(entry) -> None:
    import json

    fields = encode(entry)
    assert all(isinstance(v, str | int) and not isinstance(v, bool) for v in fields.values())
    assert decode(fields) == entry
    assert decode(as_redis(fields)) == entry
    assert decode(json.loads(json.dumps(fields))) == entry  # a spool's copy


def test_the_wire_names_are_the_short_ones() -> None:
    assert encode(FULL_USAGE) == {
        "charged": 75, "owed_paid": 20, "owed_void": 5, "t": "usage", "rid": "req-1",
        "key": 7, "acct": 7, "pt": 12, "ct": 30, "cost": 75, "model": "m1", "node": 3, "ep": "chat",
        "lat": 420, "status": 200, "st": 1, "cx": 0, "cnt": "edge"}
    credit = CreditEntry(reference="evt_1", account_id=7, kind="topup", amount=500, note="n")
    assert encode(credit) == {"amount": 500, "owed": 0, "t": "credit", "ref": "evt_1",
                              "acct": 7, "kind": "topup", "note": "n"}
    assert encode(UsageEntry(request_id="r", key_id=1))["node"] == ""


def test_scripts_get_all_but_what_they_write_themselves() -> None:
    settle = script_fields(FULL_USAGE, "settle")
    names = settle[0::2]
    assert "charged" not in names and "owed_paid" not in names and "owed_void" not in names
    assert names[:3] == ["t", "rid", "key"]
    replay = script_fields(FULL_USAGE, "replay")[0::2]
    assert "charged" not in replay and "owed_paid" in replay
    credit = CreditEntry(reference="r", account_id=1, kind="topup", amount=5, requested=5, owed=1)
    assert script_fields(credit, "credit") == ["t", "credit", "ref", "r", "acct", 1,
                                               "kind", "topup", "note", ""]
    assert "requested" in script_fields(credit, "replay")[0::2]


# Entries exactly as each writer put them on the stream (or in a spool) before the
# typed values: all of them must still decode, with the writer's old defaults.
OLD_ENTRIES = [
    pytest.param(  # settle.lua after the API's settle(): charged first, then its fields
        {b"charged": b"50", b"owed_paid": b"7", b"t": b"usage", b"rid": b"r1", b"key": b"4",
         b"pt": b"10", b"ct": b"20", b"cost": b"50", b"model": b"m1", b"node": b"2",
         b"ep": b"completions", b"lat": b"31", b"status": b"200", b"st": b"1", b"cx": b"0",
         b"cnt": b"node"},
        UsageEntry(request_id="r1", key_id=4, prompt_tokens=10, completion_tokens=20, cost=50,
                   model="m1", node_id=2, endpoint="completions", latency_ms=31, status=200,
                   streamed=True, counted_by="node", charged=50, owed_paid=7),
        id="api usage"),
    pytest.param(  # the jobs API's refusal: no node, latency, stream flag or counter
        {b"charged": b"0", b"t": b"usage", b"rid": b"j1", b"key": b"4", b"pt": b"0",
         b"ct": b"0", b"cost": b"0", b"model": b"m1", b"ep": b"job-chat", b"status": b"500",
         b"cx": b"1"},
        UsageEntry(request_id="j1", key_id=4, model="m1", endpoint="job-chat", status=500,
                   cancelled=True, charged=0),
        id="job refused"),
    pytest.param(  # the reaper: the key as text, node empty, st from the reservation
        {b"charged": b"24", b"t": b"usage", b"rid": b"dead", b"key": b"1", b"pt": b"10",
         b"ct": b"7", b"cost": b"24", b"model": b"", b"node": b"", b"ep": b"chat",
         b"lat": b"12", b"status": b"499", b"st": b"0", b"cx": b"1"},
        UsageEntry(request_id="dead", key_id=1, prompt_tokens=10, completion_tokens=7,
                   cost=24, latency_ms=12, status=499, cancelled=True, charged=24),
        id="reaped"),
    pytest.param(  # replay.lua: charged, then the spool's fields; JSON numbers
        {"charged": 25, "t": "usage", "rid": "lost", "key": 9, "pt": 25, "ct": 0,
         "cost": 25, "model": "m"},
        UsageEntry(request_id="lost", key_id=9, prompt_tokens=25, cost=25, model="m",
                   charged=25),
        id="replayed usage"),
    pytest.param(  # a usage written without cost: it cost what it charged
        {"t": "usage", "rid": "x", "key": "3", "pt": "3", "ct": "4", "charged": "9"},
        UsageEntry(request_id="x", key_id=3, prompt_tokens=3, completion_tokens=4, cost=9,
                   charged=9),
        id="usage without cost"),
    pytest.param(  # credit.lua: amount, requested, owed, then the caller's fields
        {b"amount": b"-90000", b"requested": b"-5000000", b"owed": b"4910000",
         b"t": b"credit", b"ref": b"refund:cs:re_1", b"key": b"7", b"kind": b"refund",
         b"note": b"Stripe refund"},
        CreditEntry(reference="refund:cs:re_1", account_id=7, kind="refund", amount=-90_000,
                    requested=-5_000_000, owed=4_910_000, note="Stripe refund"),
        id="credit"),
    pytest.param(  # the tests' and the SQL-only credit: no requested, owed or note
        {"t": "credit", "ref": "open:1", "key": "1", "kind": "topup", "amount": "1000"},
        CreditEntry(reference="open:1", account_id=1, kind="topup", amount=1000),
        id="credit, bare"),
    pytest.param(  # the heal's collection of refund debt
        {b"amount": b"-300", b"requested": b"-400", b"owed": b"-400", b"t": b"credit",
         b"ref": b"owed-heal:abcd:7", b"key": b"7", b"kind": b"refund",
         b"note": b"refund debt collected when Redis was rebuilt"},
        CreditEntry(reference="owed-heal:abcd:7", account_id=7, kind="refund", amount=-300,
                    requested=-400, owed=-400,
                    note="refund debt collected when Redis was rebuilt"),
        id="owed-heal"),
]


@pytest.mark.parametrize(("raw", "expected"), OLD_ENTRIES)
def test_entries_in_the_old_format_decode(raw, expected) -> None:
    assert decode(raw) == expected


def test_unknown_fields_are_ignored_and_unknown_kinds_refused() -> None:
    fields = {**encode(FULL_USAGE), "newer": "field"}
    assert decode(fields) == FULL_USAGE
    with pytest.raises(UnknownEntry):
        decode({"t": "gift", "key": "1"})
    with pytest.raises(UnknownEntry):
        decode({"rid": "r", "key": "1"})
    with pytest.raises(MalformedEntry):
        decode({"t": "usage", "key": "1", "charged": "2"})  # no request id
    with pytest.raises(MalformedEntry):
        decode({"t": "credit", "ref": "r", "key": "one", "kind": "topup", "amount": "1"})


def test_a_priced_usage_costs_what_money_says() -> None:
    entry = UsageEntry.priced(request_id="r", key_id=1, account_id=1, prompt_tokens=1000,
                              completion_tokens=333, input_price=500_000,
                              output_price=1_500_000, model="m")
    assert entry.cost == token_cost(1000, 333, 500_000, 1_500_000)
    assert (entry.tokens, entry.reference, entry.model) == (1333, "usage:r", "m")
    assert entry.settled(7).charged == 7 and entry.charged is None


# -- what the scripts append ---------------------------------------------------------


def key(key_id: int = 1) -> KeyRecord:
    return KeyRecord(id=key_id, prefix="sk-ip-test0000", key_hash="", name="t", rpm=1000,
                     tpm=10_000_000, revoked=False, frozen=False, expires_at=None)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[HotStore]:
    async with hot_store(redis_url, "entries") as hot:
        yield hot


async def stream(store: HotStore) -> list:
    return [decode(fields) for _id, fields in await store.client.xrange(store.ledger_stream)]


async def test_settle_usage_appends_the_entry_it_was_given(store: HotStore) -> None:
    await store.client.set(store.balance(1), 10_000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    held = await billing.reserve(key(), "r1", prompt_tokens=100, completion_tokens=100,
                                 input_price=1_000_000, output_price=2_000_000,
                                 meta={"model": "m1"})
    usage = held.usage(10, 20, model="m1", node_id=4, endpoint="chat", latency_ms=12,
                       streamed=True, counted_by="edge")
    assert usage.cost == 50
    settled = await billing.settle_usage(held, usage)
    assert (settled.charged, settled.balance, settled.settled) == (50, 9950, True)
    assert await stream(store) == [usage.settled(50)]
    again = await billing.settle_usage(held, usage)
    assert not again.settled and len(await stream(store)) == 1


async def test_settle_usage_refuses_another_request_s_usage(store: HotStore) -> None:
    await store.client.set(store.balance(1), 10_000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    held = await billing.reserve(key(), "r1", prompt_tokens=1, completion_tokens=1,
                                 input_price=1, output_price=1, meta={})
    with pytest.raises(ValueError):
        await billing.settle_usage(held, UsageEntry(request_id="r2", key_id=1))
    with pytest.raises(ValueError):
        await billing.settle_usage("r2", UsageEntry(request_id="r1", key_id=1))
    assert await store.client.exists(store.reservation("r1"))


async def test_the_compatibility_wrappers_write_the_same_entry(store: HotStore) -> None:
    await store.client.set(store.balance(1), 10_000)
    billing = Billing(store, reservation_ttl_ms=60_000)
    fields: dict[str, str | int] = {"model": "m1", "node": 4, "ep": "chat", "lat": 12,
                                    "status": 200, "st": 1, "cx": 0, "cnt": "edge"}
    first = await billing.reserve(key(), "a", prompt_tokens=100, completion_tokens=100,
                                  input_price=1_000_000, output_price=2_000_000, meta={})
    await billing.settle(first, prompt_tokens=10, completion_tokens=20, fields=fields)
    second = await billing.reserve(key(), "b", prompt_tokens=100, completion_tokens=100,
                                   input_price=1_000_000, output_price=2_000_000, meta={})
    await billing.settle_amount(50, 30, {"t": "usage", "rid": "b", "key": 1,
                                                 "pt": 10, "ct": 20, "cost": 50, **fields})
    a, b = await stream(store)
    expected = second.usage(10, 20, model="m1", node_id=4, latency_ms=12, streamed=True,
                            counted_by="edge").settled(50)
    assert b == expected and a == first.usage(10, 20, model="m1", node_id=4, latency_ms=12,
                                              streamed=True, counted_by="edge").settled(50)


async def test_a_credit_appends_a_credit_entry(store: HotStore) -> None:
    await store.client.set(store.balance(1), 100)
    billing = Billing(store, reservation_ttl_ms=60_000)
    await billing.credit(1, 700, reference="evt_1", kind="topup", note="Stripe")
    await billing.credit(1, -1000, reference="refund_1", kind="refund")
    assert await stream(store) == [
        CreditEntry(reference="evt_1", account_id=1, kind="topup", amount=700, requested=700,
                    note="Stripe"),
        CreditEntry(reference="refund_1", account_id=1, kind="refund", amount=-800,
                    requested=-1000)]


def test_an_entry_from_before_accounts_is_its_keys_accounts() -> None:
    # Migrated accounts kept their key's id: an entry naming only the key names both.
    usage = decode({b"t": b"usage", b"rid": b"r", b"key": b"9", b"charged": b"1"})
    credit = decode({"t": "credit", "ref": "x", "key": "9", "kind": "topup", "amount": "5"})
    assert isinstance(usage, UsageEntry) and (usage.key_id, usage.account_id) == (9, 9)
    assert isinstance(credit, CreditEntry) and credit.account_id == 9
    newer = decode({"t": "usage", "rid": "r", "key": "9", "acct": "4", "charged": "1"})
    assert isinstance(newer, UsageEntry) and (newer.key_id, newer.account_id) == (9, 4)
