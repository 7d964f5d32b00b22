"""Fault injection, from the command line and at runtime through /sim/faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simnode.testing import json_events, start_simnode
from simnode.tokenizer import chat_seed_text, generate_tokens

MESSAGES = [{"role": "user", "content": "Tell me a story."}]


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


async def _set(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await client.post("/sim/faults", json=changes)
    assert response.status_code == 200, response.text
    return response.json()


async def test_faults_start_clear_and_update_partially(client: httpx.AsyncClient) -> None:
    assert (await client.get("/sim/faults")).json() == {
        "fail_after": None,
        "fail_status": None,
        "fail_count": None,
        "hang": False,
        "tokens_per_second": 0.0,
        "ttft": 0.0,
        "health_status": 200,
    }
    updated = await _set(client, fail_after=3)
    assert updated["fail_after"] == 3 and updated["hang"] is False
    updated = await _set(client, ttft=0.5)
    assert (updated["fail_after"], updated["ttft"]) == (3, 0.5)
    assert (await client.get("/sim/faults")).json() == updated


@pytest.mark.parametrize(
    "changes",
    [{"hang": "yes"}, {"bogus": 1}, {"fail_status": 99}, {"tokens_per_second": -1}, {"ttft": True}],
)
async def test_invalid_fault_updates_are_refused_whole(
    client: httpx.AsyncClient, changes: dict[str, Any]
) -> None:
    response = await client.post("/sim/faults", json={"fail_after": 1, **changes})
    assert response.status_code == 400
    assert (await client.get("/sim/faults")).json()["fail_after"] is None


async def test_fail_after_breaks_the_stream_without_done(
    client: httpx.AsyncClient, model: str
) -> None:
    await _set(client, fail_after=3)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", "/v1/chat/completions", json=_chat(model, stream=True)
        ) as response:
            assert response.status_code == 200
            async for data in response.aiter_bytes():
                received += data
    chunks, done = json_events(received.decode())
    assert not done
    assert len(chunks) == 1 + 3  # role chunk, then exactly 3 content tokens
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert contents == generate_tokens(chat_seed_text(MESSAGES), 3)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_fail_after_spares_replies_that_fit(client: httpx.AsyncClient, model: str) -> None:
    await _set(client, fail_after=3)
    short = await client.post("/v1/chat/completions", json=_chat(model, max_tokens=3, stream=True))
    assert json_events(short.text)[1]
    assert (await client.post("/v1/chat/completions", json=_chat(model, max_tokens=3))).is_success


async def test_fail_after_fails_longer_non_streaming_requests_with_500(
    client: httpx.AsyncClient, model: str
) -> None:
    await _set(client, fail_after=3)
    response = await client.post("/v1/completions", json={"model": model, "prompt": "x"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "Internal server error",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }


async def test_openai_sdk_sees_the_broken_stream(
    client: httpx.AsyncClient, openai_client: Any, model: str
) -> None:
    await _set(client, fail_after=2)
    import openai

    contents = []
    with pytest.raises(openai.APIConnectionError):
        stream = await openai_client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True
        )
        async for chunk in stream:
            contents.append(chunk.choices[0].delta.content)
    assert len([c for c in contents if c]) == 2


async def test_fail_count_fails_only_the_next_requests(client: httpx.AsyncClient,
                                                        model: str) -> None:
    await _set(client, fail_status=429, fail_count=2)
    statuses = [(await client.post("/v1/chat/completions", json=_chat(model))).status_code
                for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert (await client.get("/sim/faults")).json()["fail_count"] == 0
    await _set(client, fail_status=None, fail_count=None)


async def test_fail_status_answers_every_completion_request(
    client: httpx.AsyncClient, openai_client: Any, model: str
) -> None:
    import openai

    await _set(client, fail_status=503)
    for path, body in [
        ("/v1/chat/completions", _chat(model)),
        ("/v1/completions", {"model": model, "prompt": "x", "stream": True}),
    ]:
        response = await client.post(path, json=body)
        assert response.status_code == 503
        assert response.json()["error"] == {
            "message": "Service Unavailable",
            "type": "ServiceUnavailableError",
            "param": None,
            "code": 503,
        }
    assert (await client.get("/health")).status_code == 200
    with pytest.raises(openai.APIStatusError) as caught:
        await openai_client.chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.status_code == 503


async def test_health_status_is_switchable(client: httpx.AsyncClient) -> None:
    await _set(client, health_status=503)
    assert (await client.get("/health")).status_code == 503
    await _set(client, health_status=200)
    assert (await client.get("/health")).status_code == 200


async def test_hang_never_answers_until_switched_off(client: httpx.AsyncClient, model: str) -> None:
    await _set(client, hang=True)
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json=_chat(model), timeout=0.4)
    assert (await client.get("/health")).status_code == 200
    await _set(client, hang=False)
    response = await client.post("/v1/chat/completions", json=_chat(model), timeout=2)
    assert response.status_code == 200


async def test_runtime_pacing_delays_first_token_and_the_rest(
    client: httpx.AsyncClient, model: str
) -> None:
    await _set(client, ttft=0.3, tokens_per_second=50)
    started = time.monotonic()
    first_token_at = None
    async with client.stream(
        "POST", "/v1/chat/completions", json=_chat(model, stream=True, max_tokens=6)
    ) as response:
        async for line in response.aiter_lines():
            if first_token_at is None and '"content":" ' in line:
                first_token_at = time.monotonic() - started
    total = time.monotonic() - started
    assert first_token_at is not None and 0.3 <= first_token_at < 0.6
    assert 0.3 + 5 / 50 <= total < 0.9
    started = time.monotonic()
    plain = await client.post("/v1/chat/completions", json=_chat(model, max_tokens=6))
    assert plain.status_code == 200
    assert 0.4 <= time.monotonic() - started < 0.9


def test_command_line_faults_are_the_starting_switches(node_args: tuple[str, ...]) -> None:
    flags = ("--fail-status", "503", "--hang", "--fail-after", "2")
    pacing = ("--ttft", "0.1", "--tokens-per-second", "7")
    with start_simnode(*node_args, *flags, *pacing) as faulty:
        faults = httpx.get(faulty.url + "/sim/faults").json()
        assert faults == {
            "fail_after": 2,
            "fail_status": 503,
            "fail_count": None,
            "hang": True,
            "tokens_per_second": 7.0,
            "ttft": 0.1,
            "health_status": 200,
        }
        response = httpx.post(faulty.url + "/v1/completions", json={"prompt": "x"})
        assert response.status_code == 503
