"""Adversarial probes of the newer routes: embeddings, responses, messages, rerank, score,
tokenize and detokenize.

The rules every probe checks:

- nothing a client sends gets a 5xx (but the deliberate 503 of a cold model) or hangs;
- a refusal is a 4xx in the route's own shape: OpenAI's ``{"error": {message, type, param,
  code}}``, or Anthropic's ``{"type": "error", "error": {type, message}}`` on ``/v1/messages``;
- a refusal charges nothing, leaves no reservation open, and the books balance;
- an answered call is charged exactly what the node's usage says.

Most probes share one portal (its nodes are never made to fail); a probe that makes a node
fail gets a portal of its own. Every probe uses a key of its own, so "charged nothing" is
exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.billing.money import parse_usd, token_cost
from tests.support.inprocess import InProcessPortal, NodeDouble, open_portal

IN, OUT = "0.50", "1.50"  # USD per 1M tokens, for every model here
CREDIT = "1"

#: The routes under test, and a model of the right kind for each.
MODEL_FOR = {"/v1/embeddings": "emb", "/v1/rerank": "rr", "/v1/score": "rr",
             "/v1/responses": "gen", "/v1/messages": "gen", "/tokenize": "gen",
             "/detokenize": "gen"}
ROUTES = tuple(MODEL_FOR)
#: The routes that are charged (and may wait for a cold model).
METERED = ROUTES[:5]
#: A cold model (a pending node, nothing running) of the right kind for each metered route.
COLD_FOR = {"/v1/embeddings": "cold-embed", "/v1/rerank": "cold-embed",
            "/v1/score": "cold-embed", "/v1/responses": "cold", "/v1/messages": "cold",
            "/tokenize": "cold", "/detokenize": "cold"}


def good_body(path: str, model: str | None = None) -> dict[str, Any]:
    """A body the route answers with 200 (given a model of the right kind)."""
    model = model or MODEL_FOR[path]
    return {
        "/v1/embeddings": {"model": model, "input": "a cat"},
        "/v1/rerank": {"model": model, "query": "a cat", "documents": ["a cat", "a dog"]},
        "/v1/score": {"model": model, "text_1": "a cat", "text_2": ["a cat", "a dog"]},
        "/v1/responses": {"model": model, "input": "Say hello.", "max_output_tokens": 4},
        "/v1/messages": {"model": model, "max_tokens": 4,
                         "messages": [{"role": "user", "content": "Say hello."}]},
        "/tokenize": {"model": model, "prompt": "a cat"},
        "/detokenize": {"model": model, "tokens": [1, 100, 101]},
    }[path]


# -- the shared portal ------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def probe_portal(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
                       sqlite_template: Path) -> AsyncIterator[InProcessPortal]:
    """One portal for the module: a generate, an embed, a rerank and a small embed model
    with a node each; two cold models (a pending node each) and a disabled one. Waits for a
    cold model are cut to 1 s, so a huge X-Portal-Wait cannot hold a probe long."""
    from edge.db.models import LLM

    root = tmp_path_factory.mktemp("probes")
    nodes = [await NodeDouble("sim-gen", reply_tokens=4).start(),
             await NodeDouble("sim-embed", kind="embed").start(),
             await NodeDouble("sim-rerank", kind="rerank").start(),
             await NodeDouble("sim-small", kind="embed", max_model_len=64).start()]
    try:
        async with open_portal(root, redis_url, template=sqlite_template,
                               max_wait=1) as portal:
            for (name, kind, context), node in zip(
                    [("gen", "generate", 8192), ("emb", "embed", 8192),
                     ("rr", "rerank", 8192), ("small", "embed", 64)], nodes, strict=True):
                await portal.add_model(name, served_name=node.model, kind=kind,
                                       input_price=IN, output_price=OUT, context=context)
                await portal.add_node(name, node)
            for name, kind in (("cold", "generate"), ("cold-embed", "embed")):
                await portal.add_model(name, kind=kind, input_price=IN, output_price=OUT)
                await portal.add_node(name, "http://127.0.0.1:9", state="pending")
            await portal.add_model("off", kind="embed", input_price=IN, output_price=OUT)
            await LLM.filter(name="off").update(enabled=False)
            await portal.ctx.registry.reload()
            yield portal
    finally:
        for node in reversed(nodes):
            await node.close()


# -- helpers ----------------------------------------------------------------------------------
async def send(portal: InProcessPortal, path: str, body: Any, headers: dict[str, Any],
               method: str = "POST") -> httpx.Response:
    """``body``: a dict (sent as JSON), bytes (sent as they are) or None (no body)."""
    options: dict[str, Any] = {}
    if isinstance(body, bytes):
        options["content"] = body
        headers = {"content-type": "application/json", **headers}
    elif body is not None:
        options["json"] = body
    return await asyncio.wait_for(
        portal.client.request(method, path, headers=headers, **options), 20)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


#: Anthropic's error type for each status (docs/api.md), other 4xx: invalid_request_error.
_ANTHROPIC = {401: "authentication_error", 402: "billing_error", 403: "permission_error",
              404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
              503: "overloaded_error", 504: "timeout_error"}


def assert_shape(response: httpx.Response, path: str) -> dict[str, Any]:
    """The error body is the route's: Anthropic's on /v1/messages, OpenAI's elsewhere."""
    seen = f"{response.status_code} {response.headers.get('content-type')}: " \
           f"{response.text[:300]}"
    assert response.headers.get("content-type", "").startswith("application/json"), seen
    if response.request.method == "HEAD":
        return {}
    body = response.json()
    assert isinstance(body, dict), seen
    if path.startswith("/v1/messages"):
        assert body.get("type") == "error", seen
        error = body.get("error")
        assert isinstance(error, dict), seen
        assert isinstance(error.get("message"), str) and error["message"], seen
        expected = _ANTHROPIC.get(response.status_code, "invalid_request_error")
        assert error.get("type") == expected, seen
    else:
        error = body.get("error")
        assert isinstance(error, dict), seen
        assert set(error) == {"message", "type", "param", "code"}, seen
        assert isinstance(error["message"], str) and error["message"], seen
        assert isinstance(error["type"], str), seen
    return body


