"""Nodes that report no usage (llama.cpp's server, old vLLM, SGLang) are charged all the same.

First the counting itself, in process (the relay, the counter, the node's /tokenize);
then a real portal in front of simnodes started with ``--usage none``, with the
official openai SDK as client: streams complete and cut, answers, exact charges, and
the usage row's ``counted_by`` saying who counted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from edge.metering import counting
from edge.metering.counting import (
    DeltaCounter,
    NodeTokenizer,
    choice_text,
    count_answer,
    count_prompt,
    count_stream,
    count_texts,
)
from edge.metering.request_spec import Endpoint
from edge.metering.sse import StreamRelay
from simnode.testing import start_simnode
from simnode.tokenizer import chat_prompt_tokens, completion_prompt_tokens, count_text
from tests.support.chat import ChatClient
from tests.support.portal import PortalServer
from tests.support.services import sql_query
from tests.support.standard import INPUT_PRICE, OUTPUT_PRICE, REPLY_TOKENS, expected_cost

# -- in process: the relay and the counter ---------------------------------------------


def bare_chunk(content: str | None, *, index: int = 0, role: bool = False,
               finish: str | None = None, model: str = "served") -> bytes:
    """A chunk as llama.cpp's server sends it: no ``usage`` key at all."""
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
    if content is not None:
        delta["content"] = content
    body = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 7, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


BARE = (bare_chunk(None, role=True) + bare_chunk(" a") + bare_chunk(" b") +
        bare_chunk(" c", finish="stop") + b"data: [DONE]\n\n")


def data_events(data: bytes) -> list[dict]:
    return [json.loads(e[6:]) for e in data.split(b"\n\n") if e.startswith(b"data: {")]


def test_relay_counts_deltas_when_the_node_sends_no_usage() -> None:
    for size in (1, 5, 64, len(BARE)):
        relay = StreamRelay(include_usage=True, continuous=False, rename=("served", "public"))
        out = b"".join(relay.feed(BARE[i:i + size]) for i in range(0, len(BARE), size))
        assert relay.done
        assert (relay.node_counted, relay.needs_counting) == (False, True)
        assert (relay.prompt_tokens, relay.completion_tokens) == (0, 3)
        assert relay.deltas.choice_texts() == [" a b c"]
        assert relay.owes_usage_chunk
        assert [e["model"] for e in data_events(out)] == ["public"] * 4


def test_the_usage_chunk_is_openais() -> None:
    relay = StreamRelay(include_usage=True, continuous=False, rename=("served", "public"))
    relay.feed(BARE)
    chunk = relay.usage_chunk(11, 3)
    assert chunk.startswith(b"data: {") and chunk.endswith(b"}\n\n")
    assert json.loads(chunk[6:]) == {
        "id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 7, "model": "public",
        "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3,
                                 "total_tokens": 14}}
    completions = StreamRelay(include_usage=True, continuous=False)
    completions.feed(b'data: {"id":"cmpl-1","object":"text_completion","created":3,"model":"m",'
                     b'"choices":[{"index":0,"text":" hi","finish_reason":null}]}\n\n')
    assert json.loads(completions.usage_chunk(2, 1)[6:])["object"] == "text_completion"
    assert completions.completion_tokens == 1


def test_vllm_usage_is_taken_without_parsing_chunks() -> None:
    """The fast path: with running usage the edge counts nothing itself."""
    def chunk(text: str, completion: int) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                "usage": {"prompt_tokens": 9, "total_tokens": 9 + completion,
                          "completion_tokens": completion}}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    final = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
             b'"choices":[],"usage":{"prompt_tokens":9,"total_tokens":11,'
             b'"completion_tokens":2}}\n\n')
    relay = StreamRelay(include_usage=True, continuous=False)
    relay.feed(chunk(" a", 1) + chunk(" b", 2) + final + b"data: [DONE]\n\n")
    assert (relay.prompt_tokens, relay.completion_tokens) == (9, 2)
    assert relay.node_counted and not relay.needs_counting and not relay.owes_usage_chunk
    assert relay.deltas.head == {} and relay.deltas.counts == {}  # never parsed


