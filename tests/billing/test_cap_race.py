"""A key's credit cap holds however many requests race, on two edge workers.

The cap lives beside the balance in ``reserve.lua``: 200 concurrent requests on a key
whose cap is far below its account's balance spend at most the cap, the rest are
refused with 402 ``credit_cap_reached``, and the account's other (uncapped) key spends
on. Then, in process: the cap's windows (UTC days, ISO weeks from Monday, months) and a
cap window Redis lost, reloaded from SQL's usage rows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from edge.billing.caps import cap_window, charged_in_window, load_cap_window, window_start
from edge.billing.money import parse_usd, token_cost
from edge.billing.reservations import worst_case_tokens
from edge.db.models import Account, ApiKey, UsageRecord
from edge.identity.accounts import KeySettings, create_key, update_key
from simnode.tokenizer import chat_prompt_tokens
from tests.support.deployment import Deployment, deploy
from tests.support.inprocess import InProcessPortal, NodeDouble
from tests.support.workers import answering_workers

MODEL, SERVED = "m1", "sim-m1"
#: USD per 1M tokens: one short request costs about $0.17, its worst case about $0.26.
INPUT_PRICE, OUTPUT_PRICE = "1000", "10000"
REPLY_TOKENS = 16
MESSAGES = [{"role": "user", "content": "Tell me something."}]
#: The exact bytes sent: the reservation's prompt bound is their length.
BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": REPLY_TOKENS},
                  separators=(",", ":")).encode()
PRICES = (parse_usd(INPUT_PRICE), parse_usd(OUTPUT_PRICE))
#: What a request reserves (its worst case) and what it is charged (what simnode counts).
WORST = token_cost(*worst_case_tokens(len(BODY), REPLY_TOKENS, 1, 8192), *PRICES)
COST = token_cost(chat_prompt_tokens(MESSAGES), REPLY_TOKENS, *PRICES)
#: The account's credit, and the capped key's cap: five worst cases.
CREDIT = parse_usd("20")
CAP = 5 * WORST
#: Most requests the cap can serve: each is admitted only while the cap has room for its
#: worst case, after the ones before it were charged what they cost.
MOST = (CAP - WORST) // COST + 1


def usd(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}"


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


@pytest.fixture(scope="module")
def racing(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("caprace"), redis_url, model=MODEL, served=SERVED,
                node_args=("--reply-tokens", str(REPLY_TOKENS)), workers=2,
                input_price=INPUT_PRICE, output_price=OUTPUT_PRICE) as made:
        yield made


async def fire(url: str, key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(
            client.post("/v1/chat/completions", content=BODY, headers=auth(key))
            for _ in range(count))))


def one(deployment: Deployment, key: str) -> httpx.Response:
    return httpx.post(deployment.url + "/v1/chat/completions", content=BODY, headers=auth(key),
                      timeout=30)


def key_data(deployment: Deployment, key: str) -> dict:
    response = httpx.get(deployment.url + "/v1/key", headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def charged(deployment: Deployment, key_id: int) -> int:
    (total,), = deployment.sql("SELECT COALESCE(SUM(cost), 0) FROM usage_log WHERE key_id=?",
                               key_id)
    return int(total)


def test_200_racing_requests_never_spend_more_than_the_cap(racing: Deployment) -> None:
    assert COST < WORST < CAP < CREDIT // 10  # the cap, not the balance, is what runs out
    owner = racing.portal.cli_json("keys", "create", "--name", "owner", "--credit",
                                   usd(CREDIT))
    account = owner["account"]
    capped = racing.portal.cli_json("keys", "create", "--name", "capped", "--account",
                                    str(account), "--scope", "api", "--cap", usd(CAP),
                                    "--cap-reset", "daily")
    assert (capped["account"], capped["cap_micros"]) == (account, CAP)
    capped_id, capped_key = capped["id"], capped["key"]
    assert len(asyncio.run(answering_workers(racing.url, capped_key, count=40))) == 2

    responses = asyncio.run(fire(racing.url, capped_key, 200))

    statuses = [r.status_code for r in responses]
    served = statuses.count(200)
    assert set(statuses) <= {200, 402}, statuses
    assert 1 <= served <= MOST, statuses
    refusals = [r.json()["error"] for r in responses if r.status_code == 402]
    assert len(refusals) == 200 - served
    assert {e["code"] for e in refusals} == {"credit_cap_reached"}, refusals[:3]

    # Spend on until the cap refuses: what is left of it is less than one worst case.
    for _ in range(MOST + 1):
        after = one(racing, capped_key)
        if after.status_code != 200:
            break
        served += 1
    assert after.status_code == 402, after.text
    assert after.json()["error"]["code"] == "credit_cap_reached"
    assert served <= MOST

    racing.wait_ledger(capped_id, served)
    time.sleep(0.3)  # nothing more may arrive
    spent = charged(racing, capped_id)
    assert spent == served * COST
    assert spent <= CAP
    assert CAP - spent < WORST
    window = key_data(racing, capped_key)["cap_window"]
    assert (window["used_micros"], window["left_micros"]) == (spent, CAP - spent)

    # The account's other key has no cap: it spends the balance the cap left alone.
    free_id, free_key = owner["id"], owner["key"]
    assert one(racing, free_key).status_code == 200
    assert one(racing, capped_key).json()["error"]["code"] == "credit_cap_reached"
    racing.wait_ledger(free_id, 1)
    time.sleep(0.3)

    balance = racing.assert_books_balance(capped_id)  # SQL = sum of the ledger
    assert racing.assert_books_balance(free_id) == balance  # one account, one balance
    assert balance == CREDIT - spent - charged(racing, free_id)
    assert key_data(racing, free_key)["balance_micros"] == balance  # Redis agrees
    (held,), = racing.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", capped_id)
    assert held == served


# -- the cap's windows --------------------------------------------------------------------
def at(text: str) -> datetime:
    """A UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("reset", "before", "after"), [
    ("daily", "2026-03-01T23:59:59.999999", "2026-03-02T00:00:00"),
    ("daily", "2024-02-28T23:59:59", "2024-02-29T00:00:00"),
    ("weekly", "2026-03-01T23:59:59.999999", "2026-03-02T00:00:00"),  # Sunday → Monday
    ("weekly", "2025-12-28T23:59:59", "2025-12-29T00:00:00"),  # across the year
    ("monthly", "2026-01-31T23:59:59.999999", "2026-02-01T00:00:00"),
    ("monthly", "2025-12-31T23:59:59", "2026-01-01T00:00:00"),
    ("monthly", "2024-02-29T23:59:59", "2024-03-01T00:00:00"),
])
def test_a_window_ends_at_its_utc_boundary(reset: str, before: str, after: str) -> None:
    last, first = at(before), at(after)
    assert cap_window(reset, last) != cap_window(reset, first)
    assert window_start(reset, first) == first  # the boundary starts the new window
    assert window_start(reset, last) < first
    assert cap_window(reset, first) == cap_window(reset, first + timedelta(hours=23))


