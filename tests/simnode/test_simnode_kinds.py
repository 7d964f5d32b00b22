"""``--kind``: a node serves one model of one kind, and only that kind's routes."""

from __future__ import annotations

import argparse

import httpx
import pytest

from simnode.cli import add_arguments, config_from_args
from simnode.config import KINDS, SimConfig
from simnode.routes import MODEL_ROUTES
from simnode.testing import SimnodeProcess, start_simnode

ALL_MODEL_ROUTES = sorted({path for paths in MODEL_ROUTES.values() for path in paths})
#: A body every model route accepts, so a registered route answers 200.
BODIES = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"model": "", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"input": "hi"},
    "/score": {"text_1": "hi", "text_2": "there"},
    "/v1/score": {"text_1": "hi", "text_2": "there"},
    "/rerank": {"query": "hi", "documents": ["there"]},
    "/v1/rerank": {"query": "hi", "documents": ["there"]},
    "/v2/rerank": {"query": "hi", "documents": ["there"]},
}


def _nodes(node: SimnodeProcess, embed_node: SimnodeProcess,
           rerank_node: SimnodeProcess) -> dict[str, SimnodeProcess]:
    return {"generate": node, "embed": embed_node, "rerank": rerank_node}


def _model(kind: str) -> str:
    return {"generate": "sim-model", "embed": "sim-embed", "rerank": "sim-rerank"}[kind]


def test_kind_defaults_to_generate_and_is_validated() -> None:
    assert SimConfig(model="m").kind == "generate"
    assert SimConfig(model="m").embedding_dim == 384
    with pytest.raises(ValueError, match="kind must be one of generate, embed, rerank"):
        SimConfig(model="m", kind="classify")
    with pytest.raises(ValueError, match="embedding_dim"):
        SimConfig(model="m", kind="embed", embedding_dim=0)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--model", "m", "--port", "9", "--kind",
                                                 "embed", "--embedding-dim", "64"]))
    assert (config.kind, config.embedding_dim) == ("embed", 64)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--port", "9", "--kind", "classify"])
    assert KINDS == ("generate", "embed", "rerank")


def test_a_bad_kind_stops_the_process(node_args: tuple[str, ...]) -> None:
    node = start_simnode(*node_args, "--embedding-dim", "0", wait=False)
    assert node.process.wait(timeout=10) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_serves_its_routes_and_404s_the_others(
    node: SimnodeProcess, embed_node: SimnodeProcess, rerank_node: SimnodeProcess, kind: str
) -> None:
    url = _nodes(node, embed_node, rerank_node)[kind].url
    for path in ALL_MODEL_ROUTES:
        body = dict(BODIES[path])
        if path == "/v1/messages":
            body["model"] = _model(kind)
        response = httpx.post(url + path, json=body, timeout=10)
        if path in MODEL_ROUTES[kind]:
            assert response.status_code == 200, (kind, path, response.text)
        else:
            assert (response.status_code, response.json()) == (404, {"detail": "Not Found"}), \
                (kind, path)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_the_common_routes(
    node: SimnodeProcess, embed_node: SimnodeProcess, rerank_node: SimnodeProcess, kind: str
) -> None:
    url = _nodes(node, embed_node, rerank_node)[kind].url
    assert httpx.get(url + "/health").status_code == 200
    [card] = httpx.get(url + "/v1/models").json()["data"]
    assert card["id"] == _model(kind)
    tokens = httpx.post(url + "/tokenize", json={"prompt": "Hello, world!"}).json()
    assert tokens["count"] == 5
    assert httpx.post(url + "/detokenize", json={"tokens": tokens["tokens"][:1]}).is_success
    assert "vllm:prompt_tokens_total" in httpx.get(url + "/metrics").text
    assert httpx.get(url + "/sim/faults").json()["hang"] is False
