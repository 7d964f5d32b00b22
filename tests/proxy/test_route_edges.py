"""What SDK users meet at the edges of the API: Anthropic's key header and error shape,
model kinds, Retry-After values the SDKs honour, and the opt-in wait for a cold model."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import anthropic
import openai
import pytest

from edge.errors import MAX_RETRY_AFTER
from tests.support.inprocess import InProcessPortal


async def test_messages_errors_are_anthropics(inprocess_portal: InProcessPortal) -> None:
    portal = inprocess_portal
    await portal.add_model("m1")
    _key_id, key = await portal.create_key("1")
    client = anthropic.AsyncAnthropic(base_url=portal.url, api_key="sk-ip-wrongwrongwrong",
                                      max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await client.messages.create(model="m1", max_tokens=5,
                                     messages=[{"role": "user", "content": "hi"}])
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"] == caught.value.response.headers["x-request-id"]
    client = anthropic.AsyncAnthropic(base_url=portal.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nope", max_tokens=5,
                                     messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    for raw, kind in [(b"{", "invalid_request_error"), (b'{"model":"m1","messages":[]}',
                                                        "invalid_request_error")]:
        answer = await portal.client.post("/v1/messages", content=raw,
                                          headers={"x-api-key": key})
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == kind and answer.json()["type"] == "error"
    status, too_big = await _head_only(portal, "/v1/messages", 5 * 1024 * 1024)
    assert status == 413
    assert json.loads(too_big)["error"]["type"] == "request_too_large"
    # The other routes keep OpenAI's shape, and take the same x-api-key.
    other = await portal.client.post("/v1/chat/completions", content=b"{",
                                     headers={"x-api-key": key})
    assert other.status_code == 400 and other.json()["error"]["type"] == "invalid_request_error"
    assert (await portal.client.get("/v1/key", headers={"x-api-key": key})).status_code == 200
    await client.close()


async def test_a_model_answers_only_its_kind_of_request(inprocess_portal: InProcessPortal
                                                        ) -> None:
    portal = inprocess_portal
    await portal.add_model("embedder", kind="embed")
    await portal.add_model("talker")
    _key_id, key = await portal.create_key("1")
    client = openai.AsyncOpenAI(base_url=portal.url + "/v1", api_key=key, max_retries=0)
    listed = {m.id: m.model_extra["kind"] for m in (await client.models.list()).data}
    assert listed == {"embedder": "embed", "talker": "generate"}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="embedder",
                                             messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_kind_mismatch"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model="talker", input="hi")
    assert caught.value.code == "model_kind_mismatch"
    job = await portal.client.post("/v1/jobs", headers={"authorization": f"Bearer {key}"},
                                   json={"model": "embedder", "messages": [
                                       {"role": "user", "content": "hi"}]})
    assert job.status_code == 400 and job.json()["error"]["code"] == "model_kind_mismatch"
    assert await portal.usage(_key_id) == []  # nothing reserved, nothing recorded
    await client.close()


async def test_retry_after_is_one_the_sdks_wait_for(inprocess_portal: InProcessPortal) -> None:
    """A model whose nodes take 10 minutes to boot still says Retry-After ≤ 60: the SDK
    then waits and tries again instead of giving up within seconds."""
    from edge.db.models import LLM

    portal = inprocess_portal
    await portal.add_model("slow")
    await LLM.filter(name="slow").update(boot_seconds=600.0)
    await portal.add_node("slow", "http://127.0.0.1:9", state="pending")
    _key_id, key = await portal.create_key("1")
    answer = await portal.chat(key, "slow")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "model_warming"
    assert "600 seconds" in answer.json()["error"]["message"]
    assert answer.headers["retry-after"] == str(MAX_RETRY_AFTER)


async def test_a_client_may_wait_for_a_cold_model(inprocess_portal: InProcessPortal,
                                                  node_doubles) -> None:
    from edge.db.models import Node, NodeState

    portal = inprocess_portal
    node = await node_doubles("m1", reply_tokens=3)
    await portal.add_model("m1")
    node_id = await portal.add_node("m1", node, state="pending")
    key_id, key = await portal.create_key("1")
    client = openai.AsyncOpenAI(base_url=portal.url + "/v1", api_key=key, max_retries=0,
                                default_headers={"X-Portal-Wait": "30"})

    async def boot_finishes() -> None:
        await asyncio.sleep(0.5)
        await Node.filter(id=node_id).update(state=NodeState.RUNNING)
        await portal.ctx.registry.reload()  # what the fleet's `nodes` event does

    booted = asyncio.ensure_future(boot_finishes())
    started = asyncio.get_running_loop().time()
    answer = await client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    waited = asyncio.get_running_loop().time() - started
    await booted
    assert answer.choices[0].message.content and waited >= 0.5
    assert [row["status"] for row in await portal.usage(key_id)] == [200]

    # A wait that runs out is the usual 503, and nothing was held meanwhile.
    await Node.filter(id=node_id).update(state=NodeState.PENDING)
    await portal.ctx.registry.reload()
    short = openai.AsyncOpenAI(base_url=portal.url + "/v1", api_key=key, max_retries=0,
                               default_headers={"X-Portal-Wait": "1"})
    with pytest.raises(openai.InternalServerError) as caught:
        await short.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert caught.value.status_code == 503
    bad = await portal.client.post(
        "/v1/chat/completions", headers={"authorization": f"Bearer {key}",
                                         "x-portal-wait": "soon"},
        json={"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Portal-Wait"
    assert len(await portal.usage(key_id)) == 1
    await portal.assert_books_balance(key_id)
    await client.close()
    await short.close()


async def _head_only(portal: InProcessPortal, path: str, length: int) -> tuple[int, bytes]:
    """Send a request's head announcing ``length`` bytes, and read the answer."""
    url = urlsplit(portal.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    size = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(size)
    writer.close()
    return int(head.split(b" ")[1]), body
