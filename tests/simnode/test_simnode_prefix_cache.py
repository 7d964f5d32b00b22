"""The prefix cache: block hits like vLLM's, its counters in /metrics, and a shorter TTFT."""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from simnode.config import SimConfig
from simnode.prefix_cache import PrefixCache, block_hashes
from simnode.testing import SimnodeProcess, start_simnode
from simnode.tokenizer import chat_prompt_tokens, completion_prompt_tokens
from tests.simnode.conftest import NODE_ARGS

#: Blocks the small node's cache keeps (of 4 tokens each, ``SMALL_BLOCK``).
SMALL_CAPACITY = 16
SMALL_BLOCK = 4
#: Prefill pace of the node the TTFT test uses, in tokens per second.
PREFILL_RATE = 200


def _words(tag: str, n: int) -> str:
    """Return ``n`` one-token words no other test sends (``tag`` keeps them apart)."""
    return " ".join(f"pc_{tag}_{i}" for i in range(n))


def _counters(text: str, model: str) -> tuple[float, float]:
    def value(name: str) -> float:
        match = re.search(rf'^{name}{{model_name="{re.escape(model)}"}} (\S+)$', text, re.M)
        assert match, f"{name} missing from metrics"
        return float(match.group(1))

    return value("vllm:prefix_cache_queries_total"), value("vllm:prefix_cache_hits_total")


class _Meter:
    """Sends requests to one node and says what each did to its prefix cache counters."""

    def __init__(self, http: httpx.AsyncClient, model: str) -> None:
        self.http = http
        self.model = model

    async def counters(self) -> tuple[float, float]:
        return _counters((await self.http.get("/metrics")).text, self.model)

    async def send(self, path: str, body: dict[str, Any]) -> tuple[float, float]:
        """POST ``body`` (with the model); return the (queried, hit) tokens it added."""
        before = await self.counters()
        response = await self.http.post(path, json={"model": self.model, **body})
        assert response.status_code == 200, response.text
        after = await self.counters()
        return after[0] - before[0], after[1] - before[1]

    async def complete(self, prompt: str | list[int]) -> tuple[float, float]:
        return await self.send("/v1/completions", {"prompt": prompt, "max_tokens": 1})


@pytest.fixture
async def meter(client: httpx.AsyncClient, model: str) -> _Meter:
    """The shared node (block size 16, the default) behind a :class:`_Meter`."""
    return _Meter(client, model)


@pytest.fixture(scope="module")
def small_node() -> Iterator[SimnodeProcess]:
    """A node whose cache holds 16 blocks of 4 tokens, so eviction is cheap to reach."""
    with start_simnode(*NODE_ARGS, "--block-size", str(SMALL_BLOCK),
                       "--prefix-cache-blocks", str(SMALL_CAPACITY)) as started:
        yield started


@pytest.fixture(scope="module")
def uncached_node() -> Iterator[SimnodeProcess]:
    """A node with prefix caching off (``--prefix-cache-blocks 0``)."""
    with start_simnode(*NODE_ARGS, "--prefix-cache-blocks", "0") as started:
        yield started


@pytest.fixture(scope="module")
def prefill_node() -> Iterator[SimnodeProcess]:
    """A node whose prefill takes time: ``PREFILL_RATE`` tokens per second."""
    with start_simnode(*NODE_ARGS, "--prefill-tokens-per-second", str(PREFILL_RATE)) as started:
        yield started


async def _meter_of(node: SimnodeProcess, model: str) -> AsyncIterator[_Meter]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        yield _Meter(http, model)


@pytest.fixture
async def small(small_node: SimnodeProcess, model: str) -> AsyncIterator[_Meter]:
    async for meter in _meter_of(small_node, model):
        yield meter


@pytest.fixture
async def uncached(uncached_node: SimnodeProcess, model: str) -> AsyncIterator[_Meter]:
    async for meter in _meter_of(uncached_node, model):
        yield meter


