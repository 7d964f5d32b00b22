"""The HTTP client to GPU nodes, and what their failures mean to our clients.

One :class:`Upstream` per worker, opened at start-up over a keep-alive pool.
It sends ``httpx.Request`` objects straight to the transport: the proxy needs
none of ``AsyncClient``'s policies (cookies, redirects, auth flows), and skipping
them is a tenth of the hot path's CPU. Node errors are mapped here, once: a
node's 400 or 422 is the client's mistake and is passed on; anything else from a
node is its failure (:mod:`edge.metering.call` tries another node, then answers
503).
"""

from __future__ import annotations

import json

import httpx

from edge.errors import APIError, InvalidRequest, NodeFailed, NotFound, Unprocessable
from edge.fleet.transport import NodeTransport

__all__ = ["NODE_FAILURES", "Upstream", "make_client", "node_error"]

#: httpx errors meaning the node did not answer properly.
NODE_FAILURES = (httpx.TransportError, httpx.StreamError)


class Upstream:
    """POSTs JSON to nodes over a shared keep-alive pool.

    Parameters:
      connect_timeout: seconds to open a connection.
      timeout: seconds to wait for a response, and between two chunks of a stream.
      max_connections: idle connections kept per node.
      api_key: bearer token for vLLM's ``--api-key``; empty for none.
    """

    def __init__(self, *, connect_timeout: float, timeout: float, max_connections: int,
                 api_key: str = "") -> None:
        self.transport = NodeTransport(max_idle=max_connections)
        self.timeouts = {"connect": connect_timeout, "read": timeout, "write": timeout,
                         "pool": connect_timeout}
        self._api_key = api_key
        self._urls: dict[str, httpx.URL] = {}

    def _headers(self, host: bytes, length: int) -> list[tuple[bytes, bytes]]:
        headers = [(b"host", host), (b"content-type", b"application/json"),
                   (b"content-length", str(length).encode()), (b"accept", b"*/*")]
        if self._api_key:
            headers.append((b"authorization", f"Bearer {self._api_key}".encode()))
        return headers

    async def post(self, url: str, body: bytes) -> httpx.Response:
        """Send ``body`` to ``url``; the response's body is read by the caller."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        host = parsed.netloc
        request = httpx.Request("POST", parsed, headers=self._headers(host, len(body)),
                                content=body, extensions={"timeout": self.timeouts})
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


def make_client(*, connect_timeout: float, timeout: float, max_connections: int,
                api_key: str = "") -> Upstream:
    return Upstream(connect_timeout=connect_timeout, timeout=timeout,
                    max_connections=max_connections, api_key=api_key)


def node_error(status: int, body: bytes) -> APIError:
    """The error to answer when a node replied ``status`` with ``body``.

    A 400 or 422 is the client's mistake: passed on with the node's message,
    ``code`` and ``param`` (vLLM's, in OpenAI's shape). A 404 is the node's
    "not here" (a stored response it lacks), passed on when the caller decides it
    is the client's to hear. Anything else is the node's failure.
    """
    message, code, param = _details(body)
    if status == 404:  # state only that node had (a stored response): passed on as such
        return NotFound(message or "The GPU node does not have what the request names.",
                        param=param)
    if status in (400, 422):
        kind = Unprocessable if status == 422 else InvalidRequest
        return kind(message or f"The GPU node refused the request (HTTP {status}).",
                    param=param, code=code)
    return NodeFailed(f"The GPU node failed (HTTP {status})" + (f": {message}" if message
                                                                 else "."))


def _details(body: bytes) -> tuple[str, str | None, str | None]:
    """``(message, code, param)`` of a node's error body; what it lacks is empty."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body[:300].decode(errors="replace").strip(), None, None
    if not isinstance(payload, dict):
        return "", None, None
    error = payload.get("error", payload)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code, param = error.get("code"), error.get("param")
        # vLLM's code is often the HTTP status (an int): OpenAI's is a string or null.
        return (error["message"][:2000], code[:100] if isinstance(code, str) and code else None,
                param[:200] if isinstance(param, str) else None)
    if isinstance(payload.get("detail"), str):
        return payload["detail"][:2000], None, None
    return "", None, None
