"""The outcome matrix of the metered call: each outcome × streaming or not × API, chat, job.

For every case the test checks what the caller sees (status, error shape and code,
``Retry-After``), the usage row (:mod:`edge.metering.outcome`'s status, node, cost), the
charge (the tokens delivered at the model's prices, the live balance and SQL's books in
agreement) and which node doubles were called. The callers:

==============  ============================================================================
``api``         ``POST /v1/chat/completions``, whole answer
``api-stream``  the same, ``"stream": true``
``chat``        a model's reply in a chat room (always streamed from the node)
``job``         ``POST /v1/jobs`` answered by :func:`dramatiq_actors.jobs.answer_job`
==============  ============================================================================

Each test builds its own portal and node doubles in this loop (tests/support/inprocess.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sanic import HTTPResponse, Request

from dramatiq_actors import jobs
from edge.billing.money import parse_usd, token_cost
from tests.metering.conftest import MODEL, SERVED
from tests.support.chat import ChatClient
from tests.support.inprocess import (
    Answer,
    BreakAfter,
    Drop,
    InProcessPortal,
    NodeAction,
    NodeDouble,
    Pace,
    Refuse,
    Stall,
    stream_events,
)

INPUT_PRICE, OUTPUT_PRICE = "0.50", "1.50"
CREDIT = "1"

#: Every caller of a node, and those that stream from it.
CALLERS = ("api", "api-stream", "chat", "job")
STREAMING = ("api-stream", "chat")
#: The usage row's endpoint of each caller.
ENDPOINT = {"api": "chat", "api-stream": "chat", "chat": "chat-room", "job": "job-chat"}

_rooms = itertools.count()


def cost(prompt: int, completion: int) -> int:
    return token_cost(prompt, completion, parse_usd(INPUT_PRICE), parse_usd(OUTPUT_PRICE))


class CutAnswer(NodeAction):
    """A 200's headers and the start of a JSON body, then the connection is cut: a node
    that crashed while sending a whole answer (a stream's equivalent is ``BreakAfter``)."""

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        response = await request.respond(content_type="application/json")
        await response.send(b'{"id":"cmpl-cut","object":"chat.completion","choices":[')
        if request.transport is not None:
            request.transport.close()
        return None


@dataclasses.dataclass
class Seen:
    """What a caller saw of its call.

    ``status``: the HTTP status (API), the reply's status (chat: ``done``, ``failed``,
    ``stopped``) or the job's (``succeeded``, ``failed``). ``error``: the API's ``error``
    object, the stream's error event's, the job's ``error``, or ``{"message": ...}`` of a
    chat reply. ``result``: the API's JSON, the chat's ``done`` event, the job's view.
    """

    status: int | str
    error: dict[str, Any] | None = None
    headers: httpx.Headers = dataclasses.field(default_factory=httpx.Headers)
    chunks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    done: bool = False
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    comments: list[str] = dataclasses.field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status in (200, "done", "succeeded") and self.error is None

    @property
    def content_chunks(self) -> list[dict[str, Any]]:
        return [c for c in self.chunks if c.get("choices")
                and c["choices"][0].get("delta", {}).get("content")]


async def ask(portal: InProcessPortal, key: str, caller: str, *, max_tokens: int = 50,
              **body: Any) -> Seen:
    """One call by ``caller``, read to its end."""
    if caller in ("api", "api-stream"):
        response = await portal.chat(key, MODEL, stream=caller == "api-stream",
                                     max_tokens=max_tokens, **body)
        if response.headers["content-type"].startswith("text/event-stream"):
            chunks, done, comments = stream_events(response.text)
            error = chunks[-1].get("error") if chunks else None
            return Seen(response.status_code, error, response.headers, chunks, done,
                        comments=comments)
        answer = response.json()
        return Seen(response.status_code, answer.get("error"), response.headers, result=answer)
    if caller == "chat":
        client = await ChatClient.connect(portal.url, f"outcomes{next(_rooms)}", key)
        try:
            await client.send(type="message", text="Hello.",
                              params={"max_tokens": max_tokens, **body})
            done = await client.wait_for("done", timeout=10)
        finally:
            await client.close()
        error = {"message": done["error"]} if "error" in done else None
        return Seen(done["status"], error, result=done, events=client.events)
    assert caller == "job"
    auth = {"authorization": f"Bearer {key}"}
    submitted = await portal.client.post("/v1/jobs", headers=auth, json={
        "model": MODEL, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello there."}], **body})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    await portal.answer_job(job_id)
    job = (await portal.client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
    return Seen(job["status"], job.get("error"), result=job)


def charged_to_caller(seen: Seen, caller: str) -> int | None:
    """What the caller was told it paid (None: this caller is not told, or not here)."""
    if caller == "api" and "x-portal-cost-micros" in seen.headers:
        return int(seen.headers["x-portal-cost-micros"])
    if caller == "api-stream":
        told = [c for c in seen.comments if c.startswith("cost_micros=")]
        return int(told[0].removeprefix("cost_micros=")) if told else None
    if caller == "chat":
        return seen.result["cost_micros"]
    if caller == "job":
        return seen.result.get("cost_micros")
    return None


def registry_of(portal: InProcessPortal, caller: str) -> Any:
    """The routing table the caller's calls go through (a job's: its worker's)."""
    return portal._worker.registry if caller == "job" else portal.ctx.registry


def cooling_down(portal: InProcessPortal, caller: str, node: NodeDouble) -> float:
    """Seconds ``node`` is still skipped by the caller's routing table (0: routable)."""
    for nodes in registry_of(portal, caller).nodes.values():
        for info in nodes:
            if info.id == node.id:
                return max(0.0, info.down_until - time.monotonic())
    raise LookupError(node.id)


async def offer(portal: InProcessPortal, *nodes: NodeDouble) -> None:
    await portal.add_model(MODEL, served_name=SERVED, input_price=INPUT_PRICE,
                           output_price=OUTPUT_PRICE)
    for node in nodes:
        await portal.add_node(MODEL, node)


async def assert_row(portal: InProcessPortal, key_id: int, caller: str, *, status: int,
                     node: NodeDouble | None, completion: int | None = None,
                     cancelled: bool = False) -> dict[str, Any]:
    """The one usage row of the key: its status, node and charge (its tokens at the prices)."""
    await portal.wait_settled()
    [row] = await portal.usage(key_id)
    assert row["endpoint"] == ENDPOINT[caller]
    assert (row["status"], row["node_id"], row["cancelled"]) == \
        (status, node.id if node else None, cancelled), row
    assert row["streamed"] == (caller in STREAMING)
    if completion is not None:
        assert row["completion_tokens"] == completion, row
    assert row["cost"] == cost(row["prompt_tokens"], row["completion_tokens"]), row
    assert await portal.assert_books_balance(key_id) == parse_usd(CREDIT) - row["cost"]
    return row


@pytest.fixture
def job_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The pauses a job takes between its metered calls, recorded and not waited for.

    ``dramatiq_actors.jobs`` sleeps 2 s, then 4 s between failed calls; the test records
    them instead. Longer sleeps (the lease renewal's) are real.
    """
    waited: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        if delay <= 2.0 * jobs.MAX_NODE_FAILURES:
            waited.append(delay)
            delay = 0
        return await real_sleep(delay, result)

    shim = types.SimpleNamespace(**{name: getattr(asyncio, name) for name in dir(asyncio)
                                    if not name.startswith("__")})
    shim.sleep = sleep
    monkeypatch.setattr(jobs, "asyncio", shim)
    yield waited


# -- done ------------------------------------------------------------------------------------
@pytest.mark.parametrize("caller", CALLERS)
async def test_done_is_charged_exactly_and_calls_one_node(portal, nodes, caller) -> None:
    a, b = await nodes(reply_tokens=5), await nodes(reply_tokens=5)
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)

    seen = await ask(portal, key, caller)

    assert seen.succeeded, seen
    if caller == "api-stream":
        assert seen.done and len(seen.content_chunks) == 5
    row = await assert_row(portal, key_id, caller, status=200, node=a, completion=5)
    assert row["prompt_tokens"] > 0 and row["cost"] > 0
    assert charged_to_caller(seen, caller) == row["cost"]
    assert (len(a.calls), len(b.calls)) == (1, 0)  # a call that succeeds at once: one call
    assert a.calls[0].body["model"] == SERVED


# -- refused before the first byte, answered by the next node ---------------------------------
REFUSALS = {
    "503": Refuse(503),
    "429-retry-after": Refuse(429, headers={"retry-after": "7"}),
    "500": Refuse(500),
    "drop": Drop(),
}


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
@pytest.mark.parametrize("caller", CALLERS)
async def test_a_refusal_before_the_first_byte_goes_to_the_next_node(
        portal, nodes, caller, refusal) -> None:
    a, b = await nodes(reply_tokens=4), await nodes(reply_tokens=4)
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    a.script(refusal)

    seen = await ask(portal, key, caller)

    assert seen.succeeded, seen
    row = await assert_row(portal, key_id, caller, status=200, node=b, completion=4)
    assert charged_to_caller(seen, caller) == row["cost"]  # charged once
    assert (len(a.calls), len(b.calls)) == (1, 1)
    # A cools down (longer when it said when to come back): the next call goes to B.
    said_when = isinstance(refusal, Refuse) and "retry-after" in refusal.headers
    assert cooling_down(portal, caller, a) > (6.0 if said_when else 4.0)
    again = await ask(portal, key, caller)
    assert again.succeeded, again
    assert (len(a.calls), len(b.calls)) == (1, 2)
    rows = await portal.usage(key_id)
    assert [(r["status"], r["node_id"]) for r in rows] == [(200, b.id), (200, b.id)]
    assert await portal.assert_books_balance(key_id) == \
        parse_usd(CREDIT) - sum(r["cost"] for r in rows)


# -- every node refuses ---------------------------------------------------------------------
EVERY_REFUSAL = {
    "503": (Refuse(503), 5),  # the cool-down (node_cool_down) is the client's wait
    "429-retry-after": (Refuse(429, headers={"retry-after": "7"}), 7),
    "drop": (Drop(), 5),
}


@pytest.mark.parametrize(("refusal", "retry_after"), EVERY_REFUSAL.values(),
                         ids=EVERY_REFUSAL.keys())
@pytest.mark.parametrize("caller", CALLERS)
async def test_every_node_refusing_is_unavailable_and_costs_nothing(
        portal, nodes, job_backoff, caller, refusal, retry_after) -> None:
    a, b = await nodes(), await nodes()
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    a.always(refusal)
    b.always(refusal)

    seen = await ask(portal, key, caller)

    if caller in ("api", "api-stream"):
        # Refused before any byte: a stream's 503 is plain JSON too.
        assert seen.status == 503
        assert seen.headers["content-type"].startswith("application/json")
        assert seen.error["code"] == "upstream_unavailable"
        assert seen.error["type"] == "service_unavailable"
        assert int(seen.headers["retry-after"]) == retry_after
    elif caller == "chat":
        assert seen.status == "failed"
        assert "could take the request" in seen.error["message"]
        assert seen.result["cost_micros"] == 0
    else:
        assert seen.status == "failed"
        assert seen.error["code"] == "upstream_unavailable"
        assert seen.result["cost_micros"] == 0
        # MAX_NODE_FAILURES metered calls; later ones find both nodes cooling down.
        assert job_backoff == [2.0, 4.0]
    await assert_row(portal, key_id, caller, status=503, node=None, completion=0)
    assert (len(a.calls), len(b.calls)) == (1, 1)
    assert await portal.live_balance(key_id) == parse_usd(CREDIT)


async def test_while_every_node_cools_down_the_api_waits_without_calling_one(
        portal, nodes) -> None:
    a, b = await nodes(), await nodes()
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    a.always(Refuse(503))
    b.always(Refuse(429, headers={"retry-after": "7"}))

    first = await ask(portal, key, "api")
    second = await ask(portal, key, "api")

    assert (first.status, second.status) == (503, 503)
    assert int(first.headers["retry-after"]) == 7
    assert second.error["code"] == "upstream_unavailable"
    assert 4 <= int(second.headers["retry-after"]) <= 5  # A comes back first
    assert (len(a.calls), len(b.calls)) == (1, 1)
    await assert_row(portal, key_id, "api", status=503, node=None)  # the second is not metered


# -- the node refuses the request itself (400/422) ------------------------------------------
@pytest.mark.parametrize("status", [400, 422])
@pytest.mark.parametrize("caller", CALLERS)
async def test_the_nodes_own_refusal_is_passed_on_not_retried_and_costs_nothing(
        portal, nodes, caller, status, request) -> None:
    a, b = await nodes(), await nodes()
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    message = "This model's maximum context length is 8192 tokens."
    a.script(Refuse(status, message=message, code="context_length_exceeded",
                    param="max_tokens"))

    seen = await ask(portal, key, caller)

    if caller in ("api", "api-stream"):
        assert seen.status == status
        assert seen.headers["content-type"].startswith("application/json")
        assert seen.error == {"message": message, "type": "invalid_request_error",
                              "param": "max_tokens", "code": "context_length_exceeded"}
        assert "retry-after" not in seen.headers
    elif caller == "chat":
        assert seen.status == "failed"
        assert seen.error["message"] == message
    else:  # the job keeps the node's code and param, and its status for the usage row
        assert seen.status == "failed"
        assert seen.error == {"message": message, "code": "context_length_exceeded",
                              "param": "max_tokens", "status": status}
    assert (len(a.calls), len(b.calls)) == (1, 0)  # not retried
    assert cooling_down(portal, caller, a) == 0  # nor is the node blamed
    await assert_row(portal, key_id, caller, status=status, node=None, completion=0)
    assert await portal.live_balance(key_id) == parse_usd(CREDIT)


@pytest.mark.parametrize("caller", ["api", "api-stream"])
async def test_vllms_numeric_code_becomes_null(portal, nodes, caller) -> None:
    node = await nodes()
    await offer(portal, node)
    _key_id, key = await portal.create_key(CREDIT)
    node.script(Refuse(400, message="bad n", param="n"))  # code 400, as vLLM sends it

    seen = await ask(portal, key, caller)

    assert seen.status == 400
    assert seen.error == {"message": "bad n", "type": "invalid_request_error", "param": "n",
                          "code": None}


# -- the node breaks off after the first byte ------------------------------------------------
@pytest.mark.parametrize("caller", STREAMING)
async def test_a_stream_cut_by_the_node_is_charged_what_was_delivered(
        portal, nodes, caller) -> None:
    a, b = await nodes(reply_tokens=20), await nodes(reply_tokens=20)
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    a.script(BreakAfter(4))

    seen = await ask(portal, key, caller)

    if caller == "api-stream":
        assert seen.status == 200 and seen.done  # a clean end after the error event
        assert seen.error["code"] == "upstream_error"
        assert "charged for the 4 tokens" in seen.error["message"]
        assert len(seen.content_chunks) == 4
    else:
        assert seen.status == "failed"
        assert seen.error["message"]
        assert seen.result["usage"]["completion_tokens"] == 4
        assert [e["kind"] for e in seen.events if e["type"] == "status"] == ["node_lost"]
        assert len([e for e in seen.events if e["type"] == "delta"]) >= 1
    row = await assert_row(portal, key_id, caller, status=502, node=a, completion=4)
    assert row["cost"] > 0
    assert charged_to_caller(seen, caller) in (row["cost"], None)
    assert (len(a.calls), len(b.calls)) == (1, 0)  # after the first byte: never retried


async def test_a_whole_answer_cut_by_the_node_is_a_502_and_costs_nothing(
        portal, nodes) -> None:
    a, b = await nodes(), await nodes()
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    a.script(CutAnswer())

    seen = await ask(portal, key, "api")

    assert seen.status == 502
    assert seen.error["code"] == "upstream_error"
    assert (len(a.calls), len(b.calls)) == (1, 0)
    await assert_row(portal, key_id, "api", status=502, node=a, completion=0)
    assert await portal.live_balance(key_id) == parse_usd(CREDIT)


async def test_a_job_whose_answer_is_cut_calls_again_and_is_charged_once(
        portal, nodes, job_backoff) -> None:
    a = await nodes(reply_tokens=3)
    await offer(portal, a)
    key_id, key = await portal.create_key(CREDIT)
    a.script(CutAnswer())

    seen = await ask(portal, key, "job")

    assert seen.succeeded, seen
    assert job_backoff == [2.0]
    assert len(a.calls) == 2
    row = await assert_row(portal, key_id, "job", status=200, node=a, completion=3)
    assert seen.result["cost_micros"] == row["cost"]


# -- the node stalls past upstream_timeout --------------------------------------------------
@pytest.mark.portal_settings(upstream_timeout=0.25)
@pytest.mark.parametrize("caller", CALLERS)
async def test_a_node_that_stalls_before_answering_times_out_and_costs_nothing(
        portal, nodes, job_backoff, caller, request) -> None:
    a, b = await nodes(), await nodes()
    await offer(portal, a, b)
    key_id, key = await portal.create_key(CREDIT)
    a.always(Stall())

    seen = await ask(portal, key, caller)

    if caller in ("api", "api-stream"):
        assert seen.status == 504  # before any byte: plain JSON, also for a stream
        assert seen.headers["content-type"].startswith("application/json")
        assert seen.error["code"] == "upstream_timeout"
        assert "retry-after" not in seen.headers
        assert len(a.calls) == 1
    elif caller == "chat":
        assert seen.status == "failed"
        assert "did not answer in time" in seen.error["message"]
        assert len(a.calls) == 1
    else:
        assert seen.status == "failed"
        assert len(a.calls) == jobs.MAX_NODE_FAILURES  # the job calls again (A is not down)
        assert seen.result["cost_micros"] == 0
    assert len(b.calls) == 0  # the request was sent: a timeout is not retried elsewhere
    assert await portal.live_balance(key_id) == parse_usd(CREDIT)
    if caller == "job":
        assert seen.error["code"] == "upstream_timeout"
    # No node answered: the row names none (the metrics' upstream errors name A).
    await assert_row(portal, key_id, caller, status=504, node=None, completion=0)


@pytest.mark.portal_settings(upstream_timeout=0.25)
@pytest.mark.parametrize("caller", STREAMING)
async def test_a_stream_that_stalls_is_cut_and_charged_what_was_delivered(
        portal, nodes, caller) -> None:
    node = await nodes(reply_tokens=5)
    await offer(portal, node)
    key_id, key = await portal.create_key(CREDIT)
    node.script(Pace(tokens_per_second=1))  # the first token at once, the next 1 s later

    seen = await ask(portal, key, caller)

    if caller == "api-stream":
        assert seen.status == 200 and seen.done
        assert seen.error["code"] == "upstream_timeout"
        assert len(seen.content_chunks) == 1
    else:
        assert seen.status == "failed"
        assert "did not answer in time" in seen.error["message"]
    row = await assert_row(portal, key_id, caller, status=504, node=node, completion=1)
    assert row["cost"] > 0
    assert charged_to_caller(seen, caller) in (row["cost"], None)


# -- the client goes away, or the asker stops the reply ------------------------------------
async def test_a_client_that_leaves_a_stream_is_charged_what_was_delivered(
        portal, nodes) -> None:
    node = await nodes(reply_tokens=40)
    await offer(portal, node)
    key_id, key = await portal.create_key(CREDIT)
    node.script(Pace(tokens_per_second=40))  # 1 s for the whole answer
    received = 0
    async with portal.client.stream("POST", "/v1/chat/completions", headers={
            "authorization": f"Bearer {key}"}, json={
            "model": MODEL, "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hello there."}]}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"] and \
                    json.loads(line[6:])["choices"][0]["delta"].get("content"):
                received += 1
            if received == 3:
                break

    row = await assert_row(portal, key_id, "api-stream", status=499, node=node,
                           cancelled=True)
    assert 3 <= row["completion_tokens"] < 40
    assert row["cost"] > 0


async def test_a_client_that_leaves_before_the_answer_pays_nothing(portal, nodes) -> None:
    node = await nodes(reply_tokens=5)
    await offer(portal, node)
    key_id, key = await portal.create_key(CREDIT)
    node.script(Pace(ttft=2.0))

    with pytest.raises(httpx.ReadTimeout):
        await portal.client.post("/v1/chat/completions", timeout=0.3, headers={
            "authorization": f"Bearer {key}"}, json={
            "model": MODEL, "max_tokens": 50,
            "messages": [{"role": "user", "content": "Hello there."}]})

    # The node had sent nothing: the row names no node, as for a timeout.
    await assert_row(portal, key_id, "api", status=499, node=None, completion=0,
                     cancelled=True)
    assert await portal.live_balance(key_id) == parse_usd(CREDIT)


async def test_an_asker_who_stops_a_reply_is_charged_what_was_delivered(
        portal, nodes) -> None:
    node = await nodes(reply_tokens=40)
    await offer(portal, node)
    key_id, key = await portal.create_key(CREDIT)
    node.script(Pace(tokens_per_second=40))

    client = await ChatClient.connect(portal.url, "stop", key)
    try:
        await client.send(type="message", text="Hello.", params={"max_tokens": 50})
        reply = await client.wait_for("message", role="assistant")
        for _ in range(3):
            await client.wait_for("delta", reply_id=reply["id"])
        await client.send(type="stop", reply_id=reply["id"])
        done = await client.wait_for("done", reply_id=reply["id"])
    finally:
        await client.close()

    assert done["status"] == "stopped", done
    assert "error" not in done
    row = await assert_row(portal, key_id, "chat", status=499, node=node, cancelled=True)
    assert 3 <= row["completion_tokens"] < 40
    assert done["usage"]["completion_tokens"] == row["completion_tokens"]
    assert done["cost_micros"] == row["cost"] > 0


async def test_the_double_answers_after_its_script(nodes) -> None:
    """CutAnswer is a one-call action: the call after it is answered in full."""
    node = await nodes()
    node.script(CutAnswer())
    body = {"model": SERVED, "messages": [{"role": "user", "content": "Hi"}]}
    async with httpx.AsyncClient(base_url=node.url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/chat/completions", json=body)
        answered = await client.post("/v1/chat/completions", json=body)
    assert answered.status_code == 200
    assert [type(call.action) for call in node.calls] == [CutAnswer, Answer]
