"""Relays the streams of named events: OpenAI's Responses and Anthropic's Messages.

Both frame each event as ``event: <type>`` then ``data: <json>``, and the client's
SDK reads that framing, so events pass on byte for byte: only the served model's
name is replaced by the public one. What billing needs is read on the way:

- **Responses** (vLLM's ``/v1/responses``): one ``*.delta`` event per generated
  piece, and the usage in the final ``response.completed`` (or ``.incomplete``,
  ``.failed``). A cut stream has no usage: the delta events delivered are the
  output, and the prompt is counted by the node's tokenizer
  (:mod:`edge.metering.counting`), else its bound.
- **Messages** (vLLM's ``/v1/messages``): ``message_start`` carries the input
  tokens, ``message_delta`` the output tokens, ``message_stop`` ends it; a cut
  stream is charged its input and the ``content_block_delta`` events delivered.

The final usage event gets ``usage.cost`` (:mod:`edge.metering.cost`); the stream
ends as the node ended it (``data: [DONE]`` only if it sent one), after an SSE
comment with the cost that SDKs ignore. A stream the node broke ends with an
``error`` event in the route's shape.
"""

from __future__ import annotations

import json
from typing import Any

from edge.billing.money import token_cost
from edge.metering.cost import with_cost
from edge.metering.counting import DeltaCounter

__all__ = ["MessagesRelay", "NamedEventRelay", "ResponsesRelay"]

_DONE = b"data: [DONE]"
_EVENT = b"event: "
_DATA = b"data: "
_SEQUENCE = b'"sequence_number":'


class NamedEventRelay:
    """What both relays share: framing, renaming, counting delivered deltas.

    Parameters:
      rename: ``(served name, public name)`` when they differ.
      prices: micro-dollars per 1M input and output tokens, for ``usage.cost``.
    """

    #: Event types that end the stream.
    terminal: frozenset[bytes] = frozenset()

    def __init__(self, *, rename: tuple[str, str] | None = None,
                 prices: tuple[int, int] | None = None) -> None:
        self._rename = None
        if rename is not None:
            self._rename = tuple(json.dumps({"model": name}, separators=(",", ":"))[1:-1]
                                 .encode() for name in rename)
        self.prices = prices
        self._buffer = b""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.node_counted = False  # the node said the tokens
        self.done = False  # the node ended the stream
        self.node_done_marker = False  # ... and sent data: [DONE]
        self.delivered = 0  # delta events passed on
        self.final = False  # the node said the output's tokens (its last usage)
        self.deltas = DeltaCounter()  # what the edge counts when the node says nothing

    @property
    def needs_counting(self) -> bool:
        """The stream ended without the node's counts: the edge counts it."""
        return not self.node_counted

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the node; return the complete events to send on (maybe empty)."""
        buffer = self._buffer + data
        if b"\r" in buffer:  # CRLF framing (a CR may end one read and its LF begin the next)
            buffer = buffer.replace(b"\r\n", b"\n")
        if b"\n\n" not in buffer:
            self._buffer = buffer
            return b""
        *events, self._buffer = buffer.split(b"\n\n")
        out = []
        for event in events:
            event = event.strip(b"\n")
            if not event:
                continue
            if event == _DONE:
                self.node_done_marker = self.done = True
                continue
            event = self._take(_event_type(event), event)
            if self._rename is not None:
                event = event.replace(self._rename[0], self._rename[1], 1)
            out.append(event)
            out.append(b"\n\n")
        return b"".join(out)

    def _take(self, kind: bytes, event: bytes) -> bytes:
        """Read one event (its type given); returns it, maybe with the cost added."""
        raise NotImplementedError

    def _count_delta(self) -> None:
        """One more piece of output delivered: until the node counts the output, the
        pieces delivered are its tokens (one each, as vLLM sends them)."""
        self.delivered += 1
        self.deltas.counts[0] = self.delivered
        if not self.final:
            self.completion_tokens = max(self.completion_tokens, self.delivered)

    def _priced(self, event: bytes) -> bytes:
        if self.prices is None:
            return event
        return with_cost(event, token_cost(self.prompt_tokens, self.completion_tokens,
                                           *self.prices))

    def end(self, charged: int, prompt: int = 0, completion: int = 0) -> bytes:
        """The bytes after the last event of a complete stream."""
        return f": cost_micros={charged}\n\n".encode() + \
            (b"data: [DONE]\n\n" if self.node_done_marker else b"")

    def broken(self, message: str, code: str, kind: str = "") -> bytes:
        """The event that ends a stream the node broke, in the route's shape."""
        raise NotImplementedError


