"""Embeddings, responses, messages, rerank, score and tokenize through the portal, each
with the client people use for it, each charged exactly what the node's usage says."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from edge.billing.money import parse_usd, token_cost
from tests.support.inprocess import BreakAfter, InProcessPortal

IN, OUT = "0.50", "1.50"  # USD per 1M tokens


def cost(prompt: int, completion: int = 0) -> int:
    return token_cost(prompt, completion, parse_usd(IN), parse_usd(OUT))


async def _generate(portal: InProcessPortal, node_doubles, **options):
    node = await node_doubles("sim-gen", reply_tokens=6, **options)
    await portal.add_model("gen", served_name="sim-gen", input_price=IN, output_price=OUT)
    await portal.add_node("gen", node)
    return node


async def test_embeddings_with_the_openai_sdk(inprocess_portal: InProcessPortal,
                                              node_doubles) -> None:
    portal = inprocess_portal
    node = await node_doubles("sim-embed", kind="embed")
    await portal.add_model("embed", served_name="sim-embed", kind="embed", input_price=IN,
                           output_price=OUT)
    await portal.add_node("embed", node)
    key_id, key = await portal.create_key("1")
    client = openai.AsyncOpenAI(base_url=portal.url + "/v1", api_key=key, max_retries=0)

    floats = await client.embeddings.create(model="embed", input=["a cat", "a dog"],
                                            encoding_format="float")
    packed = await client.embeddings.create(model="embed", input=["a cat", "a dog"])  # base64
    assert floats.model == "embed" and len(floats.data) == 2
    for unpacked, listed in zip(packed.data, floats.data, strict=True):
        assert unpacked.embedding == pytest.approx(listed.embedding, abs=1e-6)
    short = await client.embeddings.create(model="embed", input=[[5, 6, 7]], dimensions=8)
    assert len(short.data[0].embedding) == 8
    assert short.usage.prompt_tokens == 3  # token ids are the tokens: no BOS added

    rows = await portal.usage(key_id)
    assert [r["endpoint"] for r in rows] == ["embeddings"] * 3
    expected = [floats.usage.prompt_tokens, packed.usage.prompt_tokens, 3]
    assert [r["prompt_tokens"] for r in rows] == expected
    assert [r["completion_tokens"] for r in rows] == [0, 0, 0]
    assert [r["cost"] for r in rows] == [cost(n) for n in expected]
    assert floats.usage.model_extra["cost"] == pytest.approx(cost(expected[0]) / 1e6)

    # What only the node can judge is its 400, passed on; nothing is charged.
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="embed", input="x", dimensions=100_000)
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="embed", input=[[10**9]])
    for bad in ([], [""], ["a", 1], ["x"] * 10_000, [[1], [-2]]):
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="embed", input=bad)  # type: ignore[arg-type]
    assert len(await portal.usage(key_id)) == 5  # the two node refusals, at $0
    assert sum(r["cost"] for r in await portal.usage(key_id)) == sum(cost(n) for n in expected)
    await portal.assert_books_balance(key_id)
    await client.close()


async def test_responses_with_the_openai_sdk(inprocess_portal: InProcessPortal,
                                             node_doubles) -> None:
    portal = inprocess_portal
    node = await _generate(portal, node_doubles)
    key_id, key = await portal.create_key("1")
    client = openai.AsyncOpenAI(base_url=portal.url + "/v1", api_key=key, max_retries=0)

    answer = await client.responses.create(model="gen", input="Say hello.",
                                           instructions="Be brief.", max_output_tokens=6)
    assert answer.model == "gen" and answer.output_text
    assert answer.usage is not None and answer.usage.output_tokens == 6

    events = []
    async with client.responses.stream(model="gen", input="Say hello.") as stream:
        async for event in stream:
            events.append(event.type)
        final = await stream.get_final_response()
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert events.count("response.output_text.delta") == 6
    assert final.model == "gen" and final.usage is not None

    # The framing is the node's, byte for byte but the model's name.
    direct = await _sse(node.url + "/v1/responses",
                        {"model": "sim-gen", "input": "Say hello.", "stream": True})
    relayed = await _sse(portal.url + "/v1/responses",
                         {"model": "gen", "input": "Say hello.", "stream": True}, key)
    assert [line.split(b":")[0] for line in relayed if not line.startswith(b":")] == \
        [line.split(b":")[0] for line in direct]
    assert [e for e in relayed if e.startswith(b"event:")] == \
        [e for e in direct if e.startswith(b"event:")]

    rows = await portal.usage(key_id)
    assert [r["endpoint"] for r in rows] == ["responses"] * 3
    assert rows[0]["prompt_tokens"] == answer.usage.input_tokens
    assert rows[0]["cost"] == cost(answer.usage.input_tokens, 6)
    assert rows[1]["cost"] == cost(final.usage.input_tokens, final.usage.output_tokens)
    await portal.assert_books_balance(key_id)
    await client.close()


async def test_a_cut_responses_stream_is_charged_what_was_delivered(
        inprocess_portal: InProcessPortal, node_doubles) -> None:
    portal = inprocess_portal
    node = await _generate(portal, node_doubles)
    key_id, key = await portal.create_key("1")
    node.script(BreakAfter(3))
    lines = await _sse(portal.url + "/v1/responses",
                       {"model": "gen", "input": "Say hello.", "stream": True}, key)
    deltas = [line for line in lines if line == b"event: response.output_text.delta"]
    assert len(deltas) == 3
    assert lines[-2] == b"event: error" and b'"code":"upstream_error"' in lines[-1]
    (row,) = await portal.usage(key_id)
    assert row["completion_tokens"] == 3 and row["status"] == 502
    assert row["prompt_tokens"] > 0  # counted by the node's /tokenize
    assert row["cost"] == cost(row["prompt_tokens"], 3)
    await portal.assert_books_balance(key_id)


async def test_messages_with_the_anthropic_sdk(inprocess_portal: InProcessPortal,
                                               node_doubles) -> None:
    portal = inprocess_portal
    node = await _generate(portal, node_doubles)
    key_id, key = await portal.create_key("1")
    client = anthropic.AsyncAnthropic(base_url=portal.url, api_key=key, max_retries=0)
    message = await client.messages.create(
        model="gen", max_tokens=6, system="Be brief.",
        messages=[{"role": "user", "content": "Say hello."}])
    assert message.model == "gen" and message.content[0].type == "text"
    assert message.usage.output_tokens == 6

    async with client.messages.stream(model="gen", max_tokens=4, messages=[
            {"role": "user", "content": "Say hello."}]) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text and final.usage.output_tokens == 4 and final.model == "gen"

    rows = await portal.usage(key_id)
    assert [r["endpoint"] for r in rows] == ["messages"] * 2
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        (message.usage.input_tokens, 6), (final.usage.input_tokens, 4)]
    assert [r["cost"] for r in rows] == [cost(message.usage.input_tokens, 6),
                                         cost(final.usage.input_tokens, 4)]

    # A cut stream: the SDK raises the error event; input and delivered text are charged.
    node.script(BreakAfter(2))
    with pytest.raises(anthropic.APIStatusError):
        async with client.messages.stream(model="gen", max_tokens=6, messages=[
                {"role": "user", "content": "Say hello."}]) as stream:
            async for _piece in stream.text_stream:
                pass
    cut = (await portal.usage(key_id))[-1]
    assert (cut["completion_tokens"], cut["status"]) == (2, 502)
    assert cut["prompt_tokens"] == final.usage.input_tokens
    await portal.assert_books_balance(key_id)
    await client.close()


async def test_rerank_score_and_tokenize_with_httpx(inprocess_portal: InProcessPortal,
                                                    node_doubles) -> None:
    portal = inprocess_portal
    node = await node_doubles("sim-rerank", kind="rerank")
    await portal.add_model("rr", served_name="sim-rerank", kind="rerank", input_price=IN,
                           output_price=OUT)
    await portal.add_node("rr", node)
    key_id, key = await portal.create_key("1", rpm=6)
    auth = {"authorization": f"Bearer {key}"}
    client = portal.client

    ranked = await client.post("/v1/rerank", headers=auth, json={
        "model": "rr", "query": "a cat on a mat",
        "documents": ["a cat sat on the mat", "stock prices fell", "the cat"], "top_n": 2})
    assert ranked.status_code == 200, ranked.text
    body = ranked.json()
    assert body["model"] == "rr" and len(body["results"]) == 2
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    scored = await client.post("/v1/score", headers=auth, json={
        "model": "rr", "text_1": "a cat", "text_2": ["a cat", "a bond"]})
    assert scored.status_code == 200, scored.text
    assert [d["index"] for d in scored.json()["data"]] == [0, 1]

    tokens = await client.post("/tokenize", headers=auth, json={"model": "rr",
                                                               "prompt": "a cat"})
    assert tokens.status_code == 200 and tokens.json()["count"] > 0
    text = await client.post("/detokenize", headers=auth,
                             json={"model": "rr", "tokens": tokens.json()["tokens"]})
    assert text.status_code == 200 and "cat" in text.json()["prompt"]
    assert "x-portal-cost-micros" not in text.headers
    assert (await client.post("/tokenize", json={"model": "rr", "prompt": "x"})).status_code \
        == 401

    rows = await portal.usage(key_id)
    assert [r["endpoint"] for r in rows] == ["rerank", "score", "tokenize", "detokenize"]
    assert rows[0]["prompt_tokens"] == body["usage"]["total_tokens"]
    assert rows[1]["prompt_tokens"] == scored.json()["usage"]["prompt_tokens"]
    assert [r["cost"] for r in rows] == [cost(rows[0]["prompt_tokens"]),
                                         cost(rows[1]["prompt_tokens"]), 0, 0]
    # Free is not unlimited: the key's requests per minute cover the tokenizer too.
    codes = [(await client.post("/tokenize", headers=auth,
                                json={"model": "rr", "prompt": "x"})).status_code
             for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429
    await portal.assert_books_balance(key_id)


async def _sse(url: str, body: dict, key: str | None = None) -> list[bytes]:
    """The non-empty lines of a stream."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=30) as client, \
            client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        data = b"".join([chunk async for chunk in response.aiter_raw()])
    return [line for line in data.split(b"\n") if line]

