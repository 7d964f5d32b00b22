"""A model's reply in a room: context, credit, the stream, the charge.

The worker that received the asking message runs the reply: it builds the
conversation (trimmed to the model's context), reserves the worst case on the
asker's key exactly like an API call, streams from a node while publishing each
piece to the room, and settles for the tokens generated, also when the asker
stops it or the node breaks. A cold model first says it is warming up, asks for
a boot, and answers when a node is up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from edge.chat.protocol import event
from edge.chat.turns import visible_history
from edge.db.models import ChatMessage
from edge.errors import APIError, ModelWarming
from edge.fleet.affinity import room_affinity
from edge.metering.call import MeteredCall, new_request_id
from edge.metering.request_spec import Endpoint, parse_request

if TYPE_CHECKING:
    from edge.billing.reservations import Settlement
    from edge.chat.hub import RoomHub
    from edge.context import PortalContext
    from edge.fleet.registry import ModelInfo, NodeInfo
    from edge.identity.keys import KeyRecord

__all__ = ["ReplyRunner", "build_context", "message_view"]

log = logging.getLogger(__name__)

#: Completion tokens of a reply when the asker sets no max_tokens.
DEFAULT_MAX_TOKENS = 512
#: Messages of a room read to build a reply's context.
CONTEXT_MESSAGES = 60
#: Seconds between two looks for a node of a warming model.
WARM_POLL = 0.5
#: Seconds a reply waits for a free slot when every node is busy: a person who sees
#: "busy" in the room waits longer than an SDK's retry would.
SLOT_WAIT = 120.0


def message_view(message: ChatMessage) -> dict[str, Any]:
    """A message as clients get it (``message`` events, history, exports)."""
    reply = message.role == "assistant"
    return {"id": message.id, "role": message.role, "who": message.author,
            "text": message.content, "model": message.model or None,
            "reply_to": message.reply_to, "status": message.status,
            "variant_of": message.variant_of, "current": message.current,
            "usage": {"prompt_tokens": message.prompt_tokens,
                      "completion_tokens": message.completion_tokens,
                      "total_tokens": message.prompt_tokens + message.completion_tokens}
            if reply else None,
            "cost": f"{message.cost / 1_000_000:.6f}" if reply else None,
            "cost_micros": message.cost if reply else None,
            "time": message.created_at.isoformat()}


def estimate_tokens(text: str) -> int:
    """A generous guess (a token is rarely under 3 bytes), to trim context safely."""
    return len(text.encode()) // 3 + 4


def build_context(history: list[ChatMessage], system: str, budget: int) -> list[dict]:
    """The messages sent to the model: system prompt, then the newest turns that fit.

    Parameters:
      history: the room's messages, oldest first, ending with the one to answer.
      system: the system prompt ("" for none).
      budget: tokens the prompt may use (context length minus the reply's).
    """
    people = {m.author for m in history if m.role == "user"}
    turns: list[dict] = []
    used = estimate_tokens(system) if system else 0
    for message in reversed(history):
        if message.role == "assistant":
            if not message.content:
                continue
            turn = {"role": "assistant", "content": message.content}
        else:
            text = message.content if len(people) < 2 else f"{message.author}: {message.content}"
            turn = {"role": "user", "content": text}
        cost = estimate_tokens(turn["content"])
        if turns and used + cost > budget:
            break
        turns.append(turn)
        used += cost
    turns.reverse()
    return ([{"role": "system", "content": system}] if system else []) + turns


class ReplyRunner:
    """The replies this worker is generating, by reply id, so they can be stopped."""

    def __init__(self, portal: PortalContext, hub: RoomHub) -> None:
        self.portal = portal
        self.hub = hub
        self.active: dict[int, tuple[asyncio.Task[None], int]] = {}
        self.finished: set[int] = set()  # replies being finished right now
        self.tasks: set[asyncio.Task[None]] = set()
        hub.control["_stop"] = self._on_stop

    def _on_stop(self, room: str, message: dict[str, Any]) -> None:
        entry = self.active.get(message.get("reply_id", -1))
        if entry is not None and entry[1] == message.get("key"):
            entry[0].cancel()

    async def request_stop(self, room: str, reply_id: int | None, key_id: int) -> None:
        """Stop a reply wherever it runs (only its asker may)."""
        if reply_id is None:
            return
        await self.hub.publish(room, json.dumps(
            {"type": "_stop", "reply_id": reply_id, "key": key_id}, separators=(",", ":")))

    def start(self, room: str, asker: KeyRecord, question: ChatMessage, model: ModelInfo,
              *, system: str, params: dict[str, Any], variant_of: int | None = None) -> None:
        """Answer ``question`` (``variant_of``: as another alternative of that reply)."""
        task = asyncio.create_task(self._run(room, asker, question, model, system, params,
                                             variant_of))
        self.tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self.tasks.discard)

    async def _run(self, room: str, asker: KeyRecord, question: ChatMessage,
                   model: ModelInfo, system: str, params: dict[str, Any],
                   variant_of: int | None) -> None:
        reply = await ChatMessage.create(room_id=question.room_id, role="assistant",
                                         author=model.name, key_id=asker.id, model=model.name,
                                         reply_to=question.id, status="streaming",
                                         variant_of=variant_of)
        await self.hub.publish(room, event("message", **message_view(reply)))
        task = asyncio.current_task()
        assert task is not None
        self.active[reply.id] = (task, asker.id)
        try:
            await self._generate(room, asker, question, reply, model, system, params)
        except asyncio.CancelledError:  # stopped before its stream began
            await asyncio.shield(self._finish(room, reply, asker, "stopped", None, (0, 0)))
        except Exception:
            log.exception("chat reply %s failed", reply.id)
            await self._finish(room, reply, asker, "failed", None, (0, 0),
                               error="The reply failed.")
        finally:
            self.active.pop(reply.id, None)
            self.finished.discard(reply.id)

    async def _generate(self, room: str, asker: KeyRecord, question: ChatMessage,
                        reply: ChatMessage, model: ModelInfo, system: str,
                        params: dict[str, Any]) -> None:
        portal = self.portal
        node = await self._node(room, model, reply)
        if node is None:
            return
        max_tokens = min(int(params.get("max_tokens") or DEFAULT_MAX_TOKENS),
                         model.context_length)
        history = await visible_history(question.room_id, question.id, CONTEXT_MESSAGES)
        budget = max(64, model.context_length - max_tokens - 16)
        messages = build_context(history, system, budget)
        body = {"model": model.served_name, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True},
                **params, "max_tokens": max_tokens}
        payload = json.dumps(body, separators=(",", ":")).encode()
        async def busy() -> None:
            await self.hub.publish(room, event(
                "status", kind="busy", reply_id=reply.id, model=model.name,
                message=f"Every {model.name} node is busy; the reply follows when one "
                        "is free."))

        call = MeteredCall(portal.metering, model=model,
                           spec=parse_request(payload, Endpoint.CHAT), body=payload,
                           request_id=new_request_id(), endpoint="chat-room",
                           affinity=room_affinity(room), slot_wait=SLOT_WAIT, on_busy=busy)
        try:
            await call.reserve(asker, node)
        except APIError as exc:
            await self._finish(room, reply, asker, "failed", None, (0, 0), error=exc.message)
            return
        reply.request_id = call.request_id
        await self._stream(room, asker, reply, call, node)

    async def _node(self, room: str, model: ModelInfo, reply: ChatMessage) -> NodeInfo | None:
        """A routable node; for a cold model, say so, ask for a boot and wait for one."""
        portal = self.portal
        node = portal.registry.pick(model)
        if node is not None:
            return node
        warming = await portal.metering.cold(model)
        if not isinstance(warming, ModelWarming):  # its nodes refuse for a moment
            await self._finish(room, reply, None, "failed", None, (0, 0),
                               error=warming.message)
            return None
        if not portal.registry.can_boot(model):
            await self._finish(room, reply, None, "failed", None, (0, 0),
                               error=f"No node is running {model.name}, and none can be "
                                     "started on demand: its nodes are started by the "
                                     "operator.")
            return None
        eta = int(warming.retry_after or 0)
        await self.hub.publish(room, event(
            "status", kind="warming", reply_id=reply.id, model=model.name, eta=eta,
            message=f"{model.name} is warming up; the reply follows when its node is up "
                    f"(about {eta} s)."))
        deadline = time.monotonic() + portal.settings.boot_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(WARM_POLL)
            node = portal.registry.pick(model)
            if node is not None:
                await self.hub.publish(room, event("status", kind="ready", reply_id=reply.id,
                                                   model=model.name, message="Node is up."))
                return node
        await self._finish(room, reply, None, "failed", None, (0, 0),
                           error=f"{model.name} did not come up in time.")
        return None

    async def _stream(self, room: str, asker: KeyRecord, reply: ChatMessage,
                      call: MeteredCall, node: NodeInfo) -> None:
        """Relay the node's stream to the room; the call settles whatever ends it."""
        pieces: list[str] = []
        status, error = "done", None

        async def send(events: bytes) -> None:
            text = self._pieces(events)
            if text:
                pieces.append(text)
                await self.hub.publish(room, event("delta", reply_id=reply.id, text=text))

        try:
            async with call:
                await call.open(node)
                relayed = await call.relay(send)
            if relayed.failure is not None:
                status, error = "failed", relayed.failure.message
                await self.hub.publish(room, event("status", kind="node_lost",
                                                   reply_id=reply.id, message=error))
        except asyncio.CancelledError:
            status = "stopped"
        except APIError as exc:  # every node refused, or the node refused the request
            status, error = "failed", exc.message
        reply.content = "".join(pieces)
        await asyncio.shield(self._finish(room, reply, asker, status, call.settlement,
                                          call.counts, error=error))

    @staticmethod
    def _pieces(events: bytes) -> str:
        text = []
        for line in events.split(b"\n\n"):
            if not line.startswith(b"data: {"):
                continue
            try:
                choices = json.loads(line[6:]).get("choices") or []
            except ValueError:
                continue
            for choice in choices:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    text.append(piece)
        return "".join(text)

    async def _finish(self, room: str, reply: ChatMessage, asker: KeyRecord | None,
                      status: str, settlement: Settlement | None,
                      counts: tuple[int, int], *, error: str | None = None) -> None:
        """Store and announce the end of a reply (once), with what its call charged."""
        if reply.id in self.finished:
            return
        self.finished.add(reply.id)
        cost, balance = 0, None
        prompt, completion = counts
        if settlement is not None:
            cost, balance = settlement.charged, settlement.balance
        reply.status = status
        reply.prompt_tokens, reply.completion_tokens, reply.cost = prompt, completion, cost
        await reply.save(update_fields=["content", "status", "prompt_tokens",
                                        "completion_tokens", "cost", "request_id"])
        fields: dict[str, Any] = {
            "reply_id": reply.id, "status": status, "text": reply.content,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
            "cost": f"{cost / 1_000_000:.6f}", "cost_micros": cost,
            "payer": asker.id if asker else None, "balance": balance,
        }
        if error:
            fields["error"] = error
        await self.hub.publish(room, event("done", **fields))