async def assert_charged_nothing(portal: InProcessPortal, key_id: int,
                                 credit: str = CREDIT) -> None:
    """No usage row costs anything, no reservation is open, the books balance and hold
    the key's whole credit."""
    await portal.wait_settled()
    rows = await portal.usage(key_id)
    assert [row["cost"] for row in rows if row["cost"]] == [], rows
    assert await portal.assert_books_balance(key_id) == parse_usd(credit)


async def assert_refused(portal: InProcessPortal, key_id: int, response: httpx.Response,
                         path: str, status: int | None = None) -> dict[str, Any]:
    """A 4xx (``status`` if given) in the route's shape that charged nothing."""
    assert 400 <= response.status_code < 500, \
        f"{response.status_code}: {response.text[:400]}"
    if status is not None:
        assert response.status_code == status, response.text[:400]
    body = assert_shape(response, path)
    await assert_charged_nothing(portal, key_id)
    return body


def cost(prompt: int, completion: int = 0) -> int:
    return token_cost(prompt, completion, parse_usd(IN), parse_usd(OUT))


def node_counts(path: str, answer: dict[str, Any]) -> tuple[int, int]:
    """``(input, output)`` tokens as the node's usage in the answer says them."""
    usage = answer["usage"]
    if path in ("/v1/responses", "/v1/messages"):
        return usage["input_tokens"], usage["output_tokens"]
    if path == "/v1/rerank":
        return usage["total_tokens"], 0
    return usage["prompt_tokens"], 0


# -- bodies each route must refuse ------------------------------------------------------------
def _p(path: str, body: Any, name: str) -> Any:
    return pytest.param(path, body, id=f"{path.strip('/').replace('/', '.')}-{name}")