def test_a_final_usage_after_null_chunks_is_the_nodes_count() -> None:
    """SGLang and old vLLM: ``"usage":null`` on every chunk, the totals at the end."""
    def chunk(text: str) -> bytes:
        return (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
                b'"choices":[{"index":0,"delta":{"content":"' + text.encode() +
                b'"},"finish_reason":null}],"usage":null}\n\n')

    relay = StreamRelay(include_usage=True, continuous=False)
    relay.feed(chunk("x") + chunk("y"))
    assert (relay.completion_tokens, relay.needs_counting) == (2, True)  # a cut would charge 2
    out = relay.feed(b'data: {"id":"c","object":"chat.completion.chunk","created":1,'
                     b'"model":"m","choices":[],"usage":{"prompt_tokens":5,"total_tokens":10,'
                     b'"completion_tokens":5}}\n\n')
    assert (relay.prompt_tokens, relay.completion_tokens) == (5, 5)
    assert not relay.needs_counting and not relay.owes_usage_chunk
    assert data_events(out)[0]["usage"]["completion_tokens"] == 5  # the client asked for it


def test_several_choices_without_usage_are_summed() -> None:
    relay = StreamRelay(include_usage=False, continuous=False, n=3)
    relay.feed(b"".join(bare_chunk(f" w{i}", index=i % 3) for i in range(10)))
    assert relay.deltas.counts == {0: 4, 1: 3, 2: 3}
    assert relay.completion_tokens == 10
    assert relay.deltas.choice_texts() == [" w0 w3 w6 w9", " w1 w4 w7", " w2 w5 w8"]


def test_what_counts_as_a_delta() -> None:
    assert choice_text({"delta": {"role": "assistant", "content": ""}}) is None
    assert choice_text({"delta": {}, "finish_reason": "stop"}) is None
    assert choice_text({"delta": {"content": "hi"}}) == "hi"
    assert choice_text({"delta": {"reasoning_content": "hmm"}}) == "hmm"
    assert choice_text({"delta": {"reasoning_content": "hm", "reasoning": "hm"}}) == "hm"
    call = {"index": 0, "function": {"name": "f", "arguments": ""}}
    assert choice_text({"delta": {"tool_calls": [call]}}) == "f"
    assert choice_text({"text": " x"}) == " x"
    assert choice_text({"text": ""}) is None
    assert choice_text({"message": {"content": "ok", "tool_calls": []}}) == "ok"


def test_events_without_choices_are_not_counted() -> None:
    counter = DeltaCounter()
    counter.add(b'data: {"error":{"message":"boom"}}')
    counter.add(b"data: {not json")
    assert (counter.total, counter.head) == (0, {})


# -- in process: the node's /tokenize ---------------------------------------------------


class FakeNode:
    """Answers /tokenize like vLLM (simnode's rule), or like a server without it."""

    def __init__(self, *, status: int = 200, shape: str = "vllm", delay: float = 0.0) -> None:
        self.status, self.shape, self.delay = status, shape, delay
        self.asked: list[dict] = []

    async def post(self, url: str, body: bytes) -> httpx.Response:
        assert url == "http://node/tokenize"
        payload = json.loads(body)
        self.asked.append(payload)
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "Not Found"})
        if self.shape == "llama.cpp":
            return httpx.Response(200, json={"tokens": []})
        if "messages" in payload:
            count = chat_prompt_tokens(payload["messages"])
        else:
            count = count_text(payload["prompt"]) + (payload.get("add_special_tokens", True)
                                                     is not False)
        return httpx.Response(200, json={"count": count, "max_model_len": 8192, "tokens": []})


@pytest.fixture(autouse=True)
def fresh_tokenize_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "_unavailable", {})


MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three prime numbers, please."}]


