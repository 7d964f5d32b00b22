"""How the edge takes a request in: bounded time for its head and body, bounded bytes.

``portal serve`` often runs without Nginx in front, so the edge itself must not let
a client hold a connection by sending slowly, nor a worker's memory by sending many
large bodies at once. Sanic's own timeouts do not do it: ``REQUEST_TIMEOUT`` and
``RESPONSE_TIMEOUT`` count from the *last* byte received, so a header trickled one
line every few seconds, or a body that never ends, resets them forever. Here:

* :class:`PortalProtocol` (Sanic's protocol, passed to ``app.prepare``) arms one
  deadline per request: ``head_timeout`` from the head's first byte until its blank
  line, then ``body_timeout`` until the body's last byte (including a body Sanic
  reads and discards after an early error). When it passes, the client gets 408 in
  OpenAI's shape and the connection closes. Neither counts while the answer is
  sent: a stream may last as long as the node takes.
* :class:`BodyBudget` bounds the bytes of request bodies a worker holds at once,
  from the first byte buffered until the request is answered. Content-Length is
  checked against the size limit (413) before anything is buffered, then against the
  budget; a chunked body is counted as its chunks are announced. A body that does
  not fit is refused with 503 and ``Retry-After`` (what is still on the wire is read
  and dropped, within the body's deadline).
* :class:`PortalRequest` gives every request its ids from the moment it exists, so
  an error before any middleware ran (a client gone mid-body, a 408) still has them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from sanic import Request
from sanic.exceptions import RequestTimeout
from sanic.http import Http
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from edge.errors import ServiceUnavailable
from edge.metering.call import new_request_id

__all__ = ["BodyBudget", "Intake", "PortalProtocol", "PortalRequest", "trace_id"]

#: A client's or Nginx's ``X-Request-Id`` the portal keeps: short, and safe in logs.
TRACE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Seconds a client refused for the body budget is asked to wait.
BUDGET_RETRY_AFTER = 1


def trace_id(header: str | None, fallback: str) -> str:
    """The id that joins this request's logs: the client's when valid, else ``fallback``."""
    return header if header and TRACE_ID.fullmatch(header) else fallback


class BodyBudget:
    """Bytes of request bodies one worker holds at once (one event loop: no lock).

    Parameters:
      limit: the most bytes held, at least the largest body accepted.
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes; False, holding nothing, when they do not fit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size

    def __repr__(self) -> str:
        return f"BodyBudget(held={self.held}, limit={self.limit})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Intake:
    """A worker's bounds on receiving requests (``app.ctx.intake``).

    Parameters:
      head_timeout: seconds from a head's first byte to its end.
      body_timeout: seconds from the end of the head to the body's last byte.
      budget: the worker's body budget.
    """

    head_timeout: float
    body_timeout: float
    budget: BodyBudget