E, RR, S, R, M, T, D = ROUTES
BAD_BODIES = [
    # /v1/embeddings
    _p(E, {"model": "emb"}, "no-input"),
    _p(E, {"model": "emb", "input": None}, "input-null"),
    _p(E, {"model": "emb", "input": 5}, "input-number"),
    _p(E, {"model": "emb", "input": {"text": "a"}}, "input-object"),
    _p(E, {"model": "emb", "input": ""}, "input-empty-string"),
    _p(E, {"model": "emb", "input": []}, "input-empty-list"),
    _p(E, {"model": "emb", "input": [""]}, "input-empty-item"),
    _p(E, {"model": "emb", "input": ["a", 1]}, "input-mixed-str-int"),
    _p(E, {"model": "emb", "input": [1, "a"]}, "input-mixed-int-str"),
    _p(E, {"model": "emb", "input": [[1], "a"]}, "input-mixed-list-str"),
    _p(E, {"model": "emb", "input": [[]]}, "input-empty-ids"),
    _p(E, {"model": "emb", "input": [[[1]]]}, "input-nested-ids"),
    _p(E, {"model": "emb", "input": [-1]}, "id-negative"),
    _p(E, {"model": "emb", "input": [True]}, "id-bool"),
    _p(E, {"model": "emb", "input": [1.5]}, "id-float"),
    _p(E, {"model": "emb", "input": [[1], [-2]]}, "id-negative-in-batch"),
    _p(E, {"model": "emb", "input": [[10**30]]}, "id-beyond-vocab"),
    _p(E, {"model": "emb", "input": [{"role": "user", "content": "hi"}]}, "input-messages"),
    _p(E, {"model": "emb", "input": ["x"] * 10_000}, "input-10000-strings"),
    _p(E, {"model": "emb", "input": [[5]] * 2049}, "input-2049-id-lists"),
    _p(E, {"model": "emb", "input": "word " * 800_000}, "input-4MB-beyond-context"),
    _p(E, {"model": "emb", "input": "x", "dimensions": 0}, "dimensions-0"),
    _p(E, {"model": "emb", "input": "x", "dimensions": -3}, "dimensions-negative"),
    _p(E, {"model": "emb", "input": "x", "dimensions": "8"}, "dimensions-string"),
    _p(E, {"model": "emb", "input": "x", "dimensions": 1.5}, "dimensions-float"),
    _p(E, {"model": "emb", "input": "x", "dimensions": True}, "dimensions-bool"),
    _p(E, {"model": "emb", "input": "x", "dimensions": 100_000}, "dimensions-huge"),
    _p(E, {"model": "emb", "input": "x", "dimensions": 10**30}, "dimensions-10e30"),
    _p(E, {"model": "emb", "input": "x", "encoding_format": "FLOAT"}, "encoding-case"),
    _p(E, {"model": "emb", "input": "x", "encoding_format": "bytes"}, "encoding-bytes"),
    _p(E, {"model": "emb", "input": "x", "encoding_format": 5}, "encoding-number"),
    _p(E, {"model": "emb", "input": "x", "encoding_format": ""}, "encoding-empty"),
    _p(E, {"model": "emb", "input": "x", "embed_dtype": "bogus"}, "dtype-bogus"),
    _p(E, {"model": "emb", "input": "x", "truncate_prompt_tokens": 0}, "truncate-0"),
    _p(E, {"model": "emb", "input": "x", "truncate_prompt_tokens": -2}, "truncate-neg"),
    _p(E, {"model": "emb", "input": "x", "truncate_prompt_tokens": "5"}, "truncate-str"),
    _p(E, {"model": "emb", "input": "x", "messages": 5}, "messages-number"),
    # /v1/rerank
    _p(RR, {"model": "rr", "documents": ["a"]}, "no-query"),
    _p(RR, {"model": "rr", "query": 5, "documents": ["a"]}, "query-number"),
    _p(RR, {"model": "rr", "query": ["q"], "documents": ["a"]}, "query-list"),
    _p(RR, {"model": "rr", "query": {"title": "q"}, "documents": ["a"]}, "query-obj-no-text"),
    _p(RR, {"model": "rr", "query": {"text": "q"}, "documents": ["a"]}, "query-cohere-obj"),
    _p(RR, {"model": "rr", "query": "q"}, "no-documents"),
    _p(RR, {"model": "rr", "query": "q", "documents": []}, "documents-empty"),
    _p(RR, {"model": "rr", "query": "q", "documents": "a"}, "documents-string"),
    _p(RR, {"model": "rr", "query": "q", "documents": {"a": 1}}, "documents-object"),
    _p(RR, {"model": "rr", "query": "q", "documents": [5]}, "document-number"),
    _p(RR, {"model": "rr", "query": "q", "documents": [None]}, "document-null"),
    _p(RR, {"model": "rr", "query": "q", "documents": [{"title": "x"}]}, "document-no-text"),
    _p(RR, {"model": "rr", "query": "q", "documents": [{"text": 5}]}, "document-text-number"),
    _p(RR, {"model": "rr", "query": "q", "documents": [{"text": "a"}]}, "document-cohere"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["d"] * 2049}, "documents-2049"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["d"] * 10_000}, "documents-10000"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "top_n": -1}, "top_n-negative"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "top_n": "2"}, "top_n-string"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "top_n": 1.5}, "top_n-float"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "top_n": True}, "top_n-bool"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "return_documents": "yes"},
       "return_documents-string"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "max_tokens_per_doc": -1},
       "max_tokens_per_doc-negative"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a"], "max_tokens_per_query": 10**9},
       "max_tokens_per_query-huge"),
    # /v1/score
    _p(S, {"model": "rr"}, "no-texts"),
    _p(S, {"model": "rr", "text_1": "a"}, "no-text_2"),
    _p(S, {"model": "rr", "text_1": ["a", "b"], "text_2": ["c"]}, "lengths-2-1"),
    _p(S, {"model": "rr", "text_1": ["a", "b", "c"], "text_2": ["x", "y"]}, "lengths-3-2"),
    _p(S, {"model": "rr", "queries": ["a", "b"], "documents": ["c", "d", "e"]},
       "queries-lengths-2-3"),
    _p(S, {"model": "rr", "text_1": [], "text_2": ["a"]}, "text_1-empty"),
    _p(S, {"model": "rr", "text_1": "a", "text_2": []}, "text_2-empty"),
    _p(S, {"model": "rr", "text_1": 5, "text_2": "a"}, "text_1-number"),
    _p(S, {"model": "rr", "text_1": "a", "text_2": [5]}, "text_2-number-item"),
    _p(S, {"model": "rr", "text_1": "a", "text_2": [[["a"]]]}, "text_2-nested"),
    _p(S, {"model": "rr", "text_1": {"title": 1}, "text_2": "a"}, "text_1-obj-no-text"),
    _p(S, {"model": "rr", "text_1": {"text": "a"}, "text_2": "b"}, "text_1-cohere-obj"),
    _p(S, {"model": "rr", "text_1": "q", "text_2": ["d"] * 2049}, "text_2-2049"),
    # /v1/responses
    _p(R, {"model": "gen"}, "no-input"),
    _p(R, {"model": "gen", "input": None}, "input-null"),
    _p(R, {"model": "gen", "input": ""}, "input-empty"),
    _p(R, {"model": "gen", "input": 5}, "input-number"),
    _p(R, {"model": "gen", "input": {"role": "user", "content": "x"}}, "input-object"),
    _p(R, {"model": "gen", "input": []}, "input-empty-list"),
    _p(R, {"model": "gen", "input": [5]}, "item-number"),
    _p(R, {"model": "gen", "input": [None]}, "item-null"),
    _p(R, {"model": "gen", "input": [["x"]]}, "item-list"),
    _p(R, {"model": "gen", "input": ["a"]}, "item-string"),
    _p(R, {"model": "gen", "input": [{"role": "user"}]}, "item-no-content"),
    _p(R, {"model": "gen", "input": [{"role": "user", "content": 5}]}, "item-content-number"),
    _p(R, {"model": "gen", "input": [{"role": "user", "content": [1]}]}, "item-part-number"),
    _p(R, {"model": "gen", "input": [{"role": "user", "content": "x"}] * 20_000},
       "input-20000-items-beyond-context"),
    _p(R, {"model": "gen", "input": "x", "instructions": 5}, "instructions-number"),
    _p(R, {"model": "gen", "input": "x", "instructions": ["a"]}, "instructions-list"),
    _p(R, {"model": "gen", "input": "x", "previous_response_id": ""}, "previous-empty"),
    _p(R, {"model": "gen", "input": "x", "previous_response_id": 5}, "previous-number"),
    _p(R, {"model": "gen", "input": "x", "stream": "true"}, "stream-string"),
    _p(R, {"model": "gen", "input": "x", "stream": 1}, "stream-number"),
    _p(R, {"model": "gen", "input": "x", "temperature": "1"}, "temperature-string"),
    _p(R, {"model": "gen", "input": "x", "top_p": []}, "top_p-list"),
    _p(R, {"model": "gen", "input": "x", "max_output_tokens": 0}, "max_output-0"),
    _p(R, {"model": "gen", "input": "x", "max_output_tokens": -1}, "max_output-negative"),
    _p(R, {"model": "gen", "input": "x", "max_output_tokens": "5"}, "max_output-string"),
    _p(R, {"model": "gen", "input": "x", "max_output_tokens": 1.5}, "max_output-float"),
    _p(R, {"model": "gen", "input": "x", "max_output_tokens": 10**9}, "max_output-huge"),
    _p(R, {"model": "gen", "input": "x", "max_output_tokens": 10**9, "stream": True},
       "max_output-huge-stream"),
    _p(R, {"model": "gen", "input": ["a"], "stream": True}, "item-string-stream"),
    _p(R, {"model": "gen", "input": "x", "background": True}, "background"),
    _p(R, {"model": "gen", "input": "x", "tool_choice": "required"}, "tool_choice-no-tools"),
    _p(R, {"model": "gen", "input": "x", "prompt": {"id": "p"}}, "prompt-template"),
    _p(R, {"model": "gen", "input": "x", "presence_penalty": "1"}, "presence-string"),
    # /v1/messages
    _p(M, {"model": "gen", "messages": [{"role": "user", "content": "x"}]}, "no-max_tokens"),
    _p(M, {"model": "gen", "max_tokens": None, "messages": [{"role": "user", "content": "x"}]},
       "max_tokens-null"),
    _p(M, {"model": "gen", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
       "max_tokens-0"),
    _p(M, {"model": "gen", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]},
       "max_tokens-negative"),
    _p(M, {"model": "gen", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]},
       "max_tokens-string"),
    _p(M, {"model": "gen", "max_tokens": 5.5, "messages": [{"role": "user", "content": "x"}]},
       "max_tokens-float"),
    _p(M, {"model": "gen", "max_tokens": True, "messages": [{"role": "user", "content": "x"}]},
       "max_tokens-bool"),
    _p(M, {"model": "gen", "max_tokens": 10**9,
           "messages": [{"role": "user", "content": "x"}]}, "max_tokens-huge"),
    _p(M, {"model": "gen", "max_tokens": 5}, "no-messages"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": []}, "messages-empty"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": {"role": "user"}}, "messages-object"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": "hi"}, "messages-string"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [5]}, "message-number"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"content": "x"}]}, "message-no-role"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": 5, "content": "x"}]},
       "role-number"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
       "role-tool"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "user"}]}, "no-content"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "user", "content": None}]},
       "content-null"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]},
       "content-number"),
    _p(M, {"model": "gen", "max_tokens": 5,
           "messages": [{"role": "user", "content": {"type": "text", "text": "x"}}]},
       "content-object"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "user", "content": [1]}]},
       "block-number"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "user", "content": [{}]}]},
       "block-empty"),
    _p(M, {"model": "gen", "max_tokens": 5,
           "messages": [{"role": "user", "content": [{"type": "bogus"}]}]}, "block-bogus"),
    _p(M, {"model": "gen", "max_tokens": 5, "stream": True,
           "messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
       "block-bogus-stream"),
    _p(M, {"model": "gen", "max_tokens": 5, "system": 5,
           "messages": [{"role": "user", "content": "x"}]}, "system-number"),
    _p(M, {"model": "gen", "max_tokens": 5, "system": {"type": "text", "text": "x"},
           "messages": [{"role": "user", "content": "x"}]}, "system-object"),
    _p(M, {"model": "gen", "max_tokens": 5, "system": [1],
           "messages": [{"role": "user", "content": "x"}]}, "system-block-number"),
    _p(M, {"model": "gen", "max_tokens": 5, "stream": "yes",
           "messages": [{"role": "user", "content": "x"}]}, "stream-string"),
    _p(M, {"model": "gen", "max_tokens": 5, "temperature": "hot",
           "messages": [{"role": "user", "content": "x"}]}, "temperature-string"),
    _p(M, {"model": "gen", "max_tokens": 5, "top_k": "5",
           "messages": [{"role": "user", "content": "x"}]}, "top_k-string"),
    _p(M, {"model": "gen", "max_tokens": 5, "stop_sequences": "x",
           "messages": [{"role": "user", "content": "x"}]}, "stop_sequences-string"),
    _p(M, {"model": "gen", "max_tokens": 3,
           "messages": [{"role": "user", "content": "x"}] * 20_000},
       "messages-20000-beyond-context"),
    # /tokenize
    _p(T, {"model": "gen"}, "no-prompt"),
    _p(T, {"model": "gen", "prompt": 5}, "prompt-number"),
    _p(T, {"model": "gen", "prompt": None}, "prompt-null"),
    _p(T, {"model": "gen", "prompt": ["a"]}, "prompt-list"),
    _p(T, {"model": "gen", "messages": {"role": "user"}}, "messages-object"),
    _p(T, {"model": "gen", "messages": []}, "messages-empty"),
    _p(T, {"model": "gen", "messages": ["x"]}, "message-string"),
    _p(T, {"model": "gen", "messages": "hi"}, "messages-string"),
    _p(T, {"model": "gen", "messages": [{"role": "user", "content": {"a": 1}}]},
       "content-object"),
    _p(T, {"model": "gen", "messages": [{"role": 1, "content": 5}]}, "content-number"),
    _p(T, {"model": "gen", "messages": None, "prompt": "x"}, "messages-null-with-prompt"),
    _p(T, {"model": "gen", "prompt": "x", "add_special_tokens": "no"}, "special-string"),
    # /detokenize
    _p(D, {"model": "gen"}, "no-tokens"),
    _p(D, {"model": "gen", "tokens": "abc"}, "tokens-string"),
    _p(D, {"model": "gen", "tokens": {"0": 1}}, "tokens-object"),
    _p(D, {"model": "gen", "tokens": [-1]}, "id-negative"),
    _p(D, {"model": "gen", "tokens": [True]}, "id-bool"),
    _p(D, {"model": "gen", "tokens": [1.5]}, "id-float"),
    _p(D, {"model": "gen", "tokens": ["1"]}, "id-string"),
    _p(D, {"model": "gen", "tokens": [[1]]}, "id-list"),
    _p(D, {"model": "gen", "tokens": [None]}, "id-null"),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
async def test_a_bad_body_is_refused_in_the_routes_shape_for_nothing(
        probe_portal: InProcessPortal, path: str, body: dict[str, Any]) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, body, auth(key))
    await assert_refused(portal, key_id, response, path)


