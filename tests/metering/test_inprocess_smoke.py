"""Today's behaviour through the in-process layer: it serves, relays, passes errors and bills.

Each test builds its own portal worker and node doubles in this loop (see
tests/support/inprocess.py) and takes a fraction of a second.
"""

from __future__ import annotations

import httpx
import pytest

from edge.billing.money import parse_usd, token_cost
from simnode.testing import free_port
from tests.metering.conftest import MODEL, SERVED
from tests.support.chat import ChatClient
from tests.support.inprocess import (
    Answer,
    BreakAfter,
    Drop,
    InProcessPortal,
    Refuse,
    Stall,
    stream_events,
)

INPUT_PRICE, OUTPUT_PRICE = "0.50", "1.50"


def cost(prompt: int, completion: int) -> int:
    return token_cost(prompt, completion, parse_usd(INPUT_PRICE), parse_usd(OUTPUT_PRICE))


async def offer(portal: InProcessPortal, *nodes) -> None:
    await portal.add_model(MODEL, served_name=SERVED, input_price=INPUT_PRICE,
                           output_price=OUTPUT_PRICE)
    for node in nodes:
        await portal.add_node(MODEL, node)


async def test_a_call_is_charged_exactly_what_the_node_counted(portal, nodes) -> None:
    node = await nodes(reply_tokens=5)
    await offer(portal, node)
    key_id, key = await portal.create_key("1")

    response = await portal.chat(key, MODEL, max_tokens=50)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == MODEL  # the served name is rewritten both ways
    assert node.calls[0].body["model"] == SERVED
    usage = answer["usage"]
    assert usage["completion_tokens"] == 5
    charged = cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert int(response.headers["x-portal-cost-micros"]) == charged
    [row] = await portal.usage(key_id)
    assert (row["status"], row["cost"], row["node_id"]) == (200, charged, node.id)
    assert await portal.sql("SELECT cost FROM usage_log WHERE key_id=?", key_id) == [(charged,)]
    assert await portal.assert_books_balance(key_id) == parse_usd("1") - charged


async def test_a_stream_is_relayed_with_its_usage(portal, nodes) -> None:
    node = await nodes(reply_tokens=6)
    await offer(portal, node)
    key_id, key = await portal.create_key("1")

    response = await portal.chat(key, MODEL, stream=True, max_tokens=50,
                                 stream_options={"include_usage": True})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks, done, comments = stream_events(response.text)
    assert done
    assert {chunk["model"] for chunk in chunks} == {MODEL}
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 6
    [row] = await portal.usage(key_id)
    assert row["streamed"] and row["status"] == 200
    assert row["cost"] == cost(usage["prompt_tokens"], 6)
    assert f"cost_micros={row['cost']}" in comments
    await portal.assert_books_balance(key_id)


async def test_a_nodes_400_is_passed_through_and_costs_nothing(portal, nodes) -> None:
    node = await nodes()
    await offer(portal, node)
    key_id, key = await portal.create_key("1")
    node.script(Refuse(400, message="max_tokens is too large", param="max_tokens"))

    response = await portal.chat(key, MODEL, max_tokens=50)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "max_tokens is too large" in error["message"]
    assert error["type"] == "invalid_request_error"
    [row] = await portal.usage(key_id)
    assert (row["status"], row["cost"]) == (400, 0)
    assert await portal.assert_books_balance(key_id) == parse_usd("1")


