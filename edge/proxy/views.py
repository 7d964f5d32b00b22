"""``POST /v1/chat/completions`` and ``POST /v1/completions``.

The hot path, in order: key (memory) → body checks → model and node (memory) →
one Redis script for limits and credit → the node → one Redis script to settle
and record usage → the answer. Settlement happens before the last byte leaves,
so a worker that dies after answering has already charged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx
from sanic import Blueprint, HTTPResponse, Request

from edge import metrics
from edge.auth import authenticate
from edge.billing import Reservation, Settlement, worst_case_tokens
from edge.errors import APIError, ModelNotFound, ModelWarming, NodeFailed
from edge.money import format_usd
from edge.proxy.request_spec import Endpoint, RequestSpec, check_fits, parse_request
from edge.proxy.sse import StreamRelay
from edge.proxy.upstream import NODE_FAILURES, node_error

if TYPE_CHECKING:
    from edge.context import PortalContext
    from edge.registry import ModelInfo, NodeInfo

__all__ = ["bp", "new_request_id"]

log = logging.getLogger(__name__)

bp = Blueprint("proxy", url_prefix="/v1")

#: Seconds between two progress records of a stream (what it has delivered so far).
PROGRESS_INTERVAL = 1.0


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


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
    node = portal.registry.pick(model)
    if node is None:
        raise await warming(portal, model)
    prompt, completion = worst_case_tokens(len(request.body), spec.max_tokens, spec.choices,
                                           model.context_length, spec.prompts)
    reservation = await portal.billing.reserve(
        key, request.ctx.request_id, prompt_tokens=prompt, completion_tokens=completion,
        input_price=model.input_price, output_price=model.output_price,
        meta={"model": model.name, "node": node.id, "ep": endpoint.value,
              "st": int(spec.stream)})
    call = ProxyCall(portal, request, spec, model, reservation, started)
    if spec.stream:
        return await call.stream(node)
    return await call.once(node)


async def warming(portal: PortalContext, model: ModelInfo) -> ModelWarming:
    """The 503 for a model without a running node, after asking for a boot."""
    retry_after = model.boot_seconds or portal.settings.warming_retry_after
    if portal.on_cold_model is not None:
        try:
            eta = await portal.on_cold_model(model)
            if eta:
                retry_after = eta
        except Exception:  # asking for a boot must not turn a 503 into a 500
            log.exception("could not request a boot of %s", model.name)
    if not portal.registry.can_boot(model):
        return ModelWarming(
            f"No GPU node is running the model '{model.name}', and none can be started on "
            "demand: its nodes are started by the operator. Retry later, or submit it to "
            "POST /v1/jobs to be answered when one is up.", retry_after=int(retry_after))
    return ModelWarming(
        f"The model '{model.name}' is warming up: no GPU node is running it yet. "
        f"Retry in about {int(retry_after)} seconds, or submit it to POST /v1/jobs.",
        retry_after=int(retry_after))


class ProxyCall:
    """One reserved request on its way to a node and back."""

    def __init__(self, portal: PortalContext, request: Request, spec: RequestSpec,
                 model: ModelInfo, reservation: Reservation, started: float) -> None:
        self.portal = portal
        self.request = request
        self.spec = spec
        self.model = model
        self.reservation = reservation
        self.started = started
        self.node: NodeInfo | None = None
        self.settlement: Settlement | None = None

    def upstream_body(self) -> bytes:
        spec, model = self.spec, self.model
        if not spec.stream and model.served_name == model.name:
            return self.request.body
        body = dict(spec.body)
        body["model"] = model.served_name
        if spec.stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            options["continuous_usage_stats"] = True
            body["stream_options"] = options
        return json.dumps(body, separators=(",", ":")).encode()

    async def open(self, node: NodeInfo, *, stream: bool) -> httpx.Response:
        """Send the request to ``node``; once more to another node if it refused."""
        payload = self.upstream_body()
        registry = self.portal.registry
        tried: list[int] = []
        while True:
            self.node = node
            node.in_flight += 1
            metrics.INFLIGHT.labels(str(node.id)).inc()
            try:
                response = await self.portal.http.post(node.url + self.spec.endpoint.path,
                                                       payload)
                if not stream:
                    await response.aread()
                return response
            except httpx.ConnectError:
                self._release_node()
                registry.mark_down(node)
                metrics.UPSTREAM_ERRORS.labels(str(node.id), "connect").inc()
                tried.append(node.id)
                retry = registry.pick(self.model, exclude=tried) if len(tried) < 2 else None
                if retry is None:
                    raise NodeFailed("No GPU node of this model accepted the connection.") \
                        from None
                node = retry
            except BaseException:
                self._release_node()
                raise

    def _release_node(self) -> None:
        node = self.node
        if node is not None:
            node.in_flight -= 1
            metrics.INFLIGHT.labels(str(node.id)).dec()
            self.node = None

    async def settle(self, prompt: int, completion: int, *, status: int,
                     cancelled: bool = False) -> Settlement:
        if self.settlement is not None:
            return self.settlement
        node_id = self.node.id if self.node is not None else ""
        fields: dict[str, Any] = {
            "model": self.model.name, "node": node_id, "ep": self.spec.endpoint.value,
            "lat": int((time.perf_counter() - self.started) * 1000), "status": status,
            "st": int(self.spec.stream), "cx": int(cancelled),
        }
        self.settlement = await self.portal.billing.settle(
            self.reservation, prompt_tokens=prompt, completion_tokens=completion, fields=fields)
        self._observe(status, prompt, completion, self.settlement.charged)
        return self.settlement

    async def settle_shielded(self, prompt: int, completion: int, *, status: int,
                              cancelled: bool = False) -> None:
        """Settle even when this task is being cancelled (the client went away)."""
        if self.settlement is not None:
            return
        task = asyncio.ensure_future(self.settle(prompt, completion, status=status,
                                                 cancelled=cancelled))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the task goes on; the reaper covers a worker that dies meanwhile
        except Exception:
            log.exception("settling %s failed; the reaper will settle it",
                          self.reservation.request_id)

    def _observe(self, status: int, prompt: int, completion: int, charged: int) -> None:
        series = metrics.request_series(self.spec.endpoint.value, self.model.name, status)
        series.requests.inc()
        series.seconds.observe(time.perf_counter() - self.started)
        if prompt:
            series.prompt_tokens.inc(prompt)
        if completion:
            series.completion_tokens.inc(completion)
        if charged:
            series.spend.inc(charged)

    def cost_headers(self, settlement: Settlement) -> dict[str, str]:
        return {"x-portal-cost-micros": str(settlement.charged),
                "x-portal-cost-usd": format_usd(settlement.charged),
                "x-portal-balance-usd": format_usd(settlement.balance)}

    async def once(self, node: NodeInfo) -> HTTPResponse:
        """A non-streaming request."""
        try:
            try:
                response = await self.open(node, stream=False)
            except NODE_FAILURES as exc:
                raise self._node_failed(exc) from None
            if response.status_code != 200:
                raise node_error(response.status_code, response.content)
            content = response.content
            try:
                answer = json.loads(content)
                usage = answer.get("usage") or {}
                prompt = int(usage.get("prompt_tokens") or 0)
                completion = int(usage.get("completion_tokens") or 0)
            except (ValueError, TypeError, AttributeError):
                raise NodeFailed("The GPU node sent an answer that is not JSON.") from None
            if self.model.served_name != self.model.name and isinstance(answer, dict):
                answer["model"] = self.model.name
                content = json.dumps(answer, separators=(",", ":")).encode()
            settlement = await self.settle(prompt, completion, status=200)
            return HTTPResponse(content, content_type="application/json",
                                headers=self.cost_headers(settlement))
        except asyncio.CancelledError:
            await self.settle_shielded(0, 0, status=499, cancelled=True)
            raise
        except APIError as exc:
            await self.settle_shielded(0, 0, status=exc.status)
            raise
        finally:
            await self.settle_shielded(0, 0, status=500)
            self._release_node()

    def _node_failed(self, exc: Exception) -> NodeFailed:
        node = self.node
        if node is not None:
            metrics.UPSTREAM_ERRORS.labels(str(node.id), type(exc).__name__).inc()
        if isinstance(exc, httpx.TimeoutException):
            return NodeFailed("The GPU node did not answer in time.")
        return NodeFailed("The GPU node broke the connection.")

    async def stream(self, node: NodeInfo) -> None:
        """A streaming request: events are relayed as they arrive, never buffered."""
        relay = StreamRelay(include_usage=self.spec.include_usage,
                            continuous=self.spec.continuous_usage, n=self.spec.n,
                            prompts=self.spec.prompts,
                            rename=None if self.model.served_name == self.model.name
                            else (self.model.served_name, self.model.name))
        delivered = (0, 0)
        upstream: httpx.Response | None = None
        try:
            try:
                upstream = await self.open(node, stream=True)
            except NODE_FAILURES as exc:
                raise self._node_failed(exc) from None
            if upstream.status_code != 200:
                body = await upstream.aread()
                raise node_error(upstream.status_code, body)
            response = await self.request.respond(
                content_type="text/event-stream; charset=utf-8",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
            failure: Exception | None = None
            last_progress = time.monotonic()
            try:
                async for chunk in upstream.aiter_raw():
                    out = relay.feed(chunk)
                    if out:
                        await response.send(out)
                        delivered = (relay.prompt_tokens, relay.completion_tokens)
                        if time.monotonic() - last_progress > PROGRESS_INTERVAL:
                            last_progress = time.monotonic()
                            await self.portal.billing.progress(
                                self.reservation.request_id, *delivered)
                    if relay.done:
                        break
            except NODE_FAILURES as exc:
                failure = exc
            if relay.done and failure is None:
                settlement = await self.settle(relay.prompt_tokens, relay.completion_tokens,
                                               status=200)
                tail = f": cost_micros={settlement.charged}\n\ndata: [DONE]\n\n"
            else:
                reason = self._node_failed(failure or RuntimeError("stream ended early"))
                settlement = await self.settle(*delivered, status=502)
                error = {"error": {"message": reason.message + " The answer is incomplete; "
                                   f"you were charged for the {delivered[1]} tokens received.",
                                   "type": reason.type, "param": None, "code": reason.code}}
                tail = f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n"
            await response.send(tail.encode())
            await response.eof()
            return None
        except asyncio.CancelledError:
            await self.settle_shielded(*delivered, status=499, cancelled=True)
            raise
        except APIError as exc:
            await self.settle_shielded(0, 0, status=exc.status)
            raise
        except Exception:
            # The client went away while we were writing to it.
            await self.settle_shielded(*delivered, status=499, cancelled=True)
            raise
        finally:
            await self.settle_shielded(*delivered, status=499, cancelled=True)
            if upstream is not None:
                await upstream.aclose()
            self._release_node()