async def test_prompt_and_completion_by_the_nodes_tokenizer() -> None:
    node = FakeNode()
    tokenizer = NodeTokenizer(node, "http://node", "served")
    body = {"model": "public", "messages": MESSAGES, "tools": [{"type": "function"}]}
    assert await count_prompt(tokenizer, Endpoint.CHAT, body, 999) == \
        chat_prompt_tokens(MESSAGES)
    assert node.asked[0] == {"model": "served", "messages": MESSAGES,
                             "tools": [{"type": "function"}]}
    assert await count_prompt(tokenizer, Endpoint.COMPLETIONS,
                              {"prompt": ["one two", "three"]}, 999) == (2 + 1) + (1 + 1)
    assert await count_prompt(None, Endpoint.COMPLETIONS, {"prompt": [5, 6, 7]}, 999) == 3
    assert await count_prompt(None, Endpoint.COMPLETIONS, {"prompt": [[5], [6, 7]]}, 9) == 3
    assert await count_texts(tokenizer, [" a b c", "", " d, e"]) == 3 + 3
    assert node.asked[-1] == {"model": "served", "prompt": " d, e", "add_special_tokens": False}


async def test_a_stream_is_charged_the_larger_count() -> None:
    """A node may bundle several tokens in one chunk: /tokenize finds them."""
    tokenizer = NodeTokenizer(FakeNode(), "http://node", "served")
    relay = StreamRelay(include_usage=False, continuous=False)
    relay.feed(bare_chunk(" one two three") + bare_chunk(" four") + b"data: [DONE]\n\n")
    assert relay.completion_tokens == 2
    prompt = chat_prompt_tokens(MESSAGES)
    body = {"messages": MESSAGES}
    assert await count_stream(tokenizer, relay.deltas, Endpoint.CHAT, body, prompt_estimate=999,
                              delivered=2, complete=True) == (prompt, 4)
    # Cut: what was delivered, the delta count.
    assert await count_stream(tokenizer, relay.deltas, Endpoint.CHAT, body, prompt_estimate=999,
                              delivered=2, complete=False) == (prompt, 2)
    # Never less than the deltas, whatever the tokenizer says.
    lying = StreamRelay(include_usage=False, continuous=False)
    lying.feed(bare_chunk("") + bare_chunk(" x") + bare_chunk(" y"))
    assert await count_stream(tokenizer, lying.deltas, Endpoint.CHAT, body, prompt_estimate=999,
                              delivered=5, complete=True) == (prompt, 5)


@pytest.mark.parametrize("node", [FakeNode(status=404), FakeNode(shape="llama.cpp"),
                                  FakeNode(delay=5.0)], ids=["404", "llama.cpp", "slow"])
async def test_without_a_usable_tokenize_the_estimates_are_charged(node: FakeNode) -> None:
    tokenizer = NodeTokenizer(node, "http://node", "served", timeout=0.2)
    relay = StreamRelay(include_usage=False, continuous=False)
    relay.feed(bare_chunk(" one two three") + bare_chunk(" four"))
    started = time.monotonic()
    counts = await count_stream(tokenizer, relay.deltas, Endpoint.CHAT, {"messages": MESSAGES},
                                prompt_estimate=321, delivered=2, complete=True)
    assert counts == (321, 2)
    assert time.monotonic() - started < 1.0  # both asked at once, each waited 0.2 s at most
    asked = len(node.asked)
    # The node is not asked again for a while.
    assert await count_texts(tokenizer, [" x"]) is None
    assert len(node.asked) == asked


async def test_an_answer_without_usage() -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                   "content": " alpha beta, gamma"}},
                          {"index": 1, "message": {"role": "assistant", "content": " é"}}]}
    body = {"messages": MESSAGES}
    tokenizer = NodeTokenizer(FakeNode(), "http://node", "served")
    assert await count_answer(tokenizer, Endpoint.CHAT, body, answer, prompt_estimate=999,
                              choice_cap=50) == (chat_prompt_tokens(MESSAGES), 4 + 1)
    # No tokenizer: a token is at least a byte, each choice at most what was reserved.
    assert await count_answer(None, Endpoint.CHAT, body, answer, prompt_estimate=999,
                              choice_cap=10) == (999, 10 + 3)


