"""/metrics reports running and waiting sequences and token counters like vLLM."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import httpx

from simnode.tokenizer import completion_prompt_tokens

PROMPT = "Count me in, please."


def sample(text: str, name: str, model: str) -> float:
    """Return the value of ``name{model_name="model"}`` in Prometheus text."""
    match = re.search(rf'^{re.escape(name)}{{model_name="{re.escape(model)}"}} (\S+)$', text, re.M)
    assert match, f"{name} missing from metrics"
    return float(match.group(1))


async def test_metrics_text_has_vllms_names_and_types(
    client: httpx.AsyncClient, model: str
) -> None:
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name, kind in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
    ]:
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} {kind}\n" in text
        sample(text, name, model)


async def test_in_flight_requests_show_as_running_then_waiting(
    client: httpx.AsyncClient, model: str
) -> None:
    before = (await client.get("/metrics")).text
    # 10 tokens at 20/s: each request generates for about 0.45 s; the node runs 2 at once.
    await client.post("/sim/faults", json={"tokens_per_second": 20})
    request = {"model": model, "prompt": PROMPT, "max_tokens": 10, "stream": True}
    started = time.monotonic()
    tasks = [asyncio.create_task(client.post("/v1/completions", json=request)) for _ in range(3)]
    running = waiting = 0.0
    for _ in range(100):
        text = (await client.get("/metrics")).text
        running = sample(text, "vllm:num_requests_running", model)
        waiting = sample(text, "vllm:num_requests_waiting", model)
        if (running, waiting) == (2, 1):
            break
        await asyncio.sleep(0.02)
    assert (running, waiting) == (2, 1)
    responses = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    assert all(r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") for r in responses)
    # Two batches of ~0.45 s: paced concurrently (one after another would take 1.35 s).
    assert 0.85 <= elapsed < 1.3
    after = (await client.get("/metrics")).text
    assert sample(after, "vllm:num_requests_running", model) == 0
    assert sample(after, "vllm:num_requests_waiting", model) == 0
    prompt_delta = sample(after, "vllm:prompt_tokens_total", model) - sample(
        before, "vllm:prompt_tokens_total", model
    )
    generation_delta = sample(after, "vllm:generation_tokens_total", model) - sample(
        before, "vllm:generation_tokens_total", model
    )
    assert prompt_delta == 3 * completion_prompt_tokens(PROMPT)
    assert generation_delta == 3 * 10


async def _running(client: httpx.AsyncClient, model: str) -> float:
    return sample((await client.get("/metrics")).text, "vllm:num_requests_running", model)


async def test_a_client_that_goes_away_frees_its_slot(
    node_url: str, client: httpx.AsyncClient, model: str
) -> None:
    await client.post("/sim/faults", json={"tokens_per_second": 5})
    request = {"model": model, "prompt": PROMPT, "max_tokens": 50}
    async with httpx.AsyncClient(base_url=node_url) as leaving:
        async with leaving.stream("POST", "/v1/completions", json={**request, "stream": True}) as r:
            async for _ in r.aiter_bytes():
                break  # one chunk, then hang up
        with contextlib.suppress(httpx.ReadTimeout):
            await leaving.post("/v1/completions", json=request, timeout=0.2)
    for _ in range(50):
        if await _running(client, model) == 0:
            break
        await asyncio.sleep(0.02)
    assert await _running(client, model) == 0


async def test_responses_and_messages_count_their_tokens(
    client: httpx.AsyncClient, model: str
) -> None:
    def counters(text: str) -> tuple[float, float, float]:
        length = re.search(r'^vllm:request_success_total\{finished_reason="length",\S+ (\S+)$',
                           text, re.M)
        assert length
        return (sample(text, "vllm:prompt_tokens_total", model),
                sample(text, "vllm:generation_tokens_total", model), float(length.group(1)))

    before = counters((await client.get("/metrics")).text)
    one = await client.post("/v1/responses", json={"model": model, "input": PROMPT,
                                                   "max_output_tokens": 4})
    messages = [{"role": "user", "content": PROMPT}]
    two = await client.post("/v1/messages", json={"model": model, "max_tokens": 3,
                                                  "stream": True, "messages": messages})
    assert one.is_success and two.is_success
    after = counters((await client.get("/metrics")).text)
    prompt = one.json()["usage"]["input_tokens"]
    assert prompt == 3 + 4 + 6
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (2 * prompt, 7, 2)