# -- what every route must refuse -------------------------------------------------------------
def _deep(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


#: ``(name, raw body)``: ``MODEL`` is replaced by a model of the route's kind.
COMMON_RAW = [
    ("empty", b""),
    ("truncated", b"{"),
    ("null", b"null"),
    ("list", b"[]"),
    ("string", b'"model"'),
    ("nan-body", b"NaN"),
    ("nan-field", b'{"model":"MODEL","temperature":NaN}'),
    ("infinity-field", b'{"model":"MODEL","x":-Infinity}'),
    ("float-overflow", b'{"model":"MODEL","x":1e999}'),
    ("int-5000-digits", b'{"model":"MODEL","x":' + b"9" * 5000 + b"}"),
    ("lone-surrogate", b'{"model":"MODEL","x":"\\ud800"}'),
    ("low-surrogate", b'{"model":"MODEL","x":"\\udc00x"}'),
    ("invalid-utf8", b'{"model":"MODEL","x":"\xff\xfe"}'),
    ("utf8-surrogate-bytes", b'{"model":"MODEL","x":"\xed\xa0\x80"}'),
    ("utf16-body", '{"model":"MODEL"}'.encode("utf-16")),
    ("deep-5000", ('{"model":"MODEL","x":' + _deep(5000) + "}").encode()),
    ("deep-100000", ('{"model":"MODEL","x":' + _deep(100_000) + "}").encode()),
    ("model-missing", b'{"x":1}'),
    ("model-null", b'{"model":null}'),
    ("model-number", b'{"model":5}'),
    ("model-empty", b'{"model":""}'),
    ("model-list", b'{"model":["MODEL"]}'),
    ("model-unknown", b'{"model":"no-such-model"}'),
    ("model-disabled", b'{"model":"off"}'),
]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(("name", "raw"), COMMON_RAW, ids=[n for n, _ in COMMON_RAW])
async def test_garbage_is_refused_on_every_route(probe_portal: InProcessPortal, path: str,
                                                 name: str, raw: bytes) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    raw = raw.replace(b"MODEL", MODEL_FOR[path].encode())
    if name.startswith("model-") and raw != b'{"x":1}':  # the rest of a good body
        body = {k: v for k, v in good_body(path).items() if k != "model"}
        raw = raw[:-1] + b"," + httpx.Request("POST", "/", json=body).content[1:]
    response = await send(portal, path, raw, auth(key))
    expected = 404 if name in ("model-unknown", "model-disabled") else 400
    await assert_refused(portal, key_id, response, path, status=expected)


WRONG_KIND = [(E, "gen"), (E, "rr"), (RR, "gen"), (S, "gen"), (R, "emb"), (R, "rr"),
              (M, "emb"), (M, "rr")]


@pytest.mark.parametrize(("path", "model"), WRONG_KIND,
                         ids=[f"{p.strip('/')}-{m}" for p, m in WRONG_KIND])
async def test_a_model_of_another_kind_is_refused(probe_portal: InProcessPortal, path: str,
                                                  model: str) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    for stream in (False, True) if path in (R, M) else (False,):
        body = {**good_body(path, model), **({"stream": True} if stream else {})}
        response = await send(portal, path, body, auth(key))
        answer = await assert_refused(portal, key_id, response, path, status=400)
        if path != M:
            assert answer["error"]["code"] == "model_kind_mismatch"


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
async def test_other_methods_are_405_in_the_routes_shape(probe_portal: InProcessPortal,
                                                         path: str, method: str) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, None, auth(key), method=method)
    await assert_refused(portal, key_id, response, path, status=405)


