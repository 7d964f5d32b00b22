"""/v1/responses: the Response object, its SSE events, the OpenAI SDK, errors and faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simnode.responses import input_messages
from simnode.testing import named_events
from simnode.tokenizer import chat_prompt_tokens, chat_seed_text, generate_text, generate_tokens

INPUT = "Tell me a story."
INSTRUCTIONS = "Be brief."
MESSAGES = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": INPUT}]
PROMPT_TOKENS = chat_prompt_tokens(MESSAGES)  # (4 + 3) + (4 + 5) + 3
SEED = chat_seed_text(MESSAGES)
RESPONSE_KEYS = [
    "id", "created_at", "incomplete_details", "instructions", "metadata", "model", "object",
    "output", "parallel_tool_calls", "temperature", "tool_choice", "tools", "top_p",
    "background", "max_output_tokens", "max_tool_calls", "previous_response_id", "prompt",
    "prompt_cache_options", "prompt_cache_key", "prompt_cache_retention", "reasoning",
    "safety_identifier", "service_tier", "status", "text", "top_logprobs", "truncation",
    "usage", "user", "presence_penalty", "frequency_penalty", "kv_transfer_params",
    "ec_transfer_params", "input_messages", "output_messages",
]  # fmt: skip


def _body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": INPUT, "instructions": INSTRUCTIONS, **extra}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0,
                                 "input_tokens_per_turn": [], "cached_tokens_per_turn": []},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0,
                                  "output_tokens_per_turn": [],
                                  "tool_output_tokens_per_turn": []},
        "total_tokens": input_tokens + output_tokens,
    }


def _error(response: httpx.Response, status: int, err_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert (error["type"], error["code"]) == (err_type, status)
    return error


async def test_non_streaming_response_has_vllms_shape(client: httpx.AsyncClient,
                                                      model: str) -> None:
    response = await client.post("/v1/responses", json=_body(model))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == RESPONSE_KEYS
    assert body["id"].startswith("resp_") and len(body["id"]) == len("resp_") + 32
    assert (body["object"], body["model"], body["status"]) == ("response", model, "completed")
    assert (body["instructions"], body["incomplete_details"]) == (INSTRUCTIONS, None)
    assert (body["temperature"], body["top_p"], body["tool_choice"]) == (1.0, 1.0, "none")
    [item] = body["output"]
    assert list(item) == ["id", "content", "role", "status", "type", "phase"]
    assert item["id"].startswith("msg_")
    assert (item["role"], item["status"], item["type"]) == ("assistant", "completed", "message")
    assert item["content"] == [{"annotations": [], "text": generate_text(SEED, 16),
                                "type": "output_text", "logprobs": None}]
    assert PROMPT_TOKENS == 19
    assert body["usage"] == _usage(19, 16)
    assert body["max_output_tokens"] == 128 - 19  # what the context leaves, as vLLM reports


async def test_max_output_tokens_cuts_the_reply_and_marks_it_incomplete(
    client: httpx.AsyncClient, model: str
) -> None:
    body = (await client.post("/v1/responses", json=_body(model, max_output_tokens=5))).json()
    assert (body["status"], body["incomplete_details"]) == ("incomplete",
                                                            {"reason": "max_output_tokens"})
    assert body["output"][0]["status"] == "incomplete"
    assert body["usage"]["output_tokens"] == 5 and body["max_output_tokens"] == 5
    assert body["output"][0]["content"][0]["text"] == generate_text(SEED, 5)


async def test_input_items_count_like_chat_messages(client: httpx.AsyncClient, model: str) -> None:
    items = [
        {"role": "user", "content": "Hello there"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hi!"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "How are you?"}]},
    ]
    messages = input_messages(items, None)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    body = (await client.post("/v1/responses", json={"model": model, "input": items})).json()
    assert body["usage"]["input_tokens"] == chat_prompt_tokens(messages) == 3 + 6 + 6 + 8


async def test_stream_sends_vllms_events_in_order_without_done(
    client: httpx.AsyncClient, model: str
) -> None:
    response = await client.post("/v1/responses", json=_body(model, stream=True,
                                                             max_output_tokens=3))
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.text.startswith("event: response.created\ndata: {")
    events, done = named_events(response.text)
    assert not done and "[DONE]" not in response.text
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 3,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.incomplete",
    ]
    assert all(data["type"] == kind for kind, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created = events[0][1]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert list(created) == RESPONSE_KEYS
    item_id = events[2][1]["item"]["id"]
    deltas = [data["delta"] for kind, data in events if kind.endswith(".delta")]
    assert deltas == generate_tokens(SEED, 3)
    assert list(events[4][1]) == ["content_index", "delta", "item_id", "logprobs",
                                  "output_index", "sequence_number", "type"]
    final = events[-1][1]["response"]
    assert final["id"] == created["id"] and final["status"] == "incomplete"
    assert final["output"][0]["id"] == item_id
    assert final["output"][0]["content"][0]["text"] == "".join(deltas)
    assert final["usage"] == _usage(PROMPT_TOKENS, 3)


async def test_a_natural_end_is_response_completed(client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/v1/responses", json=_body(model, stream=True))
    events, _ = named_events(response.text)
    assert events[-1][0] == "response.completed"
    assert events[-1][1]["response"]["usage"]["output_tokens"] == 16


async def test_openai_sdk_reads_answers_and_streams(openai_client: Any, model: str) -> None:
    answer = await openai_client.responses.create(model=model, input=INPUT,
                                                  instructions=INSTRUCTIONS)
    assert answer.output_text == generate_text(SEED, 16)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (PROMPT_TOKENS, 16)
    async with openai_client.responses.stream(model=model, input=INPUT,
                                              instructions=INSTRUCTIONS) as stream:
        deltas = [event.delta async for event in stream if event.type.endswith("text.delta")]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == answer.output_text
    assert final.usage.total_tokens == PROMPT_TOKENS + 16
    raw = await openai_client.responses.create(model=model, input=INPUT, stream=True,
                                               max_output_tokens=2)
    kinds = [event.type async for event in raw]
    assert kinds[-1] == "response.incomplete" and kinds.count("response.output_text.delta") == 2


async def test_store_is_accepted_but_nothing_is_stored(client: httpx.AsyncClient,
                                                       model: str) -> None:
    first = (await client.post("/v1/responses", json=_body(model, store=True))).json()
    follow = await client.post("/v1/responses", json=_body(
        model, previous_response_id=first["id"]))
    error = _error(follow, 404, "invalid_request_error")
    assert error["message"] == f"Response with id '{first['id']}' not found."
    assert error["param"] == "response_id"
    background = await client.post("/v1/responses", json=_body(model, background=True))
    assert _error(background, 400, "invalid_request_error")["param"] == "background"


async def test_context_checks_follow_vllm(client: httpx.AsyncClient, model: str,
                                          max_model_len: int) -> None:
    too_many = await client.post("/v1/responses", json=_body(model, max_output_tokens=500))
    error = _error(too_many, 400, "BadRequestError")
    assert error["message"] == (
        f"max_output_tokens=500 cannot be greater than max_model_len={max_model_len}. Please "
        "request fewer output tokens. (parameter=max_output_tokens, value=500)")
    clamped = (await client.post("/v1/responses", json=_body(model, max_output_tokens=120,
                                                             ignore_eos=True))).json()
    assert clamped["usage"]["output_tokens"] == max_model_len - PROMPT_TOKENS  # not an error
    words = " ".join(["word"] * max_model_len)
    error = _error(await client.post("/v1/responses", json={"input": words}), 400,
                   "BadRequestError")
    assert error["param"] == "input_tokens"
    assert "However, your prompt contains at least" in error["message"]
    exact = " ".join(["word"] * (max_model_len - 7))  # the template's 7 tokens fill it
    error = _error(await client.post("/v1/responses", json={"input": exact}), 400,
                   "invalid_request_error")
    assert error["message"] == (f"The engine prompt length {max_model_len} exceeds the "
                                f"max_model_len {max_model_len}. Please reduce prompt.")


async def test_unknown_model_and_bad_bodies(client: httpx.AsyncClient, model: str) -> None:
    error = _error(await client.post("/v1/responses", json={"model": "x", "input": "hi"}), 404,
                   "NotFoundError")
    assert error["message"] == f"The model `x` does not exist. Valid aliases: {model}."
    assert error["param"] == "model"
    missing = _error(await client.post("/v1/responses", json={"model": model}), 400,
                     "Bad Request")
    assert missing["param"] == "body.input"
    required = await client.post("/v1/responses", json={"input": "hi", "tool_choice": "required"})
    assert _error(required, 400, "BadRequestError")["param"] == "tool_choice"


async def test_fail_after_breaks_the_stream_and_fails_long_answers(
    client: httpx.AsyncClient, model: str
) -> None:
    await client.post("/sim/faults", json={"fail_after": 2})
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/v1/responses",
                                 json=_body(model, stream=True)) as response:
            async for data in response.aiter_bytes():
                received += data
    events, done = named_events(received.decode())
    assert not done
    assert [kind for kind, _ in events][-3:] == ["response.content_part.added",
                                                 "response.output_text.delta",
                                                 "response.output_text.delta"]
    error = _error(await client.post("/v1/responses", json=_body(model)), 500,
                   "InternalServerError")
    assert error["message"] == "Internal server error"
    fits = await client.post("/v1/responses", json=_body(model, max_output_tokens=2))
    assert fits.status_code == 200


async def test_fail_status_and_pacing_apply(client: httpx.AsyncClient, model: str) -> None:
    await client.post("/sim/faults", json={"fail_status": 503, "fail_count": 1})
    refused = await client.post("/v1/responses", json=_body(model, stream=True))
    assert _error(refused, 503, "ServiceUnavailableError")["message"] == "Service Unavailable"
    await client.post("/sim/faults", json={"ttft": 0.3, "tokens_per_second": 50})
    started = time.monotonic()
    first_delta = None
    async with client.stream("POST", "/v1/responses",
                             json=_body(model, stream=True, max_output_tokens=6)) as response:
        async for line in response.aiter_lines():
            if first_delta is None and line == "event: response.output_text.delta":
                first_delta = time.monotonic() - started
    total = time.monotonic() - started
    assert first_delta is not None and 0.3 <= first_delta < 0.6
    assert 0.3 + 5 / 50 <= total < 0.9
