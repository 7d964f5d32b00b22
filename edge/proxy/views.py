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
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import httpx
from sanic import Blueprint, HTTPResponse, Request

from edge import metrics
from edge.billing.money import format_usd
from edge.billing.reservations import Reservation, Settlement, worst_case_tokens
from edge.errors import APIError, ModelNotFound, ModelWarming, NodeFailed
from edge.fleet.upstream import NODE_FAILURES, node_error
from edge.identity.auth import authenticate
from edge.metering.counting import NodeTokenizer, count_answer, count_stream
from edge.metering.request_spec import Endpoint, RequestSpec, check_fits, parse_request
from edge.metering.sse import StreamRelay

if TYPE_CHECKING:
    from edge.context import PortalContext
    from edge.fleet.registry import ModelInfo, NodeInfo

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
        self.counted = "node"  # who counted the tokens settled: "node" or "edge"
        self._node_url = ""  # the node that answered, for its /tokenize
        self.settled_tokens = (0, 0)  # (prompt, completion) settled
        self._settling: asyncio.Future[Settlement] | None = None

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
            self._node_url = node.url
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
            "st": int(self.spec.stream), "cx": int(cancelled), "cnt": self.counted,
        }
        self.settlement = await self.portal.billing.settle(
            self.reservation, prompt_tokens=prompt, completion_tokens=completion, fields=fields)
        self.settled_tokens = (prompt, completion)
        self._observe(status, prompt, completion, self.settlement.charged)
        return self.settlement

    async def settle_shielded(self, prompt: int, completion: int, *, status: int,
                              cancelled: bool = False,
                              relay: StreamRelay | None = None) -> None:
        """Settle even when this task is being cancelled (the client went away).

        A settlement under way (maybe waiting for the node's /tokenize) is awaited
        rather than started twice; with a ``relay`` whose node gave no counts, the
        edge counts what was delivered.
        """
        if self.settlement is not None:
            return
        try:
            if self._settling is None or self._settling.done():
                await self._settle_apart(self._settle_stream(relay, (prompt, completion),
                                                             status=status, complete=False,
                                                             cancelled=cancelled))
            else:
                await asyncio.shield(self._settling)
        except asyncio.CancelledError:
            pass  # the task goes on; the reaper covers a worker that dies meanwhile
        except Exception:
            log.exception("settling %s failed; the reaper will settle it",
                          self.reservation.request_id)

    async def _settle_apart(self, work: Coroutine[Any, Any, Settlement]) -> Settlement:
        """Settle in a task of its own: cancelling the request does not stop it."""
        self._settling = asyncio.ensure_future(work)
        return await asyncio.shield(self._settling)

    # -- the edge's count, for nodes that report no usage ---------------------------
    async def _settle_stream(self, relay: StreamRelay | None, delivered: tuple[int, int], *,
                             status: int, complete: bool, cancelled: bool = False) -> Settlement:
        """Settle a stream: the node's counts, or the edge's when the node gave none."""
        prompt, completion = delivered
        if relay is not None and relay.needs_counting:
            self.counted = "edge"
            prompt, completion = await count_stream(
                self._tokenizer(), relay.deltas, self.spec.endpoint, self.spec.body,
                prompt_estimate=self._prompt_estimate(), delivered=completion,
                complete=complete)
        return await self.settle(prompt, completion, status=status, cancelled=cancelled)

    async def _settle_answer(self, answer: dict[str, Any]) -> Settlement:
        """Count and settle an answer that came without usage, and give it the usage."""
        self.counted = "edge"
        spec, context = self.spec, self.model.context_length
        cap = context if spec.max_tokens is None else min(spec.max_tokens, context)
        prompt, completion = await count_answer(
            self._tokenizer(), spec.endpoint, spec.body, answer,
            prompt_estimate=self._prompt_estimate(), choice_cap=cap)
        answer["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
        return await self.settle(prompt, completion, status=200)

    def _tokenizer(self) -> NodeTokenizer | None:
        if not self._node_url:
            return None
        return NodeTokenizer(self.portal.http, self._node_url, self.model.served_name)

    def _prompt_estimate(self) -> int:
        """The reservation's prompt bound (the body's bytes, capped by the context)."""
        spec = self.spec
        return worst_case_tokens(len(self.request.body), spec.max_tokens, spec.choices,
                                 self.model.context_length, spec.prompts)[0]

    def _progress_counts(self, relay: StreamRelay,
                         delivered: tuple[int, int]) -> tuple[int, int]:
        """What the reaper charges if this worker dies: the prompt bound until the node says."""
        if relay.node_counted:
            return delivered
        return self._prompt_estimate(), delivered[1]

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
                usage = answer.get("usage")
                counted = isinstance(usage, dict) and ("prompt_tokens" in usage
                                                       or "completion_tokens" in usage)
                usage = usage if counted else {}
                prompt = int(usage.get("prompt_tokens") or 0)
                completion = int(usage.get("completion_tokens") or 0)
            except (ValueError, TypeError, AttributeError):
                raise NodeFailed("The GPU node sent an answer that is not JSON.") from None
            if counted:
                settlement = await self.settle(prompt, completion, status=200)
            else:
                # A node that reports no usage (llama.cpp, old releases): the edge counts,
                # and the client gets the usage it would have had from vLLM.
                settlement = await self._settle_apart(self._settle_answer(answer))
            if not counted or self.model.served_name != self.model.name:
                answer["model"] = self.model.name
                content = json.dumps(answer, separators=(",", ":")).encode()
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
                                self.reservation.request_id,
                                *self._progress_counts(relay, delivered))
                    if relay.done:
                        break
            except NODE_FAILURES as exc:
                failure = exc
            if relay.done and failure is None:
                counts = (relay.prompt_tokens, relay.completion_tokens)
                if relay.needs_counting:
                    settlement = await self._settle_apart(
                        self._settle_stream(relay, counts, status=200, complete=True))
                else:
                    settlement = await self.settle(*counts, status=200)
                tail = f": cost_micros={settlement.charged}\n\ndata: [DONE]\n\n".encode()
                if relay.owes_usage_chunk:
                    tail = relay.usage_chunk(*self.settled_tokens) + tail
            else:
                reason = self._node_failed(failure or RuntimeError("stream ended early"))
                settlement = await self._settle_apart(
                    self._settle_stream(relay, delivered, status=502, complete=False))
                error = {"error": {"message": reason.message + " The answer is incomplete; "
                                   "you were charged for the "
                                   f"{self.settled_tokens[1]} tokens received.",
                                   "type": reason.type, "param": None, "code": reason.code}}
                tail = f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
            await response.send(tail)
            await response.eof()
            return None
        except asyncio.CancelledError:
            await self.settle_shielded(*delivered, status=499, cancelled=True, relay=relay)
            raise
        except APIError as exc:
            await self.settle_shielded(0, 0, status=exc.status)
            raise
        except Exception:
            # The client went away while we were writing to it.
            await self.settle_shielded(*delivered, status=499, cancelled=True, relay=relay)
            raise
        finally:
            await self.settle_shielded(*delivered, status=499, cancelled=True, relay=relay)
            if upstream is not None:
                await upstream.aclose()
            self._release_node()