@pytest.mark.parametrize("path", ROUTES)
async def test_a_form_body_is_refused(probe_portal: InProcessPortal, path: str) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await portal.client.post(
        path, content=f"model={MODEL_FOR[path]}&input=x".encode(),
        headers={**auth(key), "content-type": "application/x-www-form-urlencoded"})
    await assert_refused(portal, key_id, response, path, status=400)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("case", ["bad-body", "unknown-model", "no-key"])
async def test_an_api_route_never_answers_an_html_page(probe_portal: InProcessPortal,
                                                       path: str, case: str) -> None:
    """A client whose Accept names text/html (a browser, some HTTP libraries' defaults)
    still gets the route's JSON error: these are API routes, not pages."""
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    headers = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    if case != "no-key":
        headers.update(auth(key))
    body: Any = b"{" if case == "bad-body" else {**good_body(path), "model": "no-such"}
    if case == "no-key":
        body = good_body(path)
    response = await send(portal, path, body, headers)
    await assert_refused(portal, key_id, response, path,
                         status={"bad-body": 400, "unknown-model": 404, "no-key": 401}[case])


# -- keys -------------------------------------------------------------------------------------
def _credentials(case: str, key: str) -> dict[str, Any]:
    return {
        "none": {},
        "x-api-key-empty": {"x-api-key": ""},
        "x-api-key-short": {"x-api-key": "sk-ip-short"},
        "x-api-key-wrong": {"x-api-key": "sk-ip-wrongwrong" + "x" * 30},
        "bearer-wrong-x-api-key-good": {"authorization": "Bearer sk-ip-wrongwrong" + "x" * 30,
                                        "x-api-key": key},
        "bearer-empty-x-api-key-good": {"authorization": "", "x-api-key": key},
        "basic-x-api-key-good": {"authorization": "Basic dXNlcjpwYXNz", "x-api-key": key},
        # header bytes that are not UTF-8, in the key's public prefix or in its secret
        "x-api-key-latin1-prefix": {"x-api-key": b"sk-ip-\xff\xfe" + b"a" * 40},
        "x-api-key-latin1-secret": {"x-api-key": b"sk-ip-aaaaaaaa" + b"\xff" * 40},
        "bearer-latin1-prefix": {"authorization": b"Bearer sk-ip-\xff\xfe" + b"a" * 40},
        "bearer-latin1-secret": {"authorization": b"Bearer " + key.encode()[:20] +
                                 b"\xe9" * 30},
    }[case]


