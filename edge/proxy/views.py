"""``POST /v1/chat/completions`` and ``POST /v1/completions``: adapters of the metered call.

The hot path, in order: key (memory) → body checks → model and node (memory) →
one Redis script for limits and credit → the node (another one while nodes
refuse, :mod:`edge.metering.call`) → one Redis script to settle and record
usage → the answer. Settlement happens before the last byte leaves, so a worker
that dies after answering has already charged.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from sanic import Blueprint, HTTPResponse, Request

from edge.billing.money import format_usd
from edge.errors import ModelNotFound
from edge.identity.auth import authenticate
from edge.metering.call import MeteredCall
from edge.metering.cost import with_cost
from edge.metering.limits import rate_limit_headers
from edge.metering.outcome import Outcome, observe
from edge.metering.request_spec import Endpoint, check_fits, parse_request

if TYPE_CHECKING:
    from edge.billing.reservations import Settlement
    from edge.context import PortalContext

__all__ = ["bp"]

bp = Blueprint("proxy", url_prefix="/v1")


@bp.post("/chat/completions")
async def chat_completions(request: Request) -> HTTPResponse | None:
    return await forward(request, Endpoint.CHAT)


@bp.post("/completions")
async def completions(request: Request) -> HTTPResponse | None:
    return await forward(request, Endpoint.COMPLETIONS)


async def forward(request: Request, endpoint: Endpoint) -> HTTPResponse | None:
    portal: PortalContext = request.app.ctx.portal
    started = time.perf_counter()
    key = await authenticate(portal, request.headers.get("authorization"))
    spec = parse_request(request.body, endpoint)
    model = portal.registry.model(spec.model)
    if model is None:
        raise ModelNotFound(f"The model '{spec.model}' does not exist or is not enabled. "
                            "GET /v1/models lists the models.", param="model")
    check_fits(spec, model.context_length)
    call = MeteredCall(portal.metering, model=model, spec=spec, body=request.body,
                       request_id=request.ctx.request_id, endpoint=endpoint.value,
                       started=started)
    call.authorize(key)
    node = call.choose()
    if node is None:
        refusal = await portal.metering.cold(model)
        # Nothing was reserved, but an operator must see a cold model's 503s.
        observe(endpoint.value, model.name, refusal.status, time.perf_counter() - started,
                0, 0, 0)
        raise refusal
    limits = rate_limit_headers(await call.reserve(key, node))
    async with call:
        await call.open(node)
        if spec.stream:
            await _stream(request, call, limits)
            return None
        answer = await call.fetch()
        settlement = await call.finish(Outcome.DONE, answer.prompt_tokens,
                                       answer.completion_tokens)
        return HTTPResponse(with_cost(answer.content, settlement.charged),
                            content_type="application/json",
                            headers={**limits, **cost_headers(settlement)})


async def _stream(request: Request, call: MeteredCall, limits: dict[str, str]) -> None:
    """Relay the node's events as they arrive, never buffered; the tail says the cost."""
    response = await request.respond(
        content_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **limits})
    relayed = await call.relay(response.send)
    if relayed.failure is None:
        tail = f": cost_micros={relayed.settlement.charged}\n\ndata: [DONE]\n\n".encode()
        relay = call.stream_relay()
        if relay.owes_usage_chunk:
            tail = relay.usage_chunk(relayed.prompt_tokens, relayed.completion_tokens) + tail
    else:
        reason = relayed.failure
        error = {"error": {"message": reason.message + " The answer is incomplete; you were "
                           f"charged for the {relayed.completion_tokens} tokens received.",
                           "type": reason.type, "param": None, "code": reason.code}}
        tail = f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
    await response.send(tail)
    await response.eof()
    return None


def cost_headers(settlement: Settlement) -> dict[str, str]:
    return {"x-portal-cost-micros": str(settlement.charged),
            "x-portal-cost-usd": format_usd(settlement.charged),
            "x-portal-balance-usd": format_usd(settlement.balance)}