async def test_metrics_have_vllms_prefix_cache_counters(
    client: httpx.AsyncClient, model: str
) -> None:
    text = (await client.get("/metrics")).text
    labels = f'{{model_name="{model}"}}'
    for name, help_text in [
        ("vllm:prefix_cache_queries",
         "Prefix cache queries, in terms of number of queried tokens."),
        ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
    ]:
        assert f"# HELP {name}_total {help_text}\n" in text
        assert f"# TYPE {name}_total counter\n" in text
        assert re.search(rf"^{name}_created{re.escape(labels)} \d+\.\d+$", text, re.M)
    # The counters come after every metric simnode had before, which are left as they were.
    assert text.index("vllm:request_success_total") < text.index("vllm:prefix_cache_queries")


async def test_a_repeated_prompt_hits_its_full_blocks(meter: _Meter) -> None:
    prompt = _words("repeat", 40)  # 41 tokens with BOS: 2 full blocks of 16
    tokens = completion_prompt_tokens(prompt)
    assert await meter.complete(prompt) == (tokens, 0)
    assert await meter.complete(prompt) == (tokens, 32)
    assert await meter.complete(prompt) == (tokens, 32)


async def test_a_whole_cached_prompt_still_computes_its_last_token(meter: _Meter) -> None:
    prompt = _words("exact", 31)  # 32 tokens with BOS: exactly 2 blocks
    assert completion_prompt_tokens(prompt) == 32
    await meter.complete(prompt)
    # As vLLM: at most prompt_tokens - 1 can hit, so only the first block does.
    assert await meter.complete(prompt) == (32, 16)


async def test_a_prompt_sharing_only_its_first_block_hits_only_that_block(meter: _Meter) -> None:
    first = _words("shared", 15)  # BOS + 15 words: the first block
    await meter.complete(f"{first} {_words('tail_a', 30)}")
    other = f"{first} {_words('tail_b', 30)}"
    assert await meter.complete(other) == (completion_prompt_tokens(other), 16)


async def test_a_different_prompt_misses(meter: _Meter) -> None:
    await meter.complete(_words("one", 40))
    other = _words("two", 40)
    assert await meter.complete(other) == (completion_prompt_tokens(other), 0)


async def test_blocks_chain_so_a_changed_first_block_misses_the_rest(meter: _Meter) -> None:
    ids = list(range(1000, 1048))  # token ids: 3 blocks
    await meter.complete(ids)
    # Blocks 2 and 3 are the same tokens, but after another first block.
    assert await meter.complete([999, *ids[1:]]) == (48, 0)
    assert await meter.complete(ids) == (48, 32)


async def test_every_generate_route_shares_the_chat_prompt_cache(meter: _Meter) -> None:
    text = _words("routes", 40)
    messages = [{"role": "user", "content": text}]
    tokens = chat_prompt_tokens(messages)  # 47: 2 full blocks
    hit = (tokens - 1) // 16 * 16
    assert await meter.send("/v1/chat/completions", {"messages": messages}) == (tokens, 0)
    assert await meter.send("/v1/responses", {"input": text}) == (tokens, hit)
    assert await meter.send("/v1/messages", {"messages": messages, "max_tokens": 4}) == (
        tokens, hit)
    stream = {"messages": messages, "stream": True}
    assert await meter.send("/v1/chat/completions", stream) == (tokens, hit)


async def test_the_least_recently_used_blocks_are_evicted(small: _Meter) -> None:
    a, b, c = ([1000 * k + i for i in range(33)] for k in (1, 2, 3))  # 8 full blocks each
    assert await small.complete(a) == (33, 0)
    assert await small.complete(b) == (33, 0)  # the cache is full: a and b
    assert await small.complete(a) == (33, 32)  # a is now the most recently used
    assert await small.complete(c) == (33, 0)  # evicts b, not a
    assert await small.complete(a) == (33, 32)
    assert await small.complete(b) == (33, 0)


