"""Errors come back with vLLM's status codes and JSON shapes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def _error(response: httpx.Response, status: int, err_type: str) -> dict[str, Any]:
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["message", "type", "param", "code"]
    assert body["error"]["type"] == err_type
    assert body["error"]["code"] == status
    return body["error"]


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    request = {"model": "other-model", "messages": [{"role": "user", "content": "hi"}]}
    error = _error(await client.post("/v1/chat/completions", json=request), 404, "NotFoundError")
    assert error["message"] == "The model `other-model` does not exist."
    assert error["param"] == "model"
    request = {"model": "other-model", "prompt": "hi"}
    _error(await client.post("/v1/completions", json=request), 404, "NotFoundError")


async def test_prompt_longer_than_context_is_400(
    client: httpx.AsyncClient, model: str, max_model_len: int
) -> None:
    long_text = " ".join(["word"] * max_model_len)
    request = {"model": model, "messages": [{"role": "user", "content": long_text}]}
    error = _error(await client.post("/v1/chat/completions", json=request), 400, "BadRequestError")
    assert error["message"].startswith(
        f"This model's maximum context length is {max_model_len} tokens. However, your request "
        f"has {max_model_len + 7} input tokens."
    )
    assert error["param"] == "input_tokens"


async def test_prompt_plus_max_tokens_over_context_is_400(
    client: httpx.AsyncClient, model: str, max_model_len: int
) -> None:
    request = {"model": model, "prompt": "Hello", "max_tokens": max_model_len - 1}
    error = _error(await client.post("/v1/completions", json=request), 400, "BadRequestError")
    assert f"This model's maximum context length is {max_model_len} tokens" in error["message"]
    assert error["param"] == "max_tokens"
    request["max_tokens"] = max_model_len - 2  # exactly fills the window
    assert (await client.post("/v1/completions", json=request)).status_code == 200


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"model": ', {"content-type": "application/json"}),
        (b"[1, 2]", {"content-type": "application/json"}),
        (b'{"model": "sim-model"}', {"content-type": "application/json"}),
        (b'{"messages": "hi"}', {"content-type": "application/json"}),
        (b'{"messages": [{"role": "user", "content": 5}]}', {"content-type": "application/json"}),
        (b'{"messages": []}', {"content-type": "text/plain"}),
    ],
)
async def test_malformed_bodies_are_400(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/chat/completions", content=content, headers=headers)
    _error(response, 400, "Bad Request")


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 2},
        {"max_tokens": 0},
        {"stream_options": {"include_usage": True}},
    ],
)
async def test_unsupported_parameters_are_400(
    client: httpx.AsyncClient, model: str, extra: dict[str, Any]
) -> None:
    request = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


async def test_unknown_route_and_method_answer_like_fastapi(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = await client.get("/v1/chat/completions")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})


async def test_openai_sdk_raises_typed_errors(openai_client: Any, model: str) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.completions.create(model=model, prompt="hi", max_tokens=10_000)
    assert "maximum context length" in str(caught.value)
