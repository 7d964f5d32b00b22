"""Every route of a simnode, and the small ones' handlers.

vLLM's own endpoints (``/health``, ``/v1/models``, ``/tokenize``, ``/detokenize``,
``/metrics``) plus ``/sim/faults``, which only a simnode has. ``--no-tokenize`` leaves out
``/tokenize`` and ``/detokenize``, as servers other than vLLM lack them.

The model routes depend on the kind, as vLLM registers only the routers of its model's
tasks: a route of another kind is not there at all (404 ``{"detail":"Not Found"}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sanic import HTTPResponse, Sanic

from simnode.completions import chat_completions, completions
from simnode.context import SimContext, SimRequest
from simnode.errors import BadRequest, InvalidBody, ModelNotFound
from simnode.messages import messages
from simnode.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from simnode.metrics import render_metrics
from simnode.parsing import load_body
from simnode.pooling import embeddings, rerank, score
from simnode.responses import responses
from simnode.tokenizer import chat_prompt_ids, completion_prompt_ids, decode_ids

__all__ = ["MODEL_ROUTES", "add_routes"]

#: The model routes each kind serves (all ``POST``).
MODEL_ROUTES = {
    "generate": ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"),
    "embed": ("/v1/embeddings", "/score", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank"),
    "rerank": ("/score", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank"),
}

_dumps = json.JSONEncoder(separators=(",", ":")).encode


class _BareResponse(HTTPResponse):
    """An empty response without the ``content-type: None`` header Sanic would add."""

    @property
    def processed_headers(self) -> Iterator[tuple[bytes, bytes]]:
        return ((k, v) for k, v in super().processed_headers if k != b"content-type")


def _ctx(request: SimRequest) -> SimContext:
    return request.app.ctx


def _json(data: Any, status: int = 200) -> HTTPResponse:
    return HTTPResponse(_dumps(data), status=status, content_type="application/json")


async def health(request: SimRequest) -> HTTPResponse:
    """Answer ``GET /health``: 200 with an empty body, or the injected ``health_status``."""
    return _BareResponse(b"", status=_ctx(request).faults.health_status)


async def models(request: SimRequest) -> HTTPResponse:
    """Answer ``GET /v1/models``."""
    return HTTPResponse(_ctx(request).models_body, content_type="application/json")


def _check_model(data: dict[str, Any], ctx: SimContext) -> None:
    model = data.get("model")
    if model is not None and model != ctx.config.model:
        raise ModelNotFound(model)


async def tokenize(request: SimRequest) -> HTTPResponse:
    """Answer ``POST /tokenize`` for ``{"prompt": ...}`` or ``{"messages": [...]}``."""
    ctx = _ctx(request)
    data = load_body(request.body, request.content_type)
    _check_model(data, ctx)
    if "messages" in data:
        messages = data["messages"]
        if not isinstance(messages, list):
            raise InvalidBody("list_type", ("messages",), "Input should be a valid list", messages)
        try:
            ids = chat_prompt_ids(messages)
        except ValueError as exc:
            raise InvalidBody("value_error", ("messages",), str(exc), messages) from None
    else:
        prompt = data.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidBody("missing", ("prompt",), "Field required", data)
        ids = completion_prompt_ids(prompt, add_special_tokens=data.get("add_special_tokens", True))
    token_strs = [decode_ids([i]) for i in ids] if data.get("return_token_strs") else None
    return _json(
        {
            "count": len(ids),
            "max_model_len": ctx.config.max_model_len,
            "tokens": ids,
            "token_strs": token_strs,
        }
    )


async def detokenize(request: SimRequest) -> HTTPResponse:
    """Answer ``POST /detokenize`` for ``{"tokens": [ints]}``."""
    data = load_body(request.body, request.content_type)
    _check_model(data, _ctx(request))
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tokens
    ):
        raise InvalidBody(
            "list_type", ("tokens",), "Input should be a valid list of integers", tokens
        )
    return _json({"prompt": decode_ids(tokens)})


async def metrics(request: SimRequest) -> HTTPResponse:
    """Answer ``GET /metrics`` in the Prometheus text format."""
    ctx = _ctx(request)
    text = render_metrics(ctx.scheduler, ctx.config.model, ctx.prefix_cache)
    return HTTPResponse(text, content_type=METRICS_CONTENT_TYPE)


async def get_faults(request: SimRequest) -> HTTPResponse:
    """Answer ``GET /sim/faults`` with the current switches."""
    return _json(_ctx(request).faults.as_dict())


async def set_faults(request: SimRequest) -> HTTPResponse:
    """Apply a partial update from ``POST /sim/faults`` and answer the current switches."""
    faults = _ctx(request).faults
    try:
        changes = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(changes, dict):
        raise BadRequest("body must be a JSON object")
    try:
        faults.update(changes)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(faults.as_dict())


def add_routes(app: Sanic) -> None:
    """Register every simnode route on ``app``."""
    app.add_route(health, "/health", methods=["GET"])
    app.add_route(models, "/v1/models", methods=["GET"])
    handlers = {
        "/v1/chat/completions": chat_completions,
        "/v1/completions": completions,
        "/v1/responses": responses,
        "/v1/messages": messages,
        "/v1/embeddings": embeddings,
        "/score": score,
        "/v1/score": score,
        "/rerank": rerank,
        "/v1/rerank": rerank,
        "/v2/rerank": rerank,
    }
    for path in MODEL_ROUTES[app.ctx.config.kind]:
        name = path.strip("/").replace("/", "_")
        app.add_route(handlers[path], path, methods=["POST"], name=name)
    if app.ctx.config.tokenize:  # off with --no-tokenize, like servers without it
        app.add_route(tokenize, "/tokenize", methods=["POST"])
        app.add_route(detokenize, "/detokenize", methods=["POST"])
    app.add_route(metrics, "/metrics", methods=["GET"])
    app.add_route(get_faults, "/sim/faults", methods=["GET"])
    app.add_route(set_faults, "/sim/faults", methods=["POST"])
