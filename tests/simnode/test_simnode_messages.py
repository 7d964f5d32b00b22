"""/v1/messages: Anthropic's Messages API as vLLM serves it, through the Anthropic SDK too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from simnode.messages import anthropic_messages
from simnode.testing import SimnodeProcess, named_events
from simnode.tokenizer import chat_prompt_tokens, chat_seed_text, generate_text, generate_tokens

SYSTEM = "You are terse."
MESSAGES = [{"role": "user", "content": "Hello, world!"}]
CHAT = [{"role": "system", "content": SYSTEM}, *MESSAGES]
PROMPT_TOKENS = chat_prompt_tokens(CHAT)  # (4 + 4) + (4 + 4) + 3
SEED = chat_seed_text(CHAT)


@pytest.fixture
async def anthropic_client(node: SimnodeProcess,
                           client: httpx.AsyncClient) -> AsyncIterator[Any]:
    """The official Anthropic SDK pointed at the shared node, without retries."""
    import anthropic

    sdk = anthropic.AsyncAnthropic(base_url=node.url, api_key="x", max_retries=0)
    yield sdk
    await sdk.close()


def _body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "system": SYSTEM, "messages": MESSAGES, "max_tokens": 100, **extra}


def _anthropic_error(response: httpx.Response, status: int, err_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["type", "error"] and body["type"] == "error"
    assert list(body["error"]) == ["type", "message"] and body["error"]["type"] == err_type
    message: str = body["error"]["message"]
    return message


async def test_non_streaming_message_has_vllms_shape(client: httpx.AsyncClient,
                                                     model: str) -> None:
    response = await client.post("/v1/messages", json=_body(model))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id", "type", "role", "content", "model", "stop_reason", "usage"]
    assert body["id"].startswith("chatcmpl-")  # vLLM answers through its chat completion
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", model)
    assert body["content"] == [{"type": "text", "text": generate_text(SEED, 16)}]
    assert body["stop_reason"] == "end_turn"
    assert PROMPT_TOKENS == 19
    assert body["usage"] == {"input_tokens": 19, "output_tokens": 16}


async def test_max_tokens_cuts_the_reply(client: httpx.AsyncClient, model: str) -> None:
    body = (await client.post("/v1/messages", json=_body(model, max_tokens=4))).json()
    assert (body["stop_reason"], body["usage"]["output_tokens"]) == ("max_tokens", 4)


async def test_system_blocks_and_content_blocks_count_their_text(
    client: httpx.AsyncClient, model: str
) -> None:
    request = {
        "model": model,
        "max_tokens": 10,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: abc"},
                   {"type": "text", "text": SYSTEM}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}],
    }
    assert anthropic_messages(request) == CHAT
    body = (await client.post("/v1/messages", json=request)).json()
    assert body["usage"]["input_tokens"] == PROMPT_TOKENS


async def test_stream_sends_vllms_events_without_ping_or_done(
    client: httpx.AsyncClient, model: str
) -> None:
    response = await client.post("/v1/messages", json=_body(model, max_tokens=3, stream=True))
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events, done = named_events(response.text)
    assert not done and "[DONE]" not in response.text
    kinds = [kind for kind, _ in events]
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * 3,
                     "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == kind for kind, data in events)
    start = events[0][1]["message"]
    assert list(start) == ["id", "type", "role", "content", "model", "stop_reason",
                           "stop_sequence", "usage"]
    assert start["usage"] == {"input_tokens": PROMPT_TOKENS, "output_tokens": 0}
    assert events[1][1] == {"type": "content_block_start",
                            "content_block": {"type": "text", "text": ""}, "index": 0}
    deltas = [data["delta"]["text"] for kind, data in events if kind == "content_block_delta"]
    assert deltas == generate_tokens(SEED, 3)
    assert events[6][1] == {"type": "message_delta",
                            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 3}}
    assert response.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_anthropic_sdk_accumulates_the_right_usage(anthropic_client: Any,
                                                         model: str) -> None:
    answer = await anthropic_client.messages.create(model=model, max_tokens=100, system=SYSTEM,
                                                    messages=MESSAGES)
    assert answer.content[0].text == generate_text(SEED, 16)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (PROMPT_TOKENS, 16)
    async with anthropic_client.messages.stream(model=model, max_tokens=5, system=SYSTEM,
                                                messages=MESSAGES) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == final.content[0].text == generate_text(SEED, 5)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, 5)
    assert final.stop_reason == "max_tokens"


async def test_route_errors_are_in_anthropics_shape(client: httpx.AsyncClient, model: str,
                                                    max_model_len: int) -> None:
    message = _anthropic_error(await client.post("/v1/messages", json=_body("other")), 404,
                               "not_found_error")
    assert message == f"The model `other` does not exist. Valid aliases: {model}."
    message = _anthropic_error(
        await client.post("/v1/messages", json=_body(model, max_tokens=max_model_len + 1)), 400,
        "invalid_request_error")
    assert message.startswith(f"max_completion_tokens={max_model_len + 1} cannot be greater")
    long = [{"role": "user", "content": " ".join(["word"] * max_model_len)}]
    message = _anthropic_error(await client.post("/v1/messages", json=_body(
        model, messages=long)), 400, "invalid_request_error")
    assert "maximum context length" in message


async def test_anthropic_sdk_raises_typed_errors(anthropic_client: Any) -> None:
    import anthropic

    with pytest.raises(anthropic.NotFoundError) as caught:
        await anthropic_client.messages.create(model="other", max_tokens=5, messages=MESSAGES)
    assert caught.value.body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": None}, "body.max_tokens"),
        ({"max_tokens": 0}, "body.max_tokens"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "body.messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]},
         "body.messages.0.content.0.type"),
    ],
)
async def test_invalid_bodies_are_refused_in_the_openai_shape(
    client: httpx.AsyncClient, model: str, extra: dict[str, Any], param: str
) -> None:
    body = {k: v for k, v in _body(model, **extra).items() if v is not None}
    response = await client.post("/v1/messages", json=body)
    assert response.status_code == 400
    error = response.json()["error"]  # vLLM's app-wide validation handler answers these
    assert (error["type"], error["param"], error["code"]) == ("Bad Request", param, 400)


async def test_faults_answer_in_anthropics_shape(client: httpx.AsyncClient, model: str) -> None:
    await client.post("/sim/faults", json={"fail_status": 503, "fail_count": 1})
    message = _anthropic_error(await client.post("/v1/messages", json=_body(model)), 503,
                               "overloaded_error")
    assert message == "Service Unavailable"
    await client.post("/sim/faults", json={"fail_after": 2})
    message = _anthropic_error(await client.post("/v1/messages", json=_body(model)), 500,
                               "api_error")
    assert message == "Internal server error"
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/v1/messages",
                                 json=_body(model, stream=True)) as response:
            async for data in response.aiter_bytes():
                received += data
    events, _ = named_events(received.decode())
    assert [kind for kind, _ in events] == ["message_start", "content_block_start",
                                            "content_block_delta", "content_block_delta"]


async def test_api_key_guards_messages(node_args: tuple[str, ...]) -> None:
    from simnode.testing import start_simnode

    with start_simnode(*node_args, "--api-key", "k") as guarded:
        async with httpx.AsyncClient(base_url=guarded.url) as http:
            denied = await http.post("/v1/messages", json=_body("sim-model"))
            assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
            allowed = await http.post("/v1/messages", json=_body("sim-model"),
                                      headers={"Authorization": "Bearer k"})
            assert allowed.status_code == 200