async def test_a_prompt_longer_than_the_cache_keeps_its_head(small: _Meter) -> None:
    long = list(range(5000, 5081))  # 20 full blocks, the cache holds 16
    await small.complete(long)
    # Refreshed last block first, so the tail went and the first 16 blocks stayed.
    assert await small.complete(long) == (81, 16 * SMALL_BLOCK)


async def test_zero_blocks_turns_the_cache_off(uncached: _Meter) -> None:
    prompt = _words("off", 40)
    assert await uncached.complete(prompt) == (0, 0)
    assert await uncached.complete(prompt) == (0, 0)
    assert await uncached.counters() == (0, 0)


async def _first_token_seconds(http: httpx.AsyncClient, body: dict[str, Any]) -> float:
    """Return the seconds from sending a streamed completion to its first chunk."""
    started = time.monotonic()
    first = None
    async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as reply:
        assert reply.status_code == 200
        async for _ in reply.aiter_bytes():
            if first is None:
                first = time.monotonic() - started
    assert first is not None
    return first


async def test_a_hit_shortens_the_time_to_first_token(
    prefill_node: SimnodeProcess, model: str
) -> None:
    prompt = _words("ttft", 96)  # 97 tokens: a hit leaves 1 to prefill, a miss 97
    body = {"model": model, "prompt": prompt, "max_tokens": 2}
    async with httpx.AsyncClient(base_url=prefill_node.url, timeout=10) as http:
        miss = await _first_token_seconds(http, body)
        hit = await _first_token_seconds(http, body)
        queries, hits = _counters((await http.get("/metrics")).text, model)
    assert (queries, hits) == (2 * 97, 96)
    assert miss >= 97 / PREFILL_RATE * 0.95
    assert hit < miss / 2


def test_the_cache_hits_by_whole_blocks_up_to_the_last_token() -> None:
    cache = PrefixCache(capacity=8, block_size=4)
    assert cache.query(list(range(10))) == 0
    assert cache.query(list(range(10))) == 8
    assert cache.query(list(range(8))) == 4  # 8 tokens: 7 may hit, so one block
    assert cache.query(list(range(3))) == 0  # no full block
    assert (cache.queries_total, cache.hits_total) == (31, 12)
    assert len(cache) == 2


def test_block_hashes_chain_the_prefix() -> None:
    one = block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    two = block_hashes([0, 2, 3, 4, 5, 6, 7, 8], 4)
    assert len(one) == len(two) == 2
    assert one[0] != two[0] and one[1] != two[1]
    assert block_hashes([1, 2, 3, 4, 9, 9, 9, 9], 4)[0] == one[0]


def test_defaults_match_vllm_and_leave_prefill_instant() -> None:
    config = SimConfig(model="m")
    assert (config.block_size, config.prefix_cache_blocks) == (16, 8192)
    assert config.prefill_tokens_per_second == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"block_size": 0},
        {"block_size": 5000},
        {"prefix_cache_blocks": -1},
        {"prefill_tokens_per_second": -1.0},
        {"prefill_tokens_per_second": math.inf},
        {"prefill_tokens_per_second": math.nan},
    ],
)
def test_bad_prefix_cache_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SimConfig(model="m", **bad)


def test_the_command_line_refuses_a_bad_block_size(node_args: tuple[str, ...]) -> None:
    node = start_simnode(*node_args, "--block-size", "0", wait=False)
    assert node.process.wait(timeout=10) == 2


def test_the_command_line_passes_the_settings_on() -> None:
    import argparse

    from simnode.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--port", "9", "--block-size", "32",
                              "--prefix-cache-blocks", "0", "--prefill-tokens-per-second", "5e3"])
    config = config_from_args(args)
    assert (config.block_size, config.prefix_cache_blocks) == (32, 0)
    assert config.prefill_tokens_per_second == 5000.0