# -- end to end: a portal in front of nodes that send no usage ---------------------------

NONE = "m-none"  # served by a simnode --usage none (it has /tokenize)
BARE_MODEL = "m-bare"  # served by a simnode --usage none --no-tokenize
VLLM = "m-vllm"  # served by a simnode as vLLM reports usage


class Portal:
    def __init__(self, server: PortalServer, nodes: dict[str, str]) -> None:
        self.server = server
        self.nodes = nodes  # model -> node URL
        self.url = server.url

    def key(self, credit: str = "10") -> tuple[int, str]:
        return self.server.create_key(credit)

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def balance(self, key: str) -> int:
        response = httpx.get(self.url + "/v1/key", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        return response.json()["data"]["balance_micros"]

    def faults(self, model: str, **changes: object) -> None:
        response = httpx.post(self.nodes[model] + "/sim/faults", json=changes)
        assert response.status_code == 200, response.text

    def sql(self, query: str, *params: object) -> list[tuple]:
        return sql_query(f"sqlite://{self.server.root / 'data' / 'portal.sqlite3'}", query,
                         *params)

    def counted(self, key_id: int) -> tuple[int, int, str]:
        """(prompt, completion, who counted) of the key's one request, from its usage row."""
        self.usage_row(key_id)
        ((prompt, completion, counted_by),) = self.sql(
            "SELECT prompt_tokens, completion_tokens, counted_by FROM usage_log WHERE key_id=?",
            key_id)
        return prompt, completion, counted_by

    def usage_row(self, key_id: int, timeout: float = 10.0) -> tuple:
        """(prompt, completion, cost, status, streamed, cancelled) of the key's one request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql("SELECT prompt_tokens, completion_tokens, cost, status, streamed, "
                            "cancelled FROM usage_log WHERE key_id=?", key_id)
            if rows:
                (row,) = rows
                return row
            time.sleep(0.05)
        raise TimeoutError("usage did not reach SQL")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Portal]:
    reply = ("--reply-tokens", str(REPLY_TOKENS))
    with start_simnode("--model", "sim-none", "--usage", "none", *reply) as none, \
            start_simnode("--model", "sim-bare", "--usage", "none", "--no-tokenize",
                          *reply) as bare, \
            start_simnode("--model", "sim-vllm", *reply) as vllm:
        server = PortalServer(Path(tmp_path_factory.mktemp("counting")), redis_url, workers=2)
        server.cli("migrate")
        nodes = {NONE: (none.url, "sim-none"), BARE_MODEL: (bare.url, "sim-bare"),
                 VLLM: (vllm.url, "sim-vllm")}
        for model, (url, served) in nodes.items():
            server.add_model(model, served_name=served, input_price=INPUT_PRICE,
                             output_price=OUTPUT_PRICE)
            server.add_node(model, url)
        with server:
            yield Portal(server, {model: url for model, (url, _served) in nodes.items()})


def test_a_complete_stream_is_counted_and_charged_exactly(portal: Portal) -> None:
    key_id, key = portal.key()
    before = portal.balance(key)
    chunks = list(portal.sdk(key).chat.completions.create(model=NONE, messages=MESSAGES,
                                                          stream=True))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) == REPLY_TOKENS
    assert all(c.usage is None for c in chunks)  # not asked for, none added
    assert all(c.model == NONE for c in chunks)
    prompt = chat_prompt_tokens(MESSAGES)
    cost = expected_cost(prompt, REPLY_TOKENS)
    assert portal.balance(key) == before - cost
    assert portal.usage_row(key_id) == (prompt, REPLY_TOKENS, cost, 200, 1, 0)
    assert portal.counted(key_id) == (prompt, REPLY_TOKENS, "edge")


def test_include_usage_gets_the_usage_chunk_from_the_edge(portal: Portal) -> None:
    _key_id, key = portal.key()
    before = portal.balance(key)
    raw = httpx.post(portal.url + "/v1/chat/completions",
                     headers={"authorization": f"Bearer {key}"}, timeout=30,
                     json={"model": NONE, "messages": MESSAGES, "stream": True, "max_tokens": 5,
                           "stream_options": {"include_usage": True}}).text
    assert raw.endswith("data: [DONE]\n\n")
    chunks = list(portal.sdk(key).chat.completions.create(
        model=NONE, messages=MESSAGES, stream=True, max_tokens=5,
        stream_options={"include_usage": True}))
    final = chunks[-1]
    prompt = chat_prompt_tokens(MESSAGES)
    assert final.choices == []
    assert (final.usage.prompt_tokens, final.usage.completion_tokens,
            final.usage.total_tokens) == (prompt, 5, prompt + 5)
    assert final.model == NONE and final.id == chunks[0].id and final.object == \
        "chat.completion.chunk"
    assert all(c.usage is None for c in chunks[:-1])
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
    assert portal.balance(key) == before - 2 * expected_cost(prompt, 5)


def test_a_stream_cut_by_the_client_is_charged_what_it_received(portal: Portal) -> None:
    portal.faults(NONE, tokens_per_second=5.0)
    try:
        key_id, key = portal.key()
        before = portal.balance(key)
        stream = portal.sdk(key).chat.completions.create(
            model=NONE, messages=MESSAGES, stream=True, max_tokens=100,
            extra_body={"ignore_eos": True})
        received = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
                if received == 4:
                    break
        stream.close()
        prompt = chat_prompt_tokens(MESSAGES)
        cost = expected_cost(prompt, 4)
        assert portal.usage_row(key_id) == (prompt, 4, cost, 499, 1, 1)
        assert portal.balance(key) == before - cost
        assert portal.counted(key_id) == (prompt, 4, "edge")
    finally:
        portal.faults(NONE, tokens_per_second=0.0)


def test_a_stream_the_node_breaks_is_charged_what_was_delivered(portal: Portal) -> None:
    portal.faults(NONE, fail_after=6)
    try:
        key_id, key = portal.key()
        before = portal.balance(key)
        received = []
        with pytest.raises(openai.APIError):
            for chunk in portal.sdk(key).chat.completions.create(
                    model=NONE, messages=MESSAGES, stream=True, max_tokens=40,
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
        assert len(received) == 6
        prompt = chat_prompt_tokens(MESSAGES)
        cost = expected_cost(prompt, 6)
        assert portal.usage_row(key_id) == (prompt, 6, cost, 502, 1, 0)
        assert portal.balance(key) == before - cost
        assert portal.counted(key_id) == (prompt, 6, "edge")
    finally:
        portal.faults(NONE, fail_after=None)


def test_an_answer_without_usage_is_counted_and_given_its_usage(portal: Portal) -> None:
    key_id, key = portal.key()
    before = portal.balance(key)
    raw = portal.sdk(key).chat.completions.with_raw_response.create(
        model=NONE, messages=MESSAGES, max_tokens=7)
    answer = raw.parse()
    prompt = chat_prompt_tokens(MESSAGES)
    cost = expected_cost(prompt, 7)
    assert answer.model == NONE
    assert count_text(answer.choices[0].message.content) == 7
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens,
            answer.usage.total_tokens) == (prompt, 7, prompt + 7)
    assert int(raw.headers["x-portal-cost-micros"]) == cost
    assert portal.balance(key) == before - cost
    assert portal.usage_row(key_id) == (prompt, 7, cost, 200, 0, 0)
    assert portal.counted(key_id) == (prompt, 7, "edge")


def test_text_completions_stream_and_not(portal: Portal) -> None:
    _key_id, key = portal.key()
    client = portal.sdk(key)
    text = "Once upon a time"
    before = portal.balance(key)
    answer = client.completions.create(model=NONE, prompt=text, max_tokens=4)
    assert answer.usage.completion_tokens == 4
    chunks = list(client.completions.create(model=NONE, prompt=text, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True}))
    assert len([c for c in chunks if c.choices and c.choices[0].text]) == 6
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    prompt = completion_prompt_tokens(text)
    assert chunks[-1].usage.prompt_tokens == prompt
    assert portal.balance(key) == before - expected_cost(prompt, 4) - expected_cost(prompt, 6)


def test_without_tokenize_the_reservation_estimates_are_charged(portal: Portal) -> None:
    """No /tokenize: the prompt is charged its bound (the body's bytes), the stream its
    deltas, and an answer its text's bytes (each at most the tokens reserved for it)."""
    key_id, key = portal.key()
    before = portal.balance(key)
    body = json.dumps({"model": BARE_MODEL, "messages": MESSAGES, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    raw = httpx.post(portal.url + "/v1/chat/completions", content=body, timeout=30,
                     headers={"authorization": f"Bearer {key}",
                              "content-type": "application/json"}).text
    events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    usage = events[-1]["usage"]
    # The edge's count, priced: what the reservation is settled at.
    assert round(usage.pop("cost") * 1_000_000) == expected_cost(len(body), REPLY_TOKENS)
    assert usage == {"prompt_tokens": len(body), "completion_tokens": REPLY_TOKENS,
                     "total_tokens": len(body) + REPLY_TOKENS}
    assert portal.usage_row(key_id)[:4] == (len(body), REPLY_TOKENS,
                                            expected_cost(len(body), REPLY_TOKENS), 200)
    assert portal.counted(key_id) == (len(body), REPLY_TOKENS, "edge")

    answer_body = json.dumps({"model": BARE_MODEL, "messages": MESSAGES}).encode()
    answer = httpx.post(portal.url + "/v1/chat/completions", content=answer_body, timeout=30,
                        headers={"authorization": f"Bearer {key}",
                                 "content-type": "application/json"}).json()
    text_bytes = len(answer["choices"][0]["message"]["content"].encode())
    assert answer["usage"]["prompt_tokens"] == len(answer_body)
    assert answer["usage"]["completion_tokens"] == text_bytes
    assert portal.balance(key) == before - expected_cost(len(body), REPLY_TOKENS) - \
        expected_cost(len(answer_body), text_bytes)


def test_a_node_that_counts_is_recorded_as_such(portal: Portal) -> None:
    key_id, key = portal.key()
    chunks = list(portal.sdk(key).chat.completions.create(
        model=VLLM, messages=MESSAGES, stream=True, max_tokens=3,
        stream_options={"include_usage": True}))
    prompt = chat_prompt_tokens(MESSAGES)
    assert chunks[-1].usage.completion_tokens == 3
    assert sum(1 for c in chunks if not c.choices) == 1  # the node's, not one more
    assert portal.counted(key_id) == (prompt, 3, "node")


async def test_a_chat_room_reply_is_counted_by_the_edge(portal: Portal) -> None:
    key_id, key = portal.key("1")
    before = portal.balance(key)
    client = await ChatClient.connect(portal.url, "counting", key)
    try:
        await client.send(type="message", text="Hello there!", model=NONE, system="",
                          params={"max_tokens": 5})
        done = await client.wait_for("done")
    finally:
        await client.close()
    prompt = chat_prompt_tokens([{"role": "user", "content": "Hello there!"}])
    assert done["status"] == "done", done.get("error")
    assert count_text(done["text"]) == 5
    assert done["usage"] == {"prompt_tokens": prompt, "completion_tokens": 5,
                             "total_tokens": prompt + 5}
    cost = expected_cost(prompt, 5)
    assert done["cost_micros"] == cost
    assert portal.balance(key) == before - cost
    assert portal.counted(key_id) == (prompt, 5, "edge")