class ResponsesRelay(NamedEventRelay):
    """OpenAI's Responses stream, as vLLM serves it."""

    terminal = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sequence = -1  # the last event's sequence_number

    def _take(self, kind: bytes, event: bytes) -> bytes:
        at = event.rfind(_SEQUENCE)
        if at != -1:
            self.sequence = _leading_int(event, at + len(_SEQUENCE), self.sequence)
        if kind.endswith(b".delta"):
            self._count_delta()
            return event
        if kind in self.terminal:
            self.done = True
            usage = (_data(event).get("response") or {}).get("usage")
            if isinstance(usage, dict) and ("input_tokens" in usage or
                                            "output_tokens" in usage):
                self.node_counted = self.final = True
                self.prompt_tokens = _count(usage.get("input_tokens"))
                self.completion_tokens = _count(usage.get("output_tokens"))
                return self._priced(event)
        return event

    def broken(self, message: str, code: str, kind: str = "") -> bytes:
        error = {"type": "error", "code": code, "message": message, "param": None,
                 "sequence_number": self.sequence + 1}
        return b"event: error\ndata: " + json.dumps(error, separators=(",", ":")).encode() + \
            b"\n\n"


class MessagesRelay(NamedEventRelay):
    """Anthropic's Messages stream, as vLLM serves it."""

    terminal = frozenset({b"message_stop"})

    def _take(self, kind: bytes, event: bytes) -> bytes:
        if kind == b"content_block_delta":
            self._count_delta()
            return event
        if kind == b"message_start":
            usage = (_data(event).get("message") or {}).get("usage")
            if isinstance(usage, dict) and "input_tokens" in usage:
                self.node_counted = True
                self.prompt_tokens = _count(usage.get("input_tokens"))
                self.completion_tokens = max(self.delivered, _count(usage.get("output_tokens")))
        elif kind == b"message_delta":
            usage = _data(event).get("usage")
            if isinstance(usage, dict) and "output_tokens" in usage:
                self.node_counted = self.final = True
                if usage.get("input_tokens") is not None:
                    self.prompt_tokens = _count(usage.get("input_tokens"))
                self.completion_tokens = _count(usage.get("output_tokens"))
                return self._priced(event)
        elif kind in self.terminal:
            self.done = True
        return event

    def broken(self, message: str, code: str, kind: str = "") -> bytes:
        kind = "timeout_error" if code == "upstream_timeout" else "api_error"
        error = {"type": "error", "error": {"type": kind, "message": message}}
        return b"event: error\ndata: " + json.dumps(error, separators=(",", ":")).encode() + \
            b"\n\n"


def _event_type(event: bytes) -> bytes:
    """The ``event:`` line's type, else the data's ``type`` (a node may send only data)."""
    if event.startswith(_EVENT):
        end = event.find(b"\n")
        return event[len(_EVENT):end if end != -1 else None].strip()
    kind = _data(event).get("type")
    return kind.encode() if isinstance(kind, str) else b""


def _data(event: bytes) -> dict[str, Any]:
    """The JSON of an event's ``data:`` line (``{}`` when there is none to read)."""
    at = event.find(_DATA)
    if at == -1:
        return {}
    try:
        data = json.loads(event[at + len(_DATA):])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _leading_int(data: bytes, start: int, default: int) -> int:
    end = start
    while end < len(data) and 48 <= data[end] <= 57:
        end += 1
    return int(data[start:end]) if end > start else default
