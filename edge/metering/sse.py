"""Relays a vLLM event stream to the client, event by event, counting tokens.

The edge asks the node for usage on every chunk (vLLM's
``stream_options.continuous_usage_stats``), so it always knows how many tokens
the client has received, even when the client or the node breaks the stream.
What the client did not ask for is taken back out: the per-chunk usage, and the
final usage chunk unless ``include_usage`` was set. vLLM serialises ``usage`` as
the last field of a chunk, which lets this work on bytes without re-encoding.

A node that sends no usage (llama.cpp's server, older vLLM, SGLang) is counted by
the edge instead: only chunks without usage are parsed, to count their deltas
(:mod:`edge.metering.counting`), and the client that asked for ``include_usage`` gets
the final usage chunk from the edge (:meth:`StreamRelay.usage_chunk`).
"""

from __future__ import annotations

import json
import time

from edge.billing.money import token_cost
from edge.metering.cost import with_cost
from edge.metering.counting import DeltaCounter

__all__ = ["StreamRelay"]

_USAGE = b',"usage":'
_DONE = b"data: [DONE]"


class StreamRelay:
    """Splits upstream bytes into SSE events and rewrites them for the client.

    Parameters:
      include_usage: the client wants the final usage chunk.
      continuous: the client wants usage on every chunk.
      rename: ``(served name, public name)`` when they differ.
      n: choices per prompt; prompts: prompts in the request. With more than
        one choice, vLLM's running usage is per choice (and per prompt), so the
        counts are kept per choice and summed.

    ``prompt_tokens`` and ``completion_tokens`` are the node's counts once it sent
    any (``node_counted``); until then ``completion_tokens`` is the edge's count of
    delivered deltas and ``prompt_tokens`` is 0, for the caller to find.
    """

    def __init__(self, *, include_usage: bool, continuous: bool,
                 rename: tuple[str, str] | None = None, n: int = 1,
                 prompts: int = 1, prices: tuple[int, int] | None = None) -> None:
        self.include_usage = include_usage
        #: Micro-dollars per 1M input and output tokens: the final usage chunk says the
        #: cost (``usage.cost``, :mod:`edge.metering.cost`).
        self.prices = prices
        self.continuous = continuous
        self._rename = None
        self._public = rename[1] if rename is not None else None
        if rename is not None:
            self._rename = (json.dumps({"model": rename[0]}, separators=(",", ":"))[1:-1].encode(),
                            json.dumps({"model": rename[1]}, separators=(",", ":"))[1:-1].encode())
        self._buffer = b""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.done = False  # the node sent [DONE]
        self._n = max(1, n)
        self._several = n * prompts > 1
        self._completion: dict[int, int] = {}  # by choice index
        self._prompt: dict[int, int] = {}  # by prompt index
        self.node_counted = False  # the node sent usage
        self.final_seen = False  # the node sent the final usage chunk
        self._deltas: DeltaCounter | None = None  # made on the first chunk without usage

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the node; return the complete events to send on (maybe empty)."""
        self._buffer += data
        if b"\n\n" not in self._buffer:
            return b""
        *events, self._buffer = self._buffer.split(b"\n\n")
        out = []
        for event in events:
            event = event.strip(b"\r\n")
            if not event:
                continue
            if event == _DONE:
                self.done = True
                continue
            if event.startswith(b"data: {"):
                rewritten = self._rewrite(event)
                if rewritten is None:
                    continue
                event = rewritten
            out.append(event)
            out.append(b"\n\n")
        return b"".join(out)

    @property
    def deltas(self) -> DeltaCounter:
        """The edge's count, from the chunks that came without usage."""
        if self._deltas is None:
            self._deltas = DeltaCounter()
        return self._deltas

    @property
    def needs_counting(self) -> bool:
        """The node's stream began but gave no counts: the edge must count it."""
        deltas = self._deltas
        return not self.node_counted and deltas is not None and bool(deltas.head
                                                                     or deltas.counts)

    @property
    def owes_usage_chunk(self) -> bool:
        """The client asked for the final usage chunk and the node did not send one."""
        return self.include_usage and not self.final_seen

    def _rewrite(self, event: bytes) -> bytes | None:
        at = event.rfind(_USAGE)
        if at != -1 and event.endswith(b"}"):
            usage = event[at + len(_USAGE):-1]
            final = b'"choices":[]' in event
            if usage != b"null":
                if final:
                    self.final_seen = True
                    self._count(usage, None)
                else:
                    self._count(usage, _index(event) if self._several else None)
            else:
                self._count_deltas(event)
            if final:
                if not self.include_usage:
                    return None
                event = self._priced(event, self.prompt_tokens, self.completion_tokens)
            elif not self.continuous:
                event = event[:at] + (b',"usage":null}' if self.include_usage else b"}")
        else:
            self._count_deltas(event)
        if self._rename is not None:
            event = event.replace(self._rename[0], self._rename[1], 1)
        return event

    def _priced(self, event: bytes, prompt: int, completion: int) -> bytes:
        if self.prices is None:
            return event
        return with_cost(event, token_cost(prompt, completion, *self.prices))

    def _count_deltas(self, event: bytes) -> None:
        """The slow path, for a chunk without usage: the edge counts its deltas."""
        deltas = self.deltas
        deltas.add(event)
        if not self.node_counted:
            self.completion_tokens = deltas.total

    def _count(self, usage: bytes, index: int | None) -> None:
        """Take a usage object: the totals, or (``index``) one choice's running count."""
        try:
            counts = json.loads(usage)
            prompt = int(counts.get("prompt_tokens") or 0)
            completion = int(counts.get("completion_tokens") or 0)
        except (ValueError, TypeError, AttributeError):
            return
        self.node_counted = True
        if index is None:
            self.prompt_tokens = prompt or self.prompt_tokens
            self.completion_tokens = completion
            return
        self._completion[index] = completion
        self._prompt[index // self._n] = prompt
        self.prompt_tokens = sum(self._prompt.values())
        self.completion_tokens = sum(self._completion.values())

    def end(self, charged: int, prompt: int, completion: int) -> bytes:
        """The bytes after the last chunk of a complete stream: the usage chunk the
        client asked for if the node sent none, the cost (an SSE comment), ``[DONE]``."""
        tail = f": cost_micros={charged}\n\ndata: [DONE]\n\n".encode()
        if self.owes_usage_chunk:
            tail = self.usage_chunk(prompt, completion) + tail
        return tail

    def broken(self, message: str, code: str, kind: str) -> bytes:
        """The error chunk, in OpenAI's shape, that ends a stream the node broke."""
        error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()

    def usage_chunk(self, prompt: int, completion: int) -> bytes:
        """The final usage event, in OpenAI's shape, for a node that sent none."""
        head = self.deltas.head
        model = self._public or head.get("model") or ""
        chunk: dict[str, object] = {"id": head.get("id") or "", "object": head.get("object") or
                 "chat.completion.chunk", "created": head.get("created") or int(time.time()),
                 "model": model, "choices": [],
                 "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}}
        event = b"data: " + json.dumps(chunk, separators=(",", ":")).encode()
        return self._priced(event, prompt, completion) + b"\n\n"


def _index(event: bytes) -> int:
    """The choice index of a chunk (the slow path, only for several choices)."""
    try:
        choices = json.loads(event[6:]).get("choices") or [{}]
        return int(choices[0].get("index") or 0)
    except (ValueError, TypeError, AttributeError, IndexError):
        return 0
