"""Text completions over HTTP and through the OpenAI SDK."""

from __future__ import annotations

from typing import Any

import httpx

from simnode.testing import json_events
from simnode.tokenizer import completion_prompt_tokens, generate_text

PROMPT = "Once upon a time, there was"  # 7 tokens + BOS
PROMPT_TOKENS = completion_prompt_tokens(PROMPT)


async def test_non_streaming_completion_has_vllms_shape(
    client: httpx.AsyncClient, model: str
) -> None:
    response = await client.post(
        "/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": 4}
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {
            "index": 0,
            "text": generate_text(PROMPT, 4),
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
            "prompt_logprobs": None,
        }
    ]
    assert PROMPT_TOKENS == 8
    assert body["usage"] == {
        "prompt_tokens": 8,
        "total_tokens": 12,
        "completion_tokens": 4,
        "prompt_tokens_details": None,
    }


async def test_prompt_forms_single_string_list_and_token_ids(
    client: httpx.AsyncClient, model: str
) -> None:
    as_list = (
        await client.post("/v1/completions", json={"model": model, "prompt": [PROMPT]})
    ).json()
    assert as_list["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert as_list["choices"][0]["text"] == generate_text(PROMPT, 16)
    ids = (await client.post("/v1/completions", json={"model": model, "prompt": [5, 6, 7]})).json()
    assert ids["usage"]["prompt_tokens"] == 3


async def test_batched_prompts_are_refused(client: httpx.AsyncClient, model: str) -> None:
    response = await client.post("/v1/completions", json={"model": model, "prompt": ["a", "b"]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


async def test_completion_stream_chunks_carry_usage_key_last(
    client: httpx.AsyncClient, model: str
) -> None:
    request = {"model": model, "prompt": PROMPT, "max_tokens": 3, "stream": True}
    chunks, done = json_events((await client.post("/v1/completions", json=request)).text)
    assert done
    assert len(chunks) == 3
    words = generate_text(PROMPT, 3)
    assert "".join(c["choices"][0]["text"] for c in chunks) == words
    for i, chunk in enumerate(chunks):
        assert list(chunk) == ["id", "object", "created", "model", "choices", "usage"]
        assert chunk["object"] == "text_completion"
        assert chunk["usage"] is None
        choice = chunk["choices"][0]
        assert list(choice) == ["index", "text", "logprobs", "finish_reason", "stop_reason"]
        assert choice["finish_reason"] == ("length" if i == 2 else None)


async def test_completion_stream_with_usage(client: httpx.AsyncClient, model: str) -> None:
    request = {
        "model": model,
        "prompt": PROMPT,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    chunks, done = json_events((await client.post("/v1/completions", json=request)).text)
    assert done
    assert [c["usage"]["completion_tokens"] for c in chunks] == [*range(1, 17), 16]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == PROMPT_TOKENS + 16


async def test_openai_sdk_completions(openai_client: Any, model: str) -> None:
    completion = await openai_client.completions.create(model=model, prompt=PROMPT, max_tokens=5)
    assert completion.choices[0].text == generate_text(PROMPT, 5)
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    stream = await openai_client.completions.create(
        model=model, prompt=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    texts, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].text)
        else:
            usage = chunk.usage
    assert "".join(texts) == generate_text(PROMPT, 16)
    assert usage is not None and usage.completion_tokens == 16
