"""Fixtures: one shared simnode process of each kind and clients for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from simnode.testing import SimnodeProcess, start_simnode

#: Served model name of every node the simnode tests start.
MODEL = "sim-model"
#: Small context window so the context-length errors are cheap to reach.
MAX_MODEL_LEN = 128
#: Small batch so the waiting-requests metric is cheap to reach.
MAX_NUM_SEQS = 2
#: Options every node in these tests starts with.
NODE_ARGS = (
    "--model",
    MODEL,
    "--max-model-len",
    str(MAX_MODEL_LEN),
    "--max-num-seqs",
    str(MAX_NUM_SEQS),
)
#: Served model names of the embed and rerank nodes.
EMBED_MODEL = "sim-embed"
RERANK_MODEL = "sim-rerank"
#: Options of the embed and rerank nodes (the context window as the generate node's).
EMBED_ARGS = ("--model", EMBED_MODEL, "--kind", "embed", "--max-model-len", str(MAX_MODEL_LEN))
RERANK_ARGS = ("--model", RERANK_MODEL, "--kind", "rerank", "--max-model-len",
               str(MAX_MODEL_LEN))
#: Fault switches of a fresh node.
DEFAULT_FAULTS = {
    "fail_after": None,
    "fail_status": None,
    "hang": False,
    "tokens_per_second": 0.0,
    "ttft": 0.0,
    "health_status": 200,
}


@pytest.fixture(scope="session")
def node() -> Iterator[SimnodeProcess]:
    """One node shared by the session; the ``client`` fixture resets its faults."""
    with start_simnode(*NODE_ARGS) as started:
        yield started


@pytest.fixture(scope="session")
def embed_node() -> Iterator[SimnodeProcess]:
    """One embed node (384 dimensions) shared by the session."""
    with start_simnode(*EMBED_ARGS) as started:
        yield started


@pytest.fixture(scope="session")
def rerank_node() -> Iterator[SimnodeProcess]:
    """One rerank node (a cross-encoder) shared by the session."""
    with start_simnode(*RERANK_ARGS) as started:
        yield started


async def _client(node: SimnodeProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        yield http
        reset = await http.post("/sim/faults", json=DEFAULT_FAULTS)
        assert reset.status_code == 200


@pytest.fixture
async def client(node: SimnodeProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the shared node; puts the node's faults back afterwards."""
    async for http in _client(node):
        yield http


@pytest.fixture
async def embed_client(embed_node: SimnodeProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the embed node; puts its faults back afterwards."""
    async for http in _client(embed_node):
        yield http


@pytest.fixture
async def rerank_client(rerank_node: SimnodeProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the rerank node; puts its faults back afterwards."""
    async for http in _client(rerank_node):
        yield http


@pytest.fixture
async def openai_client(node: SimnodeProcess, client: httpx.AsyncClient) -> AsyncIterator[Any]:
    """The official OpenAI SDK pointed at the shared node, without retries so faults show."""
    import openai

    sdk = openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
def node_url(node: SimnodeProcess) -> str:
    """Base URL of the shared node."""
    return node.url


@pytest.fixture
def model() -> str:
    """The served model name of the nodes these tests start."""
    return MODEL


@pytest.fixture
def max_model_len() -> int:
    """The context window of the nodes these tests start."""
    return MAX_MODEL_LEN


@pytest.fixture
def node_args() -> tuple[str, ...]:
    """The options the shared node started with, for tests that start their own."""
    return NODE_ARGS