CREDENTIAL_CASES = ["none", "x-api-key-empty", "x-api-key-short", "x-api-key-wrong",
                    "bearer-wrong-x-api-key-good", "bearer-empty-x-api-key-good",
                    "basic-x-api-key-good", "x-api-key-latin1-prefix",
                    "x-api-key-latin1-secret", "bearer-latin1-prefix", "bearer-latin1-secret"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("case", CREDENTIAL_CASES)
async def test_bad_credentials_are_401_in_the_routes_shape(probe_portal: InProcessPortal,
                                                           path: str, case: str) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, good_body(path), _credentials(case, key))
    await assert_refused(portal, key_id, response, path, status=401)


async def test_a_key_limited_to_other_routes_is_403(probe_portal: InProcessPortal) -> None:
    from edge.identity.accounts import KeySettings

    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000,
                                          settings=KeySettings(routes=["chat/completions"]))
    for path in ROUTES:
        response = await send(portal, path, good_body(path), {"x-api-key": key})
        await assert_refused(portal, key_id, response, path, status=403)


# -- X-Portal-Wait ----------------------------------------------------------------------------
BAD_WAITS = ["-1", "1e9", "abc", "", "5.5", "0x10", "-0.5", "9" * 5000, "1 2"]


@pytest.mark.parametrize("path", METERED)
@pytest.mark.parametrize("wait", BAD_WAITS, ids=[w[:12] or "empty" for w in BAD_WAITS])
async def test_a_bad_wait_for_a_cold_model_is_400(probe_portal: InProcessPortal, path: str,
                                                  wait: str) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, good_body(path, COLD_FOR[path]),
                          {**auth(key), "x-portal-wait": wait})
    await assert_refused(portal, key_id, response, path, status=400)
    if path != M:
        assert response.json()["error"]["param"] == "X-Portal-Wait"


