"""``GET /v1/models``: the OpenAI model list, with prices and node state.

Without a key it is the public catalogue; with one (``Authorization: Bearer``), only
the models that key may call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sanic import Blueprint, Request, json

from edge.billing.money import format_usd
from edge.errors import ModelNotFound
from edge.identity.auth import authenticate, credentials

if TYPE_CHECKING:
    from edge.fleet.registry import ModelInfo, Registry

__all__ = ["bp", "model_entry", "model_state"]

bp = Blueprint("catalog", url_prefix="/v1")


def model_state(registry: Registry, model: ModelInfo) -> str:
    """``running`` (a healthy node serves it), ``warming`` (one is booting) or ``stopped``."""
    states = registry.node_states(model)
    if registry.pick(model) is not None:
        return "running"
    if states.get("pending") or states.get("unhealthy"):
        return "warming"
    return "stopped"


def model_entry(registry: Registry, model: ModelInfo) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "inference-portal",
        "kind": model.kind,
        "context_length": model.context_length,
        "pricing": {
            "currency": "USD",
            "unit": "1M tokens",
            "input": format_usd(model.input_price),
            "output": format_usd(model.output_price),
            "input_micros": model.input_price,
            "output_micros": model.output_price,
        },
        "state": model_state(registry, model),
        "nodes": registry.node_states(model),
    }


async def _allowed(request: Request) -> frozenset[str] | None:
    """The models the caller's key may call; None: every model (or no key given)."""
    header = credentials(request.headers)
    if header is None:
        return None
    key = await authenticate(request.app.ctx.portal, header)
    return key.models


@bp.get("/models")
async def list_models(request: Request):
    registry = request.app.ctx.portal.registry
    allowed = await _allowed(request)
    data = [model_entry(registry, m) for m in registry.models.values()
            if m.enabled and (allowed is None or m.name in allowed)]
    data.sort(key=lambda entry: entry["id"])
    return json({"object": "list", "data": data})


@bp.get("/models/<name:path>")
async def get_model(request: Request, name: str):
    registry = request.app.ctx.portal.registry
    model = registry.model(name)
    allowed = await _allowed(request)
    if model is None or (allowed is not None and name not in allowed):
        raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
    return json(model_entry(registry, model))
