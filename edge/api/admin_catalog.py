"""``/admin/models``: the catalogue for the operator (bearer ``PORTAL_ADMIN_TOKEN``).

Every model, disabled ones too, with its prices (USD per 1M tokens, beside their
micro-dollars), its scaling policy and its nodes by state. Adding and changing go
through :mod:`edge.fleet.catalogue`, as ``portal models add`` and ``portal models set``
do: bad input is a 400 naming its field and changes nothing, every worker's
``/v1/models`` shows a change within a second, and each change appends a row to the
audit log (:func:`edge.admin.admin_actor`). The scaling policy has its own route,
``/admin/models/{name}/policy`` (:mod:`edge.admin`).
"""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge.admin import admin_actor, require_admin
from edge.api.fields import usd
from edge.api.shapes import money
from edge.db.models import LLM
from edge.errors import InvalidRequest, NotFound
from edge.fleet import catalogue
from edge.fleet.scaling import policy_view
from edge.jsonbody import json_object

__all__ = ["bp"]

bp = Blueprint("admin_catalog", url_prefix="/admin")
bp.on_request(require_admin)

#: Body fields that are prices: USD per 1M tokens, read into micro-dollars.
_PRICES = ("input_price", "output_price")


def model_view(request: Request, llm: LLM) -> dict[str, Any]:
    """A model as the console shows it: the catalogue, the policy, the nodes by state
    (``unhealthy``: running but failing its health checks), as this worker routes."""
    registry = request.app.ctx.portal.registry
    routed = registry.models.get(llm.name)
    return {
        "name": llm.name,
        "served_name": llm.served_name,
        "kind": str(llm.kind),
        **money("input_price", llm.input_price),
        **money("output_price", llm.output_price),
        "context_length": llm.context_length,
        "enabled": llm.enabled,
        "created_at": llm.created_at.isoformat(),
        "policy": policy_view(llm),
        "nodes": registry.node_states(routed) if routed is not None else {},
    }


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The body's fields, its prices read from USD into micro-dollars."""
    return {field: usd(value, field) if field in _PRICES else value
            for field, value in body.items()}


async def _model(name: str) -> LLM:
    llm = await LLM.get_or_none(name=name)
    if llm is None:
        raise NotFound(f"No model '{name}'.")
    return llm


@bp.get("/models")
async def list_models(request: Request):
    rows = await LLM.all().order_by("name")
    return json_response({"object": "list", "data": [model_view(request, m) for m in rows]})


@bp.post("/models")
async def add_model(request: Request):
    """Body: ``name``, ``input_price`` and ``output_price`` (USD per 1M tokens), and
    ``served_name``, ``context_length``, ``kind``, ``enabled``, ``idle_ttl``,
    ``min_nodes``. Idempotent, as ``portal models add``: answers 201 when it made the
    model, 200 when it updated it or found it so."""
    body = json_object(request.body)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise InvalidRequest("'name' is required: the public name clients ask for.",
                             param="name")
    portal = request.app.ctx.portal
    try:
        llm, outcome = await catalogue.add_model(
            name, _fields(body), default_idle_ttl=portal.settings.idle_ttl,
            publish=portal.store.publish, actor=admin_actor(request))
    except catalogue.CatalogueError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None
    return json_response({**model_view(request, llm), "outcome": outcome},
                         status=201 if outcome == "created" else 200)


@bp.get("/models/<name:path>")
async def show_model(request: Request, name: str):
    return json_response(model_view(request, await _model(name)))


@bp.patch("/models/<name:path>")
async def update_model(request: Request, name: str):
    """Body: any of ``served_name``, ``input_price``, ``output_price`` (USD per 1M
    tokens), ``context_length``, ``kind``, ``enabled``; only those given change."""
    llm = await _model(name)
    try:
        changed = await catalogue.update_model(
            llm, _fields(json_object(request.body)),
            publish=request.app.ctx.portal.store.publish, actor=admin_actor(request))
    except catalogue.CatalogueError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None
    return json_response({**model_view(request, llm),
                          "outcome": "updated" if changed else "unchanged"})
