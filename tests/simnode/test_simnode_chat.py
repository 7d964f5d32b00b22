"""Chat completions over HTTP and through the OpenAI SDK: shapes, counts, finish reasons."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from simnode.testing import json_events
from simnode.tokenizer import chat_prompt_tokens, chat_seed_text, generate_text

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello, world!"},
]
PROMPT_TOKENS = chat_prompt_tokens(MESSAGES)  # (4 + 4) + (4 + 4) + 3
SEED = chat_seed_text(MESSAGES)


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


async def test_non_streaming_chat_has_vllms_shape_and_exact_usage(
    client: httpx.AsyncClient, model: str
) -> None:
    response = await client.post("/v1/chat/completions", json=_chat(model))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage", "prompt_logprobs"]
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == model
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": generate_text(SEED, 16),
                "tool_calls": [],
                "reasoning_content": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ]
    assert PROMPT_TOKENS == 19
    assert body["usage"] == {
        "prompt_tokens": 19,
        "total_tokens": 35,
        "completion_tokens": 16,
        "prompt_tokens_details": None,
    }
    assert list(body["usage"]) == [
        "prompt_tokens",
        "total_tokens",
        "completion_tokens",
        "prompt_tokens_details",
    ]
    assert body["prompt_logprobs"] is None
    assert b" " not in response.content.split(b'"content"')[0]  # compact separators


@pytest.mark.parametrize(
    ("extra", "tokens", "finish"),
    [
        ({"max_tokens": 5}, 5, "length"),
        ({"max_tokens": 16}, 16, "stop"),
        ({"max_tokens": 100}, 16, "stop"),
        ({"max_completion_tokens": 3, "max_tokens": 50}, 3, "length"),
        ({"max_tokens": 40, "ignore_eos": True}, 40, "length"),
        ({"max_tokens": 40, "min_tokens": 20}, 20, "stop"),
        ({"temperature": 0.2, "top_p": 0.9, "stop": ["x"], "top_k": 5}, 16, "stop"),
    ],
)
async def test_max_tokens_decides_length_and_finish_reason(
    client: httpx.AsyncClient, model: str, extra: dict[str, Any], tokens: int, finish: str
) -> None:
    body = (await client.post("/v1/chat/completions", json=_chat(model, **extra))).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == generate_text(SEED, tokens)
    assert body["usage"]["completion_tokens"] == tokens
    assert body["usage"]["total_tokens"] == PROMPT_TOKENS + tokens


async def test_a_seed_picks_another_reply_and_the_same_seed_the_same(
    client: httpx.AsyncClient, model: str
) -> None:
    """As vLLM's per-request ``seed``: replies differ by seed and repeat for one seed."""

    async def reply(**extra: Any) -> str:
        body = (await client.post("/v1/chat/completions", json=_chat(model, **extra))).json()
        return str(body["choices"][0]["message"]["content"])

    seven = await reply(seed=7)
    assert seven == await reply(seed=7) == generate_text(SEED + "\nseed: 7", 16)
    assert len({seven, await reply(seed=8), await reply()}) == 3


async def test_ignore_eos_without_max_tokens_fills_the_context(
    client: httpx.AsyncClient, model: str, max_model_len: int
) -> None:
    body = (await client.post("/v1/chat/completions", json=_chat(model, ignore_eos=True))).json()
    assert body["usage"]["completion_tokens"] == max_model_len - PROMPT_TOKENS
    assert body["choices"][0]["finish_reason"] == "length"


async def test_model_may_be_omitted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 200


async def test_stream_sends_role_then_one_chunk_per_token_then_done(
    client: httpx.AsyncClient, model: str
) -> None:
    response = await client.post(
        "/v1/chat/completions", json=_chat(model, stream=True, max_tokens=4)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks, done = json_events(response.text)
    assert done
    assert len(chunks) == 1 + 4
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for chunk in chunks:
        assert list(chunk) == ["id", "object", "created", "model", "choices"]
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == model
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    words = generate_text(SEED, 4).split(" ")[1:]
    for chunk, word in zip(chunks[1:-1], words, strict=False):
        assert chunk["choices"] == [
            {"index": 0, "delta": {"content": " " + word}, "logprobs": None, "finish_reason": None}
        ]
    assert chunks[-1]["choices"] == [
        {
            "index": 0,
            "delta": {"content": " " + words[-1]},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
    ]


async def test_include_usage_adds_null_usage_and_a_final_usage_chunk(
    client: httpx.AsyncClient, model: str
) -> None:
    request = _chat(model, stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat/completions", json=request)
    chunks, done = json_events(response.text)
    assert done
    assert len(chunks) == 1 + 16 + 1
    for chunk in chunks[:-1]:
        assert list(chunk)[-1] == "usage" and chunk["usage"] is None
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    final = chunks[-1]
    assert list(final) == ["id", "object", "created", "model", "choices", "usage"]
    assert final["choices"] == []
    assert final["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "total_tokens": PROMPT_TOKENS + 16,
        "completion_tokens": 16,
    }


async def test_continuous_usage_stats_carry_running_totals(
    client: httpx.AsyncClient, model: str
) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    request = _chat(model, stream=True, max_tokens=3, stream_options=options)
    chunks, done = json_events((await client.post("/v1/chat/completions", json=request)).text)
    assert done
    usages = [chunk["usage"] for chunk in chunks]
    assert [u["completion_tokens"] for u in usages] == [0, 1, 2, 3, 3]
    for usage in usages:
        assert list(usage) == ["prompt_tokens", "total_tokens", "completion_tokens"]
        assert usage["total_tokens"] == PROMPT_TOKENS + usage["completion_tokens"]
    assert all(list(chunk)[-1] == "usage" for chunk in chunks)


async def test_stream_text_joins_to_the_non_streaming_text(
    client: httpx.AsyncClient, model: str
) -> None:
    plain = (await client.post("/v1/chat/completions", json=_chat(model))).json()
    streamed = await client.post("/v1/chat/completions", json=_chat(model, stream=True))
    chunks, _ = json_events(streamed.text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]


async def test_openai_sdk_reads_a_chat_completion(openai_client: Any, model: str) -> None:
    completion = await openai_client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=6
    )
    assert completion.choices[0].message.content == generate_text(SEED, 6)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == 6


async def test_openai_sdk_streams_a_chat_completion_with_usage(
    openai_client: Any, model: str
) -> None:
    stream = await openai_client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert text == generate_text(SEED, 16)
    assert finish == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, 16)


async def test_same_request_same_reply_other_prompt_other_reply(
    client: httpx.AsyncClient, model: str
) -> None:
    first = (await client.post("/v1/chat/completions", json=_chat(model))).json()
    again = (await client.post("/v1/chat/completions", json=_chat(model))).json()
    other_messages = [{"role": "user", "content": "Something else entirely."}]
    other = (
        await client.post("/v1/chat/completions", json={"model": model, "messages": other_messages})
    ).json()
    content = first["choices"][0]["message"]["content"]
    assert again["choices"][0]["message"]["content"] == content
    assert other["choices"][0]["message"]["content"] != content
    assert first["id"] != again["id"]
    assert json.dumps(first["usage"]) == json.dumps(again["usage"])
