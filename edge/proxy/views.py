"""The metered API routes, each an adapter of the metered call.

``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``,
``/v1/messages`` (Anthropic's), ``/v1/rerank``, ``/v1/score``, and the free
``/tokenize`` and ``/detokenize``: one :func:`forward` for all of them.

The hot path, in order: key (memory) → body checks → model and node (memory) →
one Redis script for limits and credit → the node (another one while nodes
refuse, :mod:`edge.metering.call`) → one Redis script to settle and record
usage → the answer. Settlement happens before the last byte leaves, so a worker
that dies after answering has already charged.

A cold model answers 503 at once, unless the client asked to wait with
``X-Portal-Wait: <seconds>``: the request is then held (nothing reserved yet)
until a node is up, or the wait runs out.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sanic import Blueprint, HTTPResponse, Request

from edge.billing.money import format_usd
from edge.errors import InvalidRequest, ModelNotFound
from edge.identity.auth import authenticate, credentials
from edge.metering.call import MeteredCall
from edge.metering.cost import with_cost
from edge.metering.limits import rate_limit_headers
from edge.metering.outcome import Outcome, observe
from edge.metering.request_spec import Endpoint, check_fits, parse_request

if TYPE_CHECKING:
    from edge.billing.reservations import Settlement
    from edge.context import PortalContext

__all__ = ["bp", "tokenizer_bp"]

bp = Blueprint("proxy", url_prefix="/v1")
#: vLLM serves these at the root, and so does the portal.
tokenizer_bp = Blueprint("tokenizer")

#: The header a client sets to wait for a cold model instead of a 503.
WAIT_HEADER = "x-portal-wait"


def _route(path: str, endpoint: Endpoint, blueprint: Blueprint = bp) -> None:
    async def view(request: Request) -> HTTPResponse | None:
        return await forward(request, endpoint)

    view.__name__ = endpoint.value
    view.__doc__ = f"``POST {path}``."
    blueprint.add_route(view, path, methods=["POST"], name=endpoint.value)


_route("/chat/completions", Endpoint.CHAT)
_route("/completions", Endpoint.COMPLETIONS)
_route("/embeddings", Endpoint.EMBEDDINGS)
_route("/responses", Endpoint.RESPONSES)
_route("/messages", Endpoint.MESSAGES)
_route("/rerank", Endpoint.RERANK)
_route("/score", Endpoint.SCORE)
_route("/tokenize", Endpoint.TOKENIZE, tokenizer_bp)
_route("/detokenize", Endpoint.DETOKENIZE, tokenizer_bp)


async def forward(request: Request, endpoint: Endpoint) -> HTTPResponse | None:
    portal: PortalContext = request.app.ctx.portal
    started = time.perf_counter()
    key = await authenticate(portal, credentials(request.headers))
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
    wait = wait_seconds(request, endpoint)
    node = call.choose()
    if node is None and wait:
        node = await portal.metering.wait_for_node(model, wait)
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
        if endpoint.free:
            await call.finish(Outcome.DONE)
            assert call.upstream is not None
            return HTTPResponse(call.upstream.content, content_type="application/json",
                                headers=limits)
        answer = await call.fetch()
        settlement = await call.finish(Outcome.DONE, answer.prompt_tokens,
                                       answer.completion_tokens)
        return HTTPResponse(with_cost(answer.content, settlement.charged),
                            content_type="application/json",
                            headers={**limits, **cost_headers(settlement)})


def wait_seconds(request: Request, endpoint: Endpoint) -> int:
    """How long the client asked to wait for a cold model (``X-Portal-Wait``), cut to
    ``PORTAL_MAX_WAIT``; 0: not at all. Checked on every call, warm or cold, so a bad
    header is heard at once and not only the day the model idles out.

    Raises:
      InvalidRequest: not a whole number of seconds.
    """
    value = request.headers.get(WAIT_HEADER)
    if value is None:
        return 0
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 100:
        raise InvalidRequest("'X-Portal-Wait' must be a whole number of seconds to wait "
                             "for a cold model's node.", param="X-Portal-Wait")
    if endpoint.free:
        return 0
    longest: int = request.app.ctx.settings.max_wait
    return min(int(value), longest)


async def _stream(request: Request, call: MeteredCall, limits: dict[str, str]) -> None:
    """Relay the node's events as they arrive, never buffered; the tail says the cost."""
    response = await request.respond(
        content_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **limits})
    relayed = await call.relay(response.send)
    relay = call.stream_relay()
    if relayed.failure is None:
        tail = relay.end(relayed.settlement.charged, relayed.prompt_tokens,
                         relayed.completion_tokens)
    else:
        reason = relayed.failure
        tail = relay.broken(reason.message + " The answer is incomplete; you were charged "
                            f"for the {relayed.completion_tokens} tokens received.",
                            reason.code or "upstream_error", reason.type)
    await response.send(tail)
    await response.eof()


def cost_headers(settlement: Settlement) -> dict[str, str]:
    return {"x-portal-cost-micros": str(settlement.charged),
            "x-portal-cost-usd": format_usd(settlement.charged),
            "x-portal-balance-usd": format_usd(settlement.balance)}