def test_window_starts() -> None:
    wednesday = at("2026-03-04T15:30:00")
    assert window_start("daily", wednesday) == at("2026-03-04T00:00:00")
    assert window_start("weekly", wednesday) == at("2026-03-02T00:00:00")  # Monday
    assert window_start("weekly", at("2026-03-08T23:59:59")) == at("2026-03-02T00:00:00")
    assert window_start("weekly", at("2026-03-02T00:00:00")) == at("2026-03-02T00:00:00")
    assert window_start("monthly", wednesday) == at("2026-03-01T00:00:00")
    assert window_start("never", wednesday) is None
    # The same week or month has one id however far into it; never is one window.
    assert cap_window("weekly", at("2026-03-02T00:00:00")) == \
        cap_window("weekly", at("2026-03-08T23:59:59.999999"))
    assert cap_window("monthly", at("2026-03-01T00:00:00")) == \
        cap_window("monthly", at("2026-03-31T23:59:59")) == "m202603"
    assert cap_window("never", at("1999-01-01T00:00:00")) == \
        cap_window("never", at("2026-03-04T00:00:00")) == "n"
    # Ids of different resets never meet (a key's reset may change).
    ids = {cap_window(reset, wednesday) for reset in ("daily", "weekly", "monthly", "never")}
    assert len(ids) == 4