class PortalHttp(Http):
    """Sanic's HTTP/1.1 state machine, with the deadlines armed and bodies counted."""

    __slots__ = ("body_due", "dropping", "held", "reading")

    def init_for_request(self) -> None:
        super().init_for_request()
        self.held = 0  # bytes of this request's body counted in the budget
        #: The rest is read and dropped, not held: the body did not fit, or its
        #: handler is done (Sanic reads what a handler left unread, like a GET's body).
        self.dropping = False
        self.body_due: float | None = None  # loop time by which the body must be in
        self.reading = False  # waiting for body bytes (the deadline may cancel it)

    async def http1_request_header(self) -> None:
        protocol: PortalProtocol = self.protocol  # type: ignore[assignment]
        intake = protocol.intake
        if b"\r\n\r\n" in self.recv_buffer:  # the usual case: the whole head came at once
            await super().http1_request_header()
        else:
            protocol.arm(intake.head_timeout, "head")
            try:
                await super().http1_request_header()
            finally:
                protocol.disarm()
        # Sanic sets request_body to "chunked" (or True) while a body is due; mypy
        # infers bytes | None from its untyped code, hence the plain object here.
        body_state: object = self.request_body
        if body_state == "chunked" or (self.request_bytes_left or 0) > len(self.recv_buffer):
            self.body_due = protocol.loop.time() + intake.body_timeout
            protocol.arm(intake.body_timeout, "body")

    async def read(self) -> bytes | None:
        protocol: PortalProtocol = self.protocol  # type: ignore[assignment]
        if self.body_due is not None and protocol.loop.time() >= self.body_due:
            self._late()
            return None
        # request_bytes is the Content-Length, or the sum of the chunks announced so
        # far; above the size limit, Sanic's read answers 413 before buffering.
        size = self.request_bytes or 0
        if size > self.held and not self.dropping and size <= self.request_max_size:
            if protocol.intake.budget.take(size - self.held):
                self.held = size
            else:
                self.dropping = True
                if self.expecting_continue:  # it waits for our go: do not give it
                    self.expecting_continue = False
                    self.keep_alive = False
                    self.request_body = None
                raise ServiceUnavailable(
                    "This server is receiving too many large request bodies at once; "
                    f"retry in {BUDGET_RETRY_AFTER} second.", retry_after=BUDGET_RETRY_AFTER)
        self.reading = True
        try:
            data = await super().read()
        finally:
            self.reading = False
        if not self.request_body:  # the body is complete
            self.body_due = None
            protocol.disarm()
        return data

    def _late(self) -> None:
        """The body's deadline passed while its handler did not read (a GET's body)."""
        self.keep_alive = False
        self.request_body = None
        if self.response is None:
            raise RequestTimeout(self.protocol.late_message("body"))
        # Else an answer went out already: stop reading, close.


class PortalProtocol(WebSocketProtocol):
    """Sanic's protocol (WebSockets included) with the intake's deadline and budget."""

    HTTP_CLASS = PortalHttp

    __slots__ = ("_deadline", "intake")

    def _setup(self) -> None:
        super()._setup()
        self.intake: Intake = self.app.ctx.intake
        self._deadline: Any = None
        self.request_handler = self._handle

    def arm(self, seconds: float, part: str) -> None:
        """(Re)start the deadline of the request's ``part`` ("head" or "body")."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self._expire, part)

    def disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def late_message(self, part: str) -> str:
        seconds = self.intake.head_timeout if part == "head" else self.intake.body_timeout
        return f"The request's {part} did not arrive within {seconds:g} seconds."

    def _expire(self, part: str) -> None:
        """As Sanic's own timeouts do: set the answer, cancel the connection's task."""
        self._deadline = None
        http: PortalHttp | None = self._http
        if http is None or self._task is None:
            return
        if part == "body" and not http.reading:
            return  # a handler that ignores the body runs on; the next read is refused
        http.exception = RequestTimeout(self.late_message(part))
        http.keep_alive = False
        http.request_body = None  # nothing more is read: the connection closes after the 408
        self._task.cancel()

    async def _handle(self, request: Request) -> None:
        http: PortalHttp = self._http
        try:
            await self.app.handle_request(request)
        finally:
            http.dropping = True
            if http.held:
                self.intake.budget.give_back(http.held)
                http.held = 0
                # An idle keep-alive connection keeps its last request: not its body.
                request.body = b""
                request.parsed_json = request.parsed_form = request.parsed_files = None

    def close(self, timeout: float | None = None) -> None:
        self.disarm()
        super().close(timeout)


class PortalRequest(Request):
    """A request with its ids set at birth, in ``request.ctx``.

    ``request_id`` is the portal's own id, unique per request: it names the credit
    reservation and the usage row, so a client must not choose it. ``trace_id`` joins
    logs across hops: the client's or Nginx's ``X-Request-Id`` when it is valid (see
    :data:`TRACE_ID`), else ``request_id``. Answers carry ``trace_id`` as
    ``X-Request-Id`` and, when they differ, ``request_id`` as ``X-Portal-Request-Id``.
    """

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ctx = self.ctx
        ctx.request_id = new_request_id()
        ctx.trace_id = trace_id(self.headers.getone("x-request-id", None), ctx.request_id)
