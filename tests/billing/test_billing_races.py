"""No overspend, however many requests race, on SQLite and on PostgreSQL.

Invariants 2, 5 and 7 of the design: 200 concurrent requests on a key whose
credit covers 10 never take the balance below zero, serve at most what the
credit pays for, and leave a ledger that sums to the balance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from simnode.tokenizer import chat_prompt_tokens
from tests.support.standard import MODEL, REPLY_TOKENS, Deployment, deploy, expected_cost
from tests.support.workers import answering_workers

MESSAGES = [{"role": "user", "content": "Tell me something."}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": REPLY_TOKENS}
COST = expected_cost(chat_prompt_tokens(MESSAGES), REPLY_TOKENS)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def racing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           redis_url: str) -> Iterator[Deployment]:
    database_url = ""
    if request.param == "postgres":
        database_url = request.getfixturevalue("module_postgres_url")
    with deploy(tmp_path_factory.mktemp(request.param), redis_url, database_url) as made:
        yield made


async def fire(url: str, key: str, count: int, *, new_connections: bool) -> list[int]:
    limits = httpx.Limits(max_keepalive_connections=0 if new_connections else 100)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one() -> int:
            response = await client.post("/v1/chat/completions", json=BODY,
                                         headers={"authorization": f"Bearer {key}"})
            return response.status_code
        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_200_concurrent_requests_never_overspend(racing: Deployment) -> None:
    credit_micros = 10 * COST
    key_id, key = racing.portal.create_key(f"{credit_micros / 1_000_000:.6f}")

    statuses = asyncio.run(fire(racing.url, key, 200, new_connections=True))

    served = statuses.count(200)
    assert set(statuses) <= {200, 402}, statuses
    assert 1 <= served <= 10
    balance = racing.balance(key)
    assert balance == credit_micros - served * COST
    assert balance >= 0
    racing.wait_ledger(key_id, served)
    time.sleep(0.3)
    assert racing.assert_books_balance(key_id) == balance
    (usage_rows,), = racing.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=?", key_id)
    assert usage_rows == served


def test_requests_per_minute_hold_across_both_workers(racing: Deployment) -> None:
    _key_id, key = racing.portal.create_key("5", rpm=7)
    statuses = asyncio.run(fire(racing.url, key, 40, new_connections=True))
    assert statuses.count(200) == 7
    assert statuses.count(429) == 33


def test_both_workers_served_the_race(racing: Deployment) -> None:
    """The races above only prove something if both workers took part."""
    _key_id, key = racing.portal.create_key("5")

    assert len(asyncio.run(answering_workers(racing.url, key, count=60))) == 2
