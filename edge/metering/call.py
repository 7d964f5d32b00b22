"""One metered call: choose a node, reserve, forward, relay, settle.

The API views, chat replies and jobs are thin adapters over :class:`MeteredCall`;
what a call costs, which node it goes to, when another node is tried, and how
its end is recorded is decided here, once:

- **Choosing.** Among the routable nodes (:meth:`Registry.ranked`), the one that
  served the call's prefix last (its *affinity*, :mod:`edge.fleet.affinity`) while
  its load is within bounds, else the least loaded; open calls counted by
  :meth:`Registry.acquire` here and by their slots over every worker.
  No node: :meth:`Metering.cold` asks for a boot (one deduplicated request,
  :mod:`edge.fleet.boots`).
- **Admitting.** A node runs at most its slots of calls at once, over every worker
  (:mod:`edge.fleet.slots`). When every node is full the call waits in the edge for
  a slot, up to its bound, then gets 429 ``nodes_busy`` (503 ``scaling_out`` while
  a node is on its way) with ``Retry-After``; the slot is given back on every
  outcome.
- **Retrying.** A node that fails before the first byte (connect error, a 5xx,
  429 or 503, anything but a 200 or the client's 400/422) is marked down for a
  cool-down and the call goes to another node of the model: at most
  ``max_attempts`` tries, within the call's deadline. When all fail the client
  gets 503 with ``Retry-After``. The reservation is made once, so the client is
  charged once whichever node answers; a call that succeeds at once pays for
  none of this.
- **Settling.** Leaving the ``async with`` block settles the reservation if
  the adapter did not, whatever ended it (the client went away, the node broke
  off, this process is stopping), through :func:`edge.metering.outcome.settle`.
  The settlement runs in a task of its own, so cancelling the request does not
  stop it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import httpx

from edge import metrics
from edge.billing.reservations import worst_case_tokens
from edge.errors import (
    APIError,
    ModelWarming,
    NodeFailed,
    NodesBusy,
    NodesUnavailable,
    NodeTimedOut,
    ScalingOut,
)
from edge.fleet.affinity import prefix_affinity
from edge.fleet.upstream import NODE_FAILURES, node_error
from edge.identity.auth import require_access
from edge.metering.answers import node_usage, usage_object
from edge.metering.counting import NodeTokenizer, count_answer, count_stream
from edge.metering.event_streams import MessagesRelay, ResponsesRelay
from edge.metering.outcome import Charge, Outcome, settle
from edge.metering.request_spec import Endpoint, check_kind
from edge.metering.sse import StreamRelay

if TYPE_CHECKING:
    from edge.billing.reservations import Billing, Reservation, Settlement
    from edge.fleet.boots import BootRequests
    from edge.fleet.registry import ModelInfo, NodeInfo, Registry
    from edge.fleet.slots import Slots
    from edge.fleet.upstream import Upstream
    from edge.identity.keys import KeyRecord
    from edge.metering.request_spec import RequestSpec

__all__ = ["Answer", "MeteredCall", "Metering", "Relayed", "new_request_id"]

log = logging.getLogger(__name__)

#: Seconds between two progress records of a stream (what it has delivered so far).
PROGRESS_INTERVAL = 1.0
#: Bytes of a refusing node's body read to tell the client why.
REFUSAL_BYTES = 64 * 1024


#: A stream in one of the relays' dialects (OpenAI's chunks, or named events).
Relay = StreamRelay | ResponsesRelay | MessagesRelay
#: The routes whose streams are OpenAI's chunks, with usage asked of the node.
_CHUNKED = (Endpoint.CHAT, Endpoint.COMPLETIONS)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


@dataclasses.dataclass(slots=True)
class Metering:
    """What metered calls share in a process: the ledger, the routing table, the nodes.

    Parameters:
      boots: asks for a boot of a cold model (None: nodes are the operator's).
      stopping: set while this process shuts down (a call cut then is ``shutdown``).
      max_attempts: nodes tried per call before the client gets 503.
      down_seconds: how long a node that refused is skipped.
      warming_retry_after: ``Retry-After`` of a cold model without a boot time.
      slots: admission control over every worker (None: nodes take what they are sent).
      admission_wait: seconds a call waits for a free slot, by default.
    """

    billing: Billing
    registry: Registry
    http: Upstream
    boots: BootRequests | None = None
    stopping: asyncio.Event | None = None
    max_attempts: int = 3
    down_seconds: float = 5.0
    warming_retry_after: float = 60.0
    slots: Slots | None = None
    admission_wait: float = 10.0

    async def wait_for_node(self, model: ModelInfo, seconds: float) -> NodeInfo | None:
        """Hold a call for a cold model until one of its nodes is routable (a boot is
        asked for first), up to ``seconds``; None: none came up, or none can."""
        if not self.registry.cooling(model):
            if not self.registry.can_boot(model):
                return None
            if self.boots is not None:
                await self.boots.request(model.name)
        return await self.registry.wait_routable(model, seconds)

    async def cold(self, model: ModelInfo) -> APIError:
        """The 503 for a model without a routable node, after asking for a boot.

        Nodes that run but refused calls a moment ago are cooling down, not cold:
        the client is told when to come back, and nothing is booted.
        """
        cooling = self.registry.cooling(model)
        if cooling:
            return NodesUnavailable(
                f"Every GPU node of the model '{model.name}' refused or failed a call a "
                f"moment ago; retry in {max(1, round(cooling))} seconds.",
                retry_after=max(1, round(cooling)))
        retry_after = model.boot_seconds or self.warming_retry_after
        if not self.registry.can_boot(model):
            return ModelWarming(
                f"No GPU node is running the model '{model.name}', and none can be started "
                "on demand: its nodes are started by the operator. Retry later, or submit it "
                "to POST /v1/jobs to be answered when one is up.", retry_after=int(retry_after))
        if self.boots is not None:
            await self.boots.request(model.name)
        return ModelWarming(
            f"The model '{model.name}' is warming up: no GPU node is running it yet. "
            f"Retry in about {int(retry_after)} seconds, or submit it to POST /v1/jobs.",
            retry_after=int(retry_after))


@dataclasses.dataclass(slots=True)
class Answer:
    """A node's whole (non-streamed) answer, with its counts."""

    body: dict[str, Any]
    content: bytes  # what the client gets (the node's bytes when nothing changed)
    prompt_tokens: int
    completion_tokens: int
    node_id: int


@dataclasses.dataclass(slots=True)
class Relayed:
    """How a relayed stream ended."""

    outcome: Outcome
    settlement: Settlement
    prompt_tokens: int
    completion_tokens: int
    failure: NodeFailed | None  # why the node's stream is incomplete


class MeteredCall:
    """One call to a node of ``model`` on behalf of a key, metered from end to end.

    Use as ``async with``: the block opens the call (:meth:`open`), reads or
    relays it (:meth:`fetch`, :meth:`relay`) and may settle it (:meth:`finish`);
    leaving the block settles what is left unsettled and frees the node.

    Parameters:
      endpoint: the usage row's endpoint and metrics label (``chat``,
        ``chat-room``, ``job-chat``, ...).
      body: the request's JSON as the client sent it (it bounds the prompt).
      settles: False for a call whose settlement is someone else's (a job's:
        result first, charge second, by :mod:`edge.jobs.store`).
      deadline: monotonic time after which no other node is tried.
      affinity: the prefix the call shares with others (a chat room's); by default
        drawn from the body's prompt (:func:`edge.fleet.affinity.prefix_affinity`).
      slot_wait: seconds the call may wait for a free slot (None: the metering's
        ``admission_wait``; 0: refused at once, as a job is, to be tried later).
      on_busy: awaited once when the call starts waiting for a slot (chat says so).

    Raises:
      InvalidRequest: ``model`` is of a kind that does not serve ``spec``'s route
        (400 ``model_kind_mismatch``).
    """

    def __init__(self, metering: Metering, *, model: ModelInfo, spec: RequestSpec,
                 body: bytes, request_id: str, endpoint: str, started: float | None = None,
                 settles: bool = True, deadline: float | None = None,
                 affinity: int | None = None, slot_wait: float | None = None,
                 on_busy: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.metering = metering
        self.model = model
        self.spec = spec
        self.body = body
        check_kind(spec, model.kind, model.name)
        self.request_id = request_id
        self.endpoint = endpoint
        self.started = time.perf_counter() if started is None else started
        self.settles = settles
        self.deadline = deadline
        self.affinity = affinity if affinity is not None or spec.endpoint.free \
            else prefix_affinity(spec.body)
        self.slot_wait = metering.admission_wait if slot_wait is None else slot_wait
        self.on_busy = on_busy
        self.charge: Charge | None = None
        self.authorized: KeyRecord | None = None  # the key :meth:`authorize` let through
        self.node: NodeInfo | None = None  # the node the call is open on
        self.answered_by: NodeInfo | None = None  # the node that answered, for /tokenize
        self.upstream: httpx.Response | None = None
        self.relay_state: Relay | None = None
        self.settlement: Settlement | None = None
        self.counted_by: Literal["node", "edge"] = "node"
        self.counts = (0, 0)  # (prompt, completion) delivered or answered so far
        self._settling: asyncio.Future[Settlement] | None = None

    # -- choosing and reserving --------------------------------------------------------
    @property
    def route(self) -> str:
        """The route a key's allow-list names this call by (:data:`edge.identity.keys.ROUTES`)."""
        endpoint = self.endpoint
        if endpoint.startswith("job-"):
            return "jobs"
        if endpoint == "chat-room":
            return "chat"
        if endpoint == "detokenize":
            return "tokenize"
        return "chat/completions" if endpoint == "chat" else endpoint

    def authorize(self, key: KeyRecord) -> None:
        """Refuse a key whose models or routes leave this call out (403), before any
        node is chosen, booted or reserved; :meth:`reserve` asks it for a key not asked
        about yet."""
        require_access(key, route=self.route, model=self.model.name)
        self.authorized = key

    def choose(self) -> NodeInfo | None:
        """The node this call would go to now, or None (the model is cold)."""
        return self.metering.registry.pick(self.model)

    def worst_case(self) -> tuple[int, int]:
        spec = self.spec
        bound = len(self.body) if spec.prompt_bound is None else spec.prompt_bound
        return worst_case_tokens(bound, spec.max_tokens, spec.choices,
                                 self.model.context_length, spec.prompts)

    async def reserve(self, key: KeyRecord, node: NodeInfo | None = None, *,
                      ttl_ms: int | None = None) -> Reservation:
        """Hold the call's worst-case cost on ``key`` (raises 403, or the billing's 402/429)."""
        if self.authorized is not key:
            self.authorize(key)
        model, spec = self.model, self.spec
        prompt, completion = self.worst_case()
        prices = (model.input_price, model.output_price)
        if spec.endpoint.free:  # rate-limited like any call, for nothing
            prompt, completion, prices = 0, 0, (0, 0)
        reservation = await self.metering.billing.reserve(
            key, self.request_id, prompt_tokens=prompt, completion_tokens=completion,
            input_price=prices[0], output_price=prices[1],
            meta={"model": model.name, "node": node.id if node is not None else "",
                  "ep": self.endpoint, "st": int(spec.stream)}, ttl_ms=ttl_ms)
        self.charge = Charge.of(reservation)
        return reservation

    def upstream_body(self) -> bytes:
        """The body the node gets: the served model name, and usage on every chunk."""
        spec, model = self.spec, self.model
        usage_options = spec.stream and spec.endpoint in _CHUNKED
        if not usage_options and model.served_name == model.name:
            return self.body
        body = dict(spec.body)
        body["model"] = model.served_name
        if usage_options:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            options["continuous_usage_stats"] = True
            body["stream_options"] = options
        return json.dumps(body, separators=(",", ":")).encode()

    # -- forwarding, with retries before the first byte --------------------------------
    async def open(self, node: NodeInfo | None = None) -> httpx.Response:
        """Send the request to ``node`` (or the best one), then to others while they refuse.

        Returns the first 200's response, its body read unless the call streams.

        Raises:
          InvalidRequest: the node refused the request itself (400/422), with its
            message, ``code`` and ``param``.
          NodesUnavailable: every node tried refused or failed before the first byte
            (503 with ``Retry-After``), or none is routable.
          NodeTimedOut: the node did not answer in time.
          NodeFailed: the node broke off while sending a non-streamed answer.
        """
        metering = self.metering
        registry = metering.registry
        payload = self.upstream_body()
        path = self.spec.endpoint.path
        stream = self.spec.stream
        tried: list[int] = []
        retry_after = metering.down_seconds
        reason = "No GPU node of this model is routable."
        node = await self._admit(node, tried)
        while node is not None:
            tried.append(node.id)
            self.node = node
            registry.acquire(node)
            try:
                response = await metering.http.post(node.url + path, payload)
                if response.status_code == 200:
                    self.upstream = response
                    self.answered_by = node
                    if not stream:
                        await self._read_answer(response)
                    return response
                body = await _read_some(response)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    reason = self._refused(node, "connect")
                else:
                    self._release()
                    metrics.UPSTREAM_ERRORS.labels(str(node.id), "timeout").inc()
                    raise NodeTimedOut("The GPU node did not answer in time.") from None
            except NODE_FAILURES as exc:
                reason = self._refused(node, "connect" if isinstance(exc, httpx.ConnectError)
                                       else type(exc).__name__)
            except BaseException:
                self._release()
                raise
            else:
                status = response.status_code
                if status in (400, 422) or (status == 404 and self.spec.stateful):
                    self._release()  # the client's mistake, or state only it can fix
                    raise node_error(status, body)
                retry_after = max(retry_after, _retry_after(response))
                reason = node_error(status, body).message
                self._refused(node, str(status), cool_down=retry_after)
            if len(tried) >= metering.max_attempts or self._past_deadline():
                break
            node = await self._admit(None, tried)
        raise NodesUnavailable(
            f"No GPU node of the model '{self.model.name}' could take the request now "
            f"({reason.rstrip('.')}); retry in {int(retry_after)} seconds.",
            retry_after=int(retry_after))

    async def _admit(self, preferred: NodeInfo | None, tried: list[int]) -> NodeInfo | None:
        """The node the call goes to next, with a slot taken on it; None: no routable
        node is left. ``preferred`` (the adapter's :meth:`choose`) goes first.

        Raises:
          NodesBusy, ScalingOut: every node stayed full for the call's wait.
        """
        metering = self.metering
        candidates = metering.registry.ranked(self.model, exclude=tried)
        if preferred is not None and preferred in candidates:
            candidates.remove(preferred)
            candidates.insert(0, preferred)
        slots = metering.slots
        if slots is None or self.spec.endpoint.free or not candidates:
            return candidates[0] if candidates else None
        node = await slots.take(candidates, self.request_id, self.affinity)
        if node is not None:
            return node
        return await self._wait_for_slot(slots, tried)

    async def _wait_for_slot(self, slots: Slots, tried: list[int]) -> NodeInfo | None:
        """Hold the call until a node of its model has a free slot, or its wait is over."""
        registry = self.metering.registry
        until = time.monotonic() + self.slot_wait
        if self.deadline is not None:
            until = min(until, self.deadline)
        if until > time.monotonic():
            metrics.ADMISSION_WAITS.labels(self.model.name).inc()
            await slots.hold_back(self.model.name, self.request_id, until)
            try:
                if self.on_busy is not None:
                    await self.on_busy()
                pause = 0.01
                while (left := until - time.monotonic()) > 0:
                    await asyncio.sleep(min(pause, left))
                    pause = min(pause * 2, 0.2)
                    candidates = registry.ranked(self.model, exclude=tried)
                    if not candidates:
                        return None
                    node = await slots.take(candidates, self.request_id, self.affinity)
                    if node is not None:
                        return node
            finally:
                slots.let_go(self.request_id)
        metrics.ADMISSION_REFUSED.labels(self.model.name).inc()
        if registry.scaling_out(self.model):
            retry_after = max(1, round((self.model.boot_seconds or 30) / 4))
            raise ScalingOut(
                f"Every GPU node of the model '{self.model.name}' is busy and another is "
                f"starting; retry in {retry_after} seconds.", retry_after=retry_after)
        raise NodesBusy(
            f"Every GPU node of the model '{self.model.name}' is busy with as many "
            "requests as it takes; retry in a moment.", retry_after=2)

    async def _read_answer(self, response: httpx.Response) -> None:
        """Read a whole answer; a node that breaks off now is not tried again."""
        try:
            await response.aread()
        except NODE_FAILURES as exc:
            assert self.answered_by is not None
            metrics.UPSTREAM_ERRORS.labels(str(self.answered_by.id), type(exc).__name__).inc()
            raise _failure(exc) from None

    def _refused(self, node: NodeInfo, kind: str, *, cool_down: float | None = None) -> str:
        """A node refused before the first byte: free it, skip it for a while."""
        self._release()
        self.metering.registry.mark_down(node, cool_down or self.metering.down_seconds)
        metrics.UPSTREAM_ERRORS.labels(str(node.id), kind).inc()
        log.warning("node %s refused %s (%s); trying another", node.id, self.request_id, kind)
        return "the node could not be reached" if kind == "connect" else f"HTTP {kind}"

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _release(self) -> None:
        node = self.node
        if node is not None:
            self.metering.registry.release(node)
            self.node = None
        slots = self.metering.slots
        if slots is not None:
            slots.give(self.request_id)

    # -- a whole answer ------------------------------------------------------------------
    async def fetch(self) -> Answer:
        """Open the call and read the node's answer, counting it if the node did not.

        The counts are taken in a task of its own: a client that goes away meanwhile
        is still charged for an answer the node gave (:meth:`__aexit__`).
        """
        response = self.upstream or await self.open()
        content = response.content
        endpoint = self.spec.endpoint
        try:
            answer = json.loads(content)
            counted = node_usage(endpoint, answer)
        except (ValueError, TypeError, AttributeError):
            raise NodeFailed("The GPU node sent an answer that is not JSON.") from None
        if counted is None:
            # A node that reports no usage (llama.cpp, old releases): the edge counts,
            # and the client gets the usage it would have had from vLLM.
            prompt, completion = await self._apart(self._count_answer(answer))
            answer["usage"] = usage_object(endpoint, prompt, completion)
        else:
            prompt, completion = counted
        self.counts = (prompt, completion)
        if counted is None or self.model.served_name != self.model.name:
            answer["model"] = self.model.name
            content = json.dumps(answer, separators=(",", ":")).encode()
        node = self.answered_by
        return Answer(answer, content, prompt, completion, node.id if node else 0)

    async def _count_answer(self, answer: dict[str, Any]) -> tuple[int, int]:
        self.counted_by = "edge"
        spec, context = self.spec, self.model.context_length
        cap = context if spec.max_tokens is None else min(spec.max_tokens, context)
        return await count_answer(self._tokenizer(), spec.endpoint, spec.body, answer,
                                  prompt_estimate=self.worst_case()[0], choice_cap=cap)

    # -- a stream ------------------------------------------------------------------------
    def stream_relay(self) -> Relay:
        """The relay of this call's stream (made once), in its route's dialect."""
        if self.relay_state is None:
            spec, model = self.spec, self.model
            rename = None if model.served_name == model.name else (model.served_name,
                                                                   model.name)
            prices = (model.input_price, model.output_price)
            if spec.endpoint is Endpoint.RESPONSES:
                self.relay_state = ResponsesRelay(rename=rename, prices=prices)
            elif spec.endpoint is Endpoint.MESSAGES:
                self.relay_state = MessagesRelay(rename=rename, prices=prices)
            else:
                self.relay_state = StreamRelay(
                    include_usage=spec.include_usage, continuous=spec.continuous_usage,
                    n=spec.n, prompts=spec.prompts, rename=rename, prices=prices)
        return self.relay_state

    async def relay(self, send: Callable[[bytes], Awaitable[Any]]) -> Relayed:
        """Pass the node's events to ``send`` as they come, then settle.

        ``send`` raising means the receiver went away: the call is then settled as
        cancelled, for what was delivered, on leaving the block.
        """
        upstream = self.upstream or await self.open()
        relay = self.stream_relay()
        billing = self.metering.billing
        failure: Exception | None = None
        last_progress = time.monotonic()
        try:
            async for chunk in upstream.aiter_raw():
                out = relay.feed(chunk)
                if out:
                    await send(out)
                    self.counts = (relay.prompt_tokens, relay.completion_tokens)
                    if time.monotonic() - last_progress > PROGRESS_INTERVAL:
                        last_progress = time.monotonic()
                        await billing.progress(self.request_id, *self._progress_counts())
                if relay.done:
                    break
        except NODE_FAILURES as exc:
            failure = exc
        if relay.done and failure is None:
            counts = (relay.prompt_tokens, relay.completion_tokens)
            settlement = await self._apart(self._settle_stream(Outcome.DONE, counts,
                                                               complete=True))
            return Relayed(Outcome.DONE, settlement, *self.counts, None)
        reason = _failure(failure or RuntimeError("stream ended early"))
        outcome = Outcome.TIMED_OUT if isinstance(reason, NodeTimedOut) else Outcome.NODE_FAILED
        if self.answered_by is not None:
            kind = "timeout" if outcome is Outcome.TIMED_OUT else "stream"
            metrics.UPSTREAM_ERRORS.labels(str(self.answered_by.id), kind).inc()
        settlement = await self._apart(self._settle_stream(outcome, self.counts,
                                                           complete=False))
        return Relayed(outcome, settlement, *self.counts, reason)

    def _progress_counts(self) -> tuple[int, int]:
        """What the reaper charges if this process dies: the prompt bound until the node says."""
        relay = self.stream_relay()
        if relay.node_counted:
            return self.counts
        return self.worst_case()[0], self.counts[1]

    async def _settle_stream(self, outcome: Outcome, delivered: tuple[int, int], *,
                             complete: bool) -> Settlement:
        """Settle a stream: the node's counts, or the edge's when the node gave none."""
        relay = self.relay_state
        if relay is not None and relay.needs_counting:
            self.counted_by = "edge"
            delivered = await count_stream(
                self._tokenizer(), relay.deltas, self.spec.endpoint, self.spec.body,
                prompt_estimate=self.worst_case()[0], delivered=delivered[1],
                complete=complete)
        return await self.finish(outcome, *delivered)

    def _tokenizer(self) -> NodeTokenizer | None:
        node = self.answered_by
        if node is None:
            return None
        return NodeTokenizer(self.metering.http, node.url, self.model.served_name)

    # -- settling --------------------------------------------------------------------------
    async def finish(self, outcome: Outcome, prompt_tokens: int = 0,
                     completion_tokens: int = 0, *, status: int | None = None) -> Settlement:
        """Settle the reservation for what was served (once; later calls return it)."""
        if self.settlement is not None:
            return self.settlement
        assert self.charge is not None, "finish() before reserve()"
        node = self.answered_by
        self.counts = (prompt_tokens, completion_tokens)
        self.settlement = await settle(
            self.metering.billing, self.charge, outcome, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, model=self.model.name,
            node_id=node.id if node is not None else None, endpoint=self.endpoint,
            latency_ms=int((time.perf_counter() - self.started) * 1000),
            streamed=self.spec.stream, counted_by=self.counted_by, status=status)
        return self.settlement

    async def _apart(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run ``work`` in a task of its own: cancelling the request does not stop it."""
        self._settling = asyncio.ensure_future(work)
        return await asyncio.shield(self._settling)

    async def __aenter__(self) -> MeteredCall:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.settles and self.charge is not None and self.settlement is None:
                await self._settle_on_exit(exc)
        finally:
            self._release()
            if self.upstream is not None:
                await self.upstream.aclose()

    async def _settle_on_exit(self, exc: BaseException | None) -> None:
        """Settle a call its adapter left unsettled, by what ended it."""
        status = None
        if isinstance(exc, asyncio.CancelledError):
            stopping = self.metering.stopping
            outcome = Outcome.SHUTDOWN if stopping is not None and stopping.is_set() \
                else Outcome.CANCELLED
        elif isinstance(exc, NodesUnavailable):
            outcome = Outcome.UNAVAILABLE
        elif isinstance(exc, NodeTimedOut):
            outcome = Outcome.TIMED_OUT
        elif isinstance(exc, NodeFailed):
            outcome = Outcome.NODE_FAILED
        elif isinstance(exc, APIError):
            outcome, status = Outcome.REFUSED, exc.status
        elif exc is not None and self.relay_state is not None:
            outcome = Outcome.CANCELLED  # writing to the client failed: it went away
        else:
            outcome = Outcome.FAILED
        try:
            if self._settling is not None and not self._settling.done():
                await asyncio.shield(self._settling)  # counting or settling already
            if self.settlement is None:
                work = self._settle_stream(outcome, self.counts, complete=False) \
                    if self.relay_state is not None else \
                    self.finish(outcome, *self.counts, status=status)
                await self._apart(work)
        except asyncio.CancelledError:
            pass  # the task goes on; the reaper covers a process that dies meanwhile
        except Exception:
            log.exception("settling %s failed; the reaper will settle it", self.request_id)


async def _read_some(response: httpx.Response) -> bytes:
    """The start of a refusing node's body (enough for its error message)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= REFUSAL_BYTES:
            break
    await response.aclose()
    return b"".join(chunks)


def _retry_after(response: httpx.Response) -> float:
    """The node's ``Retry-After`` in seconds (0 when it gave none we can read), capped."""
    try:
        return min(60.0, max(0.0, float(response.headers.get("retry-after", 0))))
    except ValueError:
        return 0.0


def _failure(exc: BaseException) -> NodeFailed:
    if isinstance(exc, httpx.TimeoutException):
        return NodeTimedOut("The GPU node did not answer in time.")
    return NodeFailed("The GPU node broke the connection.")