@pytest.mark.parametrize("path", METERED)
@pytest.mark.parametrize("wait", ["abc", "-1"])
async def test_a_bad_wait_is_400_even_when_the_model_is_warm(probe_portal: InProcessPortal,
                                                             path: str, wait: str) -> None:
    """The same header must not be fine while a node runs and a 400 once the model went
    cold: a client would find out only in production, when a model idles out."""
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, good_body(path), {**auth(key), "x-portal-wait": wait})
    await assert_refused(portal, key_id, response, path, status=400)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("wait", ["0", "99999999999999999999", None])
async def test_a_cold_model_is_a_quick_503_in_the_routes_shape(probe_portal: InProcessPortal,
                                                               path: str,
                                                               wait: str | None) -> None:
    """A cold model's 503 is the one deliberate 5xx; a huge wait is cut to
    PORTAL_MAX_WAIT (1 s here), and the free routes never wait."""
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    headers = auth(key) if wait is None else {**auth(key), "x-portal-wait": wait}
    started = time.monotonic()
    response = await send(portal, path, good_body(path, COLD_FOR[path]), headers)
    assert time.monotonic() - started < 4
    assert response.status_code == 503, response.text[:300]
    body = assert_shape(response, path)
    if path != M:
        assert body["error"]["code"] == "model_warming"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    await assert_charged_nothing(portal, key_id)


# -- previous_response_id ---------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_an_unknown_previous_response_is_the_nodes_404(probe_portal: InProcessPortal,
                                                             stream: bool) -> None:
    """docs/api.md: a node that does not have the response answers 404, and the portal
    passes that 404 on (not another node, not a 502/503), charging nothing."""
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, R, {"model": "gen", "input": "And then?", "stream": stream,
                                      "previous_response_id": "resp_unknown"}, auth(key))
    await assert_refused(portal, key_id, response, R, status=404)
    assert "resp_unknown" in response.json()["error"]["message"]
    again = await send(portal, R, good_body(R), auth(key))
    assert again.status_code == 200, again.text[:300]  # the node was not marked down


# -- odd but valid: served, and charged exactly the node's usage --------------------------------
ODD_VALID = [
    _p(E, {"model": "emb", "input": [[5]] * 2048}, "2048-id-lists"),
    _p(E, {"model": "emb", "input": ["a cat"], "encoding_format": "base64",
           "embed_dtype": "float16"}, "base64-float16"),
    _p(E, {"model": "emb", "input": "x", "dimensions": 1},
       "dimensions-1"),
    _p(E, {"model": "emb", "input": "x", "messages": [{"role": "user", "content": "a b c"}]},
       "input-and-messages"),
    _p(E, {"model": "emb", "input": "\U0001f600 \u00e9t\u00e9 \u4e2d\u6587"}, "unicode"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a", "b"], "top_n": 10**30},
       "top_n-huge"),
    _p(RR, {"model": "rr", "query": "q", "documents": ["a", "b"], "top_n": 0}, "top_n-0"),
    _p(RR, {"model": "emb", "query": "a cat " * 50, "documents": ["d"] * 300},
       "embed-model-long-query"),
    _p(RR, {"model": "rr", "query": "a cat " * 50, "documents": ["d"] * 300},
       "long-query-300-docs"),
    _p(S, {"model": "rr", "text_1": ["a", "b"], "text_2": ["c", "d"]}, "n-to-n"),
    _p(S, {"model": "emb", "text_1": "a cat " * 30, "text_2": ["d"] * 200},
       "embed-model-1-to-200"),
    _p(S, {"model": "rr", "queries": "q", "items": ["a", "b"]}, "queries-items"),
    _p(R, {"model": "gen", "input": [{}]}, "empty-item"),
    _p(R, {"model": "gen", "input": [{"type": "function_call_output", "call_id": "c",
                                      "output": {"a": [1, 2]}}]}, "tool-output-object"),
    _p(R, {"model": "gen", "input": "x", "stream": None, "max_output_tokens": None},
       "nulls"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                      "input": 0}]}]}, "tool-use-input-number"),
    _p(M, {"model": "gen", "max_tokens": 5, "system": [{"type": "text", "text": "Be"}],
           "messages": [{"role": "user", "content": "x"}], "anthropic-version": 5},
       "system-blocks"),
    _p(T, {"model": "gen", "messages": [{}]}, "empty-message"),
    _p(T, {"model": "emb", "prompt": ""}, "embed-model-empty-prompt"),
    _p(D, {"model": "gen", "tokens": [10**30]}, "id-huge"),
    _p(D, {"model": "rr", "tokens": []}, "no-ids"),
]


