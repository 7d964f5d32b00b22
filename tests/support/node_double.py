"""The node double: simnode's own app in the test's loop, whose next calls a test scripts.

``node = await NodeDouble("sim-m1", reply_tokens=4).start()`` serves simnode (JSON answers
with usage, SSE streams with continuous usage, vLLM's error shapes) on a real socket of
this loop. ``node.script(Refuse(503), BreakAfter(3))`` decides what the next completion
calls get, one action each, before :attr:`NodeDouble.default` (``Answer()``) applies:

==============================  =========================================================
``Answer()``                    answer as simnode does
``Refuse(status, message=,      vLLM's error body with that status before any token
code=, param=, headers=)``      (503 admission, 429, 500, 400 with ``param``…)
``Drop()``                      close the connection before any byte of a response
``BreakAfter(n)``               stream: headers and ``n`` tokens, then the connection is
                                cut (no ``[DONE]``); not streaming: a 500 if longer
``Stall(seconds=None)``         send nothing for that long (None: until
                                :meth:`NodeDouble.release` or the caller leaves)
``Pace(ttft=, tokens_per_second=)``  answer at that pace (timeouts between chunks)
==============================  =========================================================

Each call is recorded in ``node.calls`` (path, JSON body, headers, the action it got).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from sanic import HTTPResponse, Request, Sanic

from simnode.config import Faults, SimConfig
from simnode.errors import error_body, status_error_type
from tests.support.serving import bound_socket, serve_app

__all__ = [
    "COMPLETION_PATHS",
    "Answer",
    "BreakAfter",
    "Drop",
    "NodeAction",
    "NodeCall",
    "NodeDouble",
    "Pace",
    "Refuse",
    "Stall",
    "start_node",
    "stream_events",
]

#: Paths of a node whose calls a script applies to (the metered routes; not /tokenize,
#: which the edge itself calls to count).
COMPLETION_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                    "/v1/responses", "/v1/messages", "/v1/rerank", "/v1/score")


class NodeAction:
    """What a node does with one completion call; subclasses override :meth:`apply`."""

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        """Answer instead of simnode (a response), or let simnode answer (None)."""
        return None


@dataclasses.dataclass(frozen=True)
class Answer(NodeAction):
    """Answer as simnode does (the default once a script is used up)."""


@dataclasses.dataclass(frozen=True)
class Refuse(NodeAction):
    """Answer ``status`` with vLLM's error body before any token.

    ``code`` defaults to the status, as vLLM puts it; ``param`` names the offending field.
    """

    status: int = 503
    message: str | None = None
    code: int | str | None = None
    param: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = f"Error {self.status}"
        body = json.loads(error_body(self.message or phrase, status_error_type(self.status),
                                     self.status, self.param))
        if self.code is not None:
            body["error"]["code"] = self.code
        return HTTPResponse(json.dumps(body), status=self.status, headers=self.headers,
                            content_type="application/json")


@dataclasses.dataclass(frozen=True)
class Drop(NodeAction):
    """Close the connection before any byte of a response (a node that crashed)."""

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        if request.transport is not None:
            request.transport.abort()
        await asyncio.Event().wait()  # the lost connection cancels this handler
        return None  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class BreakAfter(NodeAction):
    """Generate ``tokens`` content tokens, then break: a stream is cut after its headers
    and that many chunks (no ``[DONE]``); a longer non-streaming answer is a 500."""

    tokens: int = 0

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        request.ctx.faults = node.faults_with(fail_after=self.tokens)
        return None


@dataclasses.dataclass(frozen=True)
class Pace(NodeAction):
    """Answer at this pace: ``ttft`` seconds to the first token, then ``tokens_per_second``."""

    ttft: float = 0.0
    tokens_per_second: float = 0.0

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        request.ctx.faults = node.faults_with(ttft=self.ttft,
                                              tokens_per_second=self.tokens_per_second)
        return None


@dataclasses.dataclass(frozen=True)
class Stall(NodeAction):
    """Accept the call and send nothing for ``seconds`` (None: until :meth:`NodeDouble.release`
    or the caller goes), then answer as simnode does."""

    seconds: float | None = None

    async def apply(self, request: Request, node: NodeDouble) -> HTTPResponse | None:
        if self.seconds is None:
            await node._released.wait()
        else:
            await asyncio.sleep(self.seconds)
        return None


@dataclasses.dataclass
class NodeCall:
    """One completion call a node received."""

    path: str
    body: Any
    headers: dict[str, str]
    action: NodeAction


class NodeDouble:
    """A simnode app in this loop on a real socket, whose next calls a test may script.

    Parameters:
      model: the served model name.
      options: more :class:`simnode.config.SimConfig` fields (``reply_tokens=4``, ``usage=``
        ``"none"``, ``tokens_per_second=``…).

    The node-wide switches of ``/sim/faults`` are ``node.faults`` (``node.faults.update(
    {"fail_status": 503})``); a script applies to single calls and wins over them.
    """

    def __init__(self, model: str, **options: Any) -> None:
        self.model = model
        self.options = options
        self.url = ""
        self.id: int | None = None  #: its row in the portal, once registered
        self.calls: list[NodeCall] = []
        self.default: NodeAction = Answer()
        self._script: deque[NodeAction] = deque()
        self._released = asyncio.Event()
        self._served: contextlib.AbstractAsyncContextManager[str] | None = None
        self.app: Sanic | None = None

    def script(self, *actions: NodeAction) -> NodeDouble:
        """Queue what the next completion calls get, in order; then :attr:`default`."""
        self._script.extend(actions)
        return self

    def always(self, action: NodeAction) -> NodeDouble:
        """What every call gets once the script is used up."""
        self.default = action
        return self

    def release(self) -> None:
        """Let the calls held by ``Stall()`` go on."""
        self._released.set()

    @property
    def faults(self) -> Faults:
        assert self.app is not None
        return self.app.ctx.faults

    def faults_with(self, **changes: Any) -> Faults:
        """One call's own switches: the node's pacing and breaks with ``changes``.

        Its injected status is left to the node (a scripted call is not refused twice, and
        the node's ``fail_count`` counts down on the node's own switches).
        """
        node = self.faults.as_dict()
        for name in ("fail_status", "fail_count"):
            node.pop(name, None)
        return Faults(**{**node, **changes})

    async def start(self) -> NodeDouble:
        from simnode.app import create_app

        sock = bound_socket()
        config = SimConfig(model=self.model, port=sock.getsockname()[1], **self.options)
        self.app = create_app(config)  # named after its port: unique while it is bound
        self.app.on_request(self._scripted, priority=100)
        self._served = serve_app(self.app, sock)
        self.url = await self._served.__aenter__()
        return self

    async def close(self) -> None:
        self.release()
        if self._served is not None:
            served, self._served = self._served, None
            await served.__aexit__(None, None, None)

    async def _scripted(self, request: Request) -> HTTPResponse | None:
        if request.method != "POST" or request.path not in COMPLETION_PATHS:
            return None
        action = self._script.popleft() if self._script else self.default
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = request.body
        self.calls.append(NodeCall(request.path, body, dict(request.headers), action))
        return await action.apply(request, self)


@asynccontextmanager
async def start_node(model: str, **options: Any) -> AsyncIterator[NodeDouble]:
    node = await NodeDouble(model, **options).start()
    try:
        yield node
    finally:
        await node.close()


def stream_events(text: str) -> tuple[list[dict[str, Any]], bool, list[str]]:
    """An SSE body's JSON chunks, whether it ended with ``[DONE]``, and its comments."""
    chunks: list[dict[str, Any]] = []
    comments: list[str] = []
    done = False
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    return chunks, done, comments