def test_windows_are_utc_whatever_the_clock_says() -> None:
    # 01:00 in UTC+2 on 2 March is 23:00 UTC on 1 March, a Sunday.
    local = datetime(2026, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert cap_window("daily", local) == cap_window("daily", at("2026-03-01T12:00:00"))
    assert window_start("weekly", local) == at("2026-02-23T00:00:00")
    assert cap_window("monthly", local) == "m202603"
    assert cap_window("monthly", datetime(2026, 3, 1, 1, 0, tzinfo=timezone(
        timedelta(hours=2)))) == "m202602"  # 23:00 UTC on 28 February
    # 22:00 UTC-5 on 1 March is 03:00 UTC on 2 March: Monday, a new week.
    west = datetime(2026, 3, 1, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert window_start("weekly", west) == at("2026-03-02T00:00:00")


# -- a capped key in process: the window Redis lost comes back from SQL ---------------------
@pytest.fixture
async def capped(inprocess_portal: InProcessPortal,
                 node_doubles: Callable[..., Awaitable[NodeDouble]]
                 ) -> tuple[InProcessPortal, int, str]:
    """An account with $20 and an API key capped at five worst cases a day."""
    portal = inprocess_portal
    await portal.add_model(MODEL, served_name=SERVED, input_price=INPUT_PRICE,
                           output_price=OUTPUT_PRICE)
    await portal.add_node(MODEL, await node_doubles(SERVED, reply_tokens=REPLY_TOKENS))
    owner_id, _owner = await portal.create_key(usd(CREDIT))
    account = await Account.get(id=(await ApiKey.get(id=owner_id)).account_id)
    made = await create_key(name="capped", pepper=portal.ctx.pepper, rpm=1000, tpm=10**7,
                            store=portal.ctx.store, account=account,
                            settings=KeySettings(scope="api", cap=CAP, cap_reset="daily"))
    return portal, made.row.id, made.secret


async def post(portal: InProcessPortal, key: str) -> httpx.Response:
    return await portal.client.post("/v1/chat/completions", content=BODY, headers=auth(key))


async def spend_to_the_cap(portal: InProcessPortal, key: str) -> int:
    """Requests one at a time until the cap refuses; returns how many were served."""
    for served in range(MOST + 2):
        response = await post(portal, key)
        if response.status_code != 200:
            assert response.status_code == 402, response.text
            assert response.json()["error"]["code"] == "credit_cap_reached"
            return served
    raise AssertionError("the cap never refused")


async def key_spent(portal: InProcessPortal, key_id: int) -> int:
    await portal.drain_ledger()
    return sum(await UsageRecord.filter(key_id=key_id).values_list("cost", flat=True))


async def test_a_lost_cap_window_is_reloaded_from_sql(
        capped: tuple[InProcessPortal, int, str]) -> None:
    portal, key_id, key = capped
    store = portal.ctx.store
    served = await spend_to_the_cap(portal, key)
    assert served == MOST  # one at a time: each gave back its unused worst case
    spent = await key_spent(portal, key_id)
    assert spent == served * COST <= CAP

    await store.client.delete(store.cap(key_id))  # Redis lost the window

    refused = await post(portal, key)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "credit_cap_reached"
    window, used = await store.client.hmget(store.cap(key_id), "w", "used")
    assert window.decode() == cap_window("daily", datetime.now(UTC))
    assert int(used) == spent  # what SQL says the key spent today
    assert await key_spent(portal, key_id) == spent
    await portal.assert_books_balance(key_id)


async def test_yesterdays_spend_does_not_count_today(
        capped: tuple[InProcessPortal, int, str]) -> None:
    portal, key_id, key = capped
    store = portal.ctx.store
    served = await spend_to_the_cap(portal, key)
    assert served >= 1
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await portal.drain_ledger()
    await UsageRecord.filter(key_id=key_id).update(created_at=yesterday)
    await store.client.delete(store.cap(key_id))

    again = await post(portal, key)  # today's window is empty again

    assert again.status_code == 200, again.text
    await portal.wait_settled()
    assert int(await store.client.hget(store.cap(key_id), "used")) == COST


async def test_a_window_that_ended_starts_from_zero(
        capped: tuple[InProcessPortal, int, str]) -> None:
    portal, key_id, key = capped
    store = portal.ctx.store
    assert await spend_to_the_cap(portal, key) >= 1
    # The window Redis holds is yesterday's, full: today's starts from zero.
    yesterday = cap_window("daily", datetime.now(UTC) - timedelta(days=1))
    await store.client.hset(store.cap(key_id), mapping={"w": yesterday, "used": CAP})

    assert (await post(portal, key)).status_code == 200
    await portal.wait_settled()
    window, used = await store.client.hmget(store.cap(key_id), "w", "used")
    assert (window.decode(), int(used)) == (cap_window("daily", datetime.now(UTC)), COST)


async def test_charged_in_window_counts_the_windows_rows(
        capped: tuple[InProcessPortal, int, str]) -> None:
    portal, key_id, key = capped
    for _ in range(4):
        assert (await post(portal, key)).status_code == 200
    await portal.drain_ledger()
    rows = await UsageRecord.filter(key_id=key_id).order_by("id").values_list("id", flat=True)
    assert len(rows) == 4
    now = at("2026-03-04T12:00:00")  # a Wednesday
    placed = [("2026-03-04T00:00:00", 1), ("2026-03-03T23:59:59", 10),
              ("2026-03-01T23:59:59", 100), ("2026-02-28T23:59:59", 1000)]
    for row_id, (when, cost) in zip(rows, placed, strict=True):
        await UsageRecord.filter(id=row_id).update(created_at=at(when), cost=cost)

    assert await charged_in_window(key_id, "daily", now) == 1
    assert await charged_in_window(key_id, "weekly", now) == 11
    assert await charged_in_window(key_id, "monthly", now) == 111
    assert await charged_in_window(key_id, "never", now) == 1111

    store = portal.ctx.store
    await store.client.delete(store.cap(key_id))
    await load_cap_window(store, key_id, "weekly", now)
    assert await store.client.hgetall(store.cap(key_id)) == {
        b"w": cap_window("weekly", now).encode(), b"used": b"11"}
    # A window Redis holds is newer than SQL: loading again leaves it.
    await store.client.hset(store.cap(key_id), "used", 5000)
    await load_cap_window(store, key_id, "weekly", now)
    assert await store.client.hget(store.cap(key_id), "used") == b"5000"


# A change of the cap or its reset drops the key's Redis cap window ($ns:cap:<id>), so that
# the next reservation reloads it from SQL: the next two tests.


async def test_a_new_reset_counts_what_the_key_spent_in_its_window(
        capped: tuple[InProcessPortal, int, str]) -> None:
    """Daily → weekly on the same day: today's spend is this week's too."""
    portal, key_id, key = capped
    assert await spend_to_the_cap(portal, key) == MOST
    await portal.drain_ledger()
    await update_key(await ApiKey.get(id=key_id), KeySettings(cap_reset="weekly"),
                     store=portal.ctx.store)
    await asyncio.sleep(0.2)
    refused = await post(portal, key)
    assert refused.status_code == 402, refused.text


async def test_a_cap_given_back_counts_what_the_key_spent_without_it(
        capped: tuple[InProcessPortal, int, str]) -> None:
    """A cap dropped and given back the same day counts what was spent meanwhile."""
    portal, key_id, key = capped
    assert (await post(portal, key)).status_code == 200
    await update_key(await ApiKey.get(id=key_id), KeySettings(cap=None), store=portal.ctx.store)
    await asyncio.sleep(0.2)
    for _ in range(MOST):
        assert (await post(portal, key)).status_code == 200
    await portal.drain_ledger()
    await update_key(await ApiKey.get(id=key_id), KeySettings(cap=CAP), store=portal.ctx.store)
    await asyncio.sleep(0.2)
    refused = await post(portal, key)
    assert refused.status_code == 402, refused.text
