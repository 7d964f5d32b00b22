"""An edge worker killed mid-request: the reservation is settled anyway, once.

The stream records its progress in Redis every second; when the worker dies
its reservation outlives its deadline and the reaper (on any worker) charges
the recorded tokens and releases the rest. The dead worker is restarted.
"""

from __future__ import annotations

import os
import signal
import time

import httpx

from simnode.tokenizer import chat_prompt_tokens
from tests.support.standard import expected_cost

MESSAGES = [{"role": "user", "content": "Go on and on."}]


def test_killed_worker_reservation_is_reaped_and_the_worker_returns(portal_factory,
                                                                     simnode) -> None:
    node = simnode("--model", "m1", "--tokens-per-second", "10")
    portal = portal_factory(workers=2, env={"PORTAL_UPSTREAM_TIMEOUT": "2",
                                            "PORTAL_RESERVATION_GRACE": "1"})
    portal.cli("migrate")
    portal.add_model("m1")
    portal.add_node("m1", node.url)
    portal.start()
    key_id, key = portal.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    before = httpx.get(portal.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]

    received = 0
    body = {"model": "m1", "messages": MESSAGES, "max_tokens": 500, "stream": True,
            "ignore_eos": True}
    try:
        with httpx.stream("POST", portal.url + "/v1/chat/completions", json=body,
                          headers=headers, timeout=30) as response:
            victim = int(response.headers["x-portal-worker"])
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    received += 1
                    if received == 25:
                        os.kill(victim, signal.SIGKILL)
    except httpx.TransportError:
        pass  # the connection died with the worker
    assert received >= 25

    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = _sql(portal, "SELECT prompt_tokens, completion_tokens, cost, status, cancelled "
                            "FROM usage_log WHERE key_id=?", key_id)
        time.sleep(0.2)
    assert rows, "the reservation was never settled"
    (prompt, completion, cost, status, cancelled), = rows
    assert (status, cancelled) == (499, 1)
    assert prompt == chat_prompt_tokens(MESSAGES)
    # Progress is recorded every second (10 tokens here): at most that much is not billed.
    assert received - 12 <= completion <= received
    assert cost == expected_cost(prompt, completion)

    after = httpx.get(portal.url + "/v1/key", headers=headers).json()["data"]["balance_micros"]
    assert after == before - cost  # the rest of the reservation came back

    deadline = time.monotonic() + 10
    while len(portal.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(portal.worker_pids()) == 2
    assert victim not in portal.worker_pids()


def _sql(portal, query: str, *params: object) -> list[tuple]:
    from tests.support.services import sql_query

    return sql_query(f"sqlite://{portal.root / 'data' / 'portal.sqlite3'}", query, *params)