@pytest.mark.parametrize(("path", "body"), ODD_VALID)
async def test_an_odd_but_valid_body_is_charged_exactly(probe_portal: InProcessPortal,
                                                        path: str,
                                                        body: dict[str, Any]) -> None:
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, body, auth(key))
    assert response.status_code == 200, response.text[:400]
    (row,) = await portal.usage(key_id)
    if path in (T, D):
        assert row["cost"] == 0
    else:
        prompt, completion = node_counts(path, response.json())
        assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
        assert row["cost"] == cost(prompt, completion)
    await portal.wait_settled()
    assert await portal.assert_books_balance(key_id) == parse_usd(CREDIT) - row["cost"]


# -- the reservation must bound what the node will count ----------------------------------------
async def _charged_exactly_or_refused(portal: InProcessPortal, key_id: int, credit: str,
                                      response: httpx.Response, path: str) -> None:
    """Either the key could not cover the call (402, nothing charged), or it paid exactly
    what the node counted: never less because the reservation held less than the call."""
    if response.status_code == 402:
        await assert_charged_nothing(portal, key_id, credit)
        return
    assert response.status_code == 200, response.text[:300]
    prompt, completion = node_counts(path, response.json())
    (row,) = await portal.usage(key_id)
    assert row["prompt_tokens"] == prompt
    assert row["cost"] == cost(prompt, completion), (
        f"the node counted {prompt} tokens (${cost(prompt) / 1e6:.6f}) but the key paid "
        f"${row['cost'] / 1e6:.6f}: the reservation held less than the call")


#: A body naming two pairs (text_1/text_2 and queries/documents) would be checked and
#: reserved by one pair and scored by the node by the other: it is refused.
@pytest.mark.parametrize("documents", [3000, 2000])
async def test_score_refuses_two_pairs_of_texts(probe_portal: InProcessPortal,
                                                documents: int) -> None:
    """Over the 2048-text limit, or a long query against 2000 documents, behind a harmless
    text_1/text_2."""
    portal = probe_portal
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    body = {"model": "rr", "text_1": "a", "text_2": "b", "queries": "q " * 50,
            "documents": ["d"] * documents}
    response = await send(portal, S, body, auth(key))
    await assert_refused(portal, key_id, response, S, status=400)
    await portal.assert_books_balance(key_id)


SMALL_TEXT = "a " * 62  # 62 tokens and BOS: just under the small model's context of 64


@pytest.mark.parametrize(("path", "body"), [
    _p(S, {"model": "small", "text_1": [SMALL_TEXT] * 2, "text_2": [SMALL_TEXT] * 2},
       "embed-n-to-n"),
    _p(RR, {"model": "small", "query": SMALL_TEXT, "documents": [SMALL_TEXT] * 3},
       "embed-1-to-n"),
])
async def test_an_embed_models_score_reserves_every_text_it_embeds(
        probe_portal: InProcessPortal, path: str, body: dict[str, Any]) -> None:
    """An embedding model embeds each query and each document (2N texts for N pairs, N+1
    for a rerank), each up to the context: the reservation caps the prompt at context ×
    pairs, less than the node may count."""
    portal = probe_portal
    key_id, key = await portal.create_key("0.0001", rpm=1000)
    response = await send(portal, path, body, auth(key))
    await _charged_exactly_or_refused(portal, key_id, "0.0001", response, path)
    await portal.assert_books_balance(key_id)


# -- bodies that make a node fail: each on a portal of its own --------------------------------
NODE_BREAKERS = [
    _p(R, {"model": "gen", "input": "x", "include": 5}, "include-number"),
    _p(R, {"model": "gen", "input": "x", "include": True, "stream": True},
       "include-bool-stream"),
    _p(M, {"model": "gen", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": ["oops"]}]}]},
       "tool_result-content-string-item"),
    _p(M, {"model": "gen", "max_tokens": 5, "stream": True, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": [5]}]}]},
       "tool_result-content-number-item-stream"),
]


@pytest.mark.parametrize(("path", "body"), NODE_BREAKERS)
async def test_a_body_cannot_take_the_models_nodes_down(inprocess_portal: InProcessPortal,
                                                        node_doubles, path: str,
                                                        body: dict[str, Any]) -> None:
    """A body that fails the node (a 500) must be the client's 4xx; and it must not mark
    the model's only node down, which answers everyone else's calls with 503 meanwhile."""
    portal = inprocess_portal
    node = await node_doubles("sim-gen", reply_tokens=4)
    await portal.add_model("gen", served_name="sim-gen", input_price=IN, output_price=OUT)
    await portal.add_node("gen", node)
    key_id, key = await portal.create_key(CREDIT, rpm=1000)
    response = await send(portal, path, body, auth(key))
    refused_ok = 400 <= response.status_code < 500
    await assert_charged_nothing(portal, key_id)
    again = await send(portal, path, good_body(path), auth(key))
    assert refused_ok, f"{response.status_code}: {response.text[:400]}"
    assert_shape(response, path)
    assert again.status_code == 200, f"a good call after it: {again.text[:300]}"
