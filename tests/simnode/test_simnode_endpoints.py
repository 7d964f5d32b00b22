"""The small vLLM endpoints: /health, /v1/models, /tokenize, /detokenize."""

from __future__ import annotations

import httpx

from simnode.tokenizer import chat_prompt_tokens, generate_text


async def test_health_is_an_empty_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.content == b""


async def test_models_lists_the_served_model(
    client: httpx.AsyncClient, model: str, max_model_len: int
) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert list(card) == [
        "id",
        "object",
        "created",
        "owned_by",
        "root",
        "parent",
        "max_model_len",
        "permission",
    ]
    assert card["id"] == card["root"] == model
    assert (card["object"], card["owned_by"], card["parent"]) == ("model", "vllm", None)
    assert card["max_model_len"] == max_model_len
    assert card["permission"][0]["object"] == "model_permission"


async def test_tokenize_a_prompt_counts_bos(
    client: httpx.AsyncClient, model: str, max_model_len: int
) -> None:
    body = (await client.post("/tokenize", json={"model": model, "prompt": "Hello, world!"})).json()
    assert body["count"] == 5
    assert len(body["tokens"]) == 5
    assert body["max_model_len"] == max_model_len
    assert all(isinstance(t, int) for t in body["tokens"])
    plain = (
        await client.post(
            "/tokenize", json={"prompt": "Hello, world!", "add_special_tokens": False}
        )
    ).json()
    assert plain["count"] == 4
    assert plain["tokens"] == body["tokens"][1:]


async def test_tokenize_messages_matches_chat_usage(client: httpx.AsyncClient, model: str) -> None:
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    body = (await client.post("/tokenize", json={"messages": messages})).json()
    assert body["count"] == chat_prompt_tokens(messages) == 4 + 6 + 3
    chat = (
        await client.post("/v1/chat/completions", json={"model": model, "messages": messages})
    ).json()
    assert chat["usage"]["prompt_tokens"] == body["count"]


async def test_tokenize_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/tokenize", json={"model": "nope", "prompt": "x"})
    assert response.status_code == 404


async def test_detokenize_round_trips_generated_text(client: httpx.AsyncClient) -> None:
    text = generate_text("anything", 10)
    tokens = (
        await client.post("/tokenize", json={"prompt": text, "add_special_tokens": False})
    ).json()["tokens"]
    body = (await client.post("/detokenize", json={"tokens": tokens})).json()
    assert body == {"prompt": text.strip()}