async def test_a_connect_error_goes_to_the_next_node(portal, nodes) -> None:
    node = await nodes(reply_tokens=3)
    await offer(portal)
    await portal.add_node(MODEL, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    await portal.add_node(MODEL, node)
    key_id, key = await portal.create_key("1")

    statuses = [(await portal.chat(key, MODEL, max_tokens=10)).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert len(node.calls) == 3
    rows = await portal.usage(key_id)
    assert {row["node_id"] for row in rows} == {node.id}
    await portal.assert_books_balance(key_id)


async def test_a_stream_cut_by_the_node_ends_cleanly_and_charges_what_was_relayed(
        portal, nodes) -> None:
    node = await nodes(reply_tokens=20)
    await offer(portal, node)
    key_id, key = await portal.create_key("1")
    node.script(BreakAfter(4))

    response = await portal.chat(key, MODEL, stream=True, max_tokens=50)

    assert response.status_code == 200
    chunks, done, _comments = stream_events(response.text)
    assert done  # a clean end, not a dropped connection
    assert chunks[-1]["error"]["code"] == "upstream_error"
    content = [c for c in chunks[:-1] if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 4
    [row] = await portal.usage(key_id)
    assert row["status"] >= 500 and row["completion_tokens"] == 4
    assert row["cost"] == cost(row["prompt_tokens"], 4)
    await portal.assert_books_balance(key_id)


async def test_scripts_apply_in_order_then_the_default(nodes) -> None:
    """The double itself: each call takes the next action, then the node answers."""
    node = await nodes()
    node.script(Refuse(503, headers={"retry-after": "1"}), Drop(), Stall(0.01), Answer())
    body = {"model": SERVED, "messages": [{"role": "user", "content": "Hi"}]}
    async with httpx.AsyncClient(base_url=node.url) as client:
        refused = await client.post("/v1/chat/completions", json=body)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/chat/completions", json=body)
        late = await client.post("/v1/chat/completions", json=body)
        answered = await client.post("/v1/chat/completions", json=body)
        default = await client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "ServiceUnavailableError"
    assert [late.status_code, answered.status_code, default.status_code] == [200, 200, 200]
    assert [type(call.action) for call in node.calls] == [Refuse, Drop, Stall, Answer, Answer]


async def test_a_chat_reply_is_charged_exactly(portal, nodes) -> None:
    node = await nodes(reply_tokens=4)
    await offer(portal, node)
    key_id, key = await portal.create_key("1")

    client = await ChatClient.connect(portal.url, "smoke", key)
    try:
        await client.send(type="message", text="Hello.", params={"max_tokens": 10})
        done = await client.wait_for("done")
    finally:
        await client.close()

    assert done["status"] == "done" and done["usage"]["completion_tokens"] == 4
    assert done["cost_micros"] == cost(done["usage"]["prompt_tokens"], 4)
    [row] = await portal.usage(key_id)
    assert (row["cost"], row["node_id"]) == (done["cost_micros"], node.id)
    await portal.assert_books_balance(key_id)


async def test_a_job_is_answered_and_charged_exactly(portal, nodes) -> None:
    node = await nodes(reply_tokens=3)
    await offer(portal, node)
    key_id, key = await portal.create_key("1")
    auth = {"authorization": f"Bearer {key}"}

    submitted = await portal.client.post("/v1/jobs", headers=auth, json={
        "model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert await portal.answer_job(job_id) == "succeeded"

    job = (await portal.client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
    assert job["status"] == "succeeded", job
    usage = job["result"]["usage"]
    assert usage["completion_tokens"] == 3
    assert node.calls[0].body["model"] == SERVED
    assert await portal.assert_books_balance(key_id) == \
        parse_usd("1") - cost(usage["prompt_tokens"], 3)


@pytest.mark.portal_settings(upstream_timeout=0.3)
async def test_a_node_that_stalls_is_given_up_on_and_costs_nothing(portal, nodes) -> None:
    node = await nodes()
    await offer(portal, node)
    key_id, key = await portal.create_key("1")
    node.script(Stall())  # until the portal gives up (the node is released at teardown)

    response = await portal.chat(key, MODEL, max_tokens=10)

    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert len(node.calls) == 1
    [row] = await portal.usage(key_id)
    assert (row["status"], row["cost"]) == (504, 0)
    assert await portal.assert_books_balance(key_id) == parse_usd("1")
