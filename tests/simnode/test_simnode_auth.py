"""``--api-key`` guards /v1/* exactly like vLLM's; other routes stay open."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from simnode.testing import SimnodeProcess, start_simnode

KEY = "sk-simnode-test"


@pytest.fixture(scope="module")
def guarded() -> Iterator[SimnodeProcess]:
    """A node started with ``--api-key``."""
    with start_simnode("--model", "sim-model", "--api-key", KEY) as started:
        yield started


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
async def test_v1_without_the_key_is_401(guarded: SimnodeProcess, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        response = await http.get("/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}
        chat = await http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
        assert chat.status_code == 401


async def test_non_v1_routes_need_no_key(guarded: SimnodeProcess) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.post("/tokenize", json={"prompt": "hi"})).status_code == 200


async def test_the_key_lets_the_openai_sdk_in(guarded: SimnodeProcess) -> None:
    import openai

    sdk: Any = openai.AsyncOpenAI(base_url=guarded.url + "/v1", api_key=KEY, max_retries=0)
    try:
        models = await sdk.models.list()
        assert [m.id for m in models.data] == ["sim-model"]
        reply = await sdk.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.usage.completion_tokens == 2
        wrong: Any = openai.AsyncOpenAI(base_url=guarded.url + "/v1", api_key="no", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
        await wrong.close()
    finally:
        await sdk.close()


async def test_the_key_may_come_from_vllm_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like vLLM, the key can stay out of the command line (and out of `ps`)."""
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    with start_simnode("--model", "sim-model") as node:
        async with httpx.AsyncClient(base_url=node.url) as http:
            assert (await http.get("/v1/models")).status_code == 401
            allowed = await http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            assert allowed.status_code == 200
        assert KEY not in " ".join(node.process.args)
