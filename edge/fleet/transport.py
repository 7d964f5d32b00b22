"""A lean HTTP/1.1 transport for httpx, made for one job: talking to GPU nodes.

Every metered call to a node goes through :class:`edge.fleet.upstream.Upstream`:
the API's, chat replies' and jobs' (:mod:`edge.metering.call`), and the edge's
``/tokenize`` counts. Health probes use a plain ``httpx.AsyncClient`` instead
(:mod:`edge.fleet.nodes`). ``Upstream`` hands ``httpx.Request`` objects straight to
:meth:`NodeTransport.handle_async_request`. No ``httpx.AsyncClient`` is involved, so
none of its policies apply (cookies, redirects, auth flows) and neither does its
timeout handling: this transport enforces the timeouts itself.

httpx's default transport (httpcore over anyio) costs more CPU per request than
the rest of the hot path together: it polls every idle pooled socket on each
request and wraps each read in several layers. Nodes are few, speak plain
HTTP/1.1 (or TLS, for ``https`` nodes) with keep-alive, and answer small JSON or
an event stream. So this transport keeps, per origin, a LIFO pool of idle asyncio
protocol connections: at most ``max_idle`` of them, each reused for up to
``keepalive_expiry`` seconds. Responses are parsed with ``httptools`` (a Sanic
dependency), and the event loop tells the transport when a node closed an idle
connection. The number of open connections has no bound: a request that finds
no idle connection opens a new one.

The timeouts come from the request's ``timeout`` extension, the way httpx's own
transports read it:

- ``connect`` bounds opening a connection;
- ``read`` bounds waiting for the response head, and each wait for more body bytes;
- ``write`` and ``pool`` are not used. The request goes to the socket's buffer at
  once, and there is no pool to wait for.

Two more things happen here:

- A request sent on a reused connection that the node had already closed is sent
  once more on a new connection. This only happens when nothing at all came back,
  so the node never read the request.
- Reading pauses while more than :data:`HIGH_WATER` bytes are buffered that the
  caller has not taken, and resumes below half of that.

The exceptions raised are httpx's:

- ``ConnectError`` or ``ConnectTimeout``: nothing was sent;
- ``ReadTimeout``: the connection is then closed;
- ``RemoteProtocolError``: the node closed the connection before the response was
  complete, or sent something that is not HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

__all__ = ["NodeTransport"]

#: Bytes buffered from a node before reading pauses until the client catches up.
HIGH_WATER = 512 * 1024


class _Connection(asyncio.Protocol):
    """One keep-alive connection; reads one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid response from node: {exc}"))
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            message = "the node closed the connection" + (f": {exc}" if exc else "")
            self._error = self._error or httpx.RemoteProtocolError(message)
        self._wake()

    # -- httptools callbacks -----------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Read it now: once the message is complete the parser resets its flags.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True

    # -- used by the transport ------------------------------------------------------
    def _fail(self, error: Exception) -> None:
        self._error = error
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, seconds: float | None) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(seconds):
                await self._waiter
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout("the node did not answer in time") from None
        finally:
            self._waiter = None
        if self._error is not None and not (self.complete or self.body):
            raise self._error

    def send(self, data: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(data)

    async def read_head(self, seconds: float | None) -> None:
        while not self.headers_done:
            await self._wait(seconds)

    async def read_body(self, seconds: float | None) -> AsyncIterator[bytes]:
        while True:
            while self.body:
                chunk = self.body.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered < HIGH_WATER // 2 and self.transport:
                    self.transport.resume_reading()
                    self.paused = False
                yield chunk
            if self.complete:
                return
            await self._wait(seconds)

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, transport: NodeTransport, origin: tuple[str, str, int],
                 connection: _Connection, timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._connection = connection
        self._timeout = timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._connection.read_body(self._timeout):
            yield chunk
        self._release()

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._transport._release(self._origin, self._connection)


class NodeTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive transport with a LIFO connection pool per origin.

    Parameters:
      max_idle: idle connections kept per origin.
      keepalive_expiry: seconds an idle connection is reused; keep it below the
        node's own keep-alive timeout (vLLM's uvicorn: 5 s).
    """

    def __init__(self, *, max_idle: int = 256, keepalive_expiry: float = 4.0) -> None:
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        head = self._head(request)
        body = request.content if isinstance(request.stream, httpx.ByteStream) \
            else await request.aread()
        for attempt in (0, 1):
            connection, reused = await self._acquire(origin, timeouts.get("connect"))
            connection.send(head + body)
            try:
                await connection.read_head(timeouts.get("read"))
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A reused connection the node closed just as we wrote to it: the
                # request was never read, so it is safe to send it once more.
                connection.close()
                if reused and attempt == 0 and not connection.received_any:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            stream = _ResponseStream(self, origin, connection, timeouts.get("read"))
            return httpx.Response(connection.status, headers=connection.headers, stream=stream,
                                  extensions={"http_version": b"HTTP/1.1"})
        raise AssertionError("unreachable")

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        target = request.url.raw_path
        lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in request.headers.raw]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _acquire(self, origin: tuple[str, str, int],
                       connect_timeout: float | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_expiry:
                return connection, True
            connection.close()
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _transport, connection = await loop.create_connection(
                    _Connection, host, port, ssl=self._ssl_context() if scheme == "https"
                    else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection, False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _release(self, origin: tuple[str, str, int], connection: _Connection) -> None:
        if not connection.reusable():
            connection.close()
            return
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
