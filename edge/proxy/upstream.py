"""The HTTP client to GPU nodes, and what their failures mean to our clients.

One ``httpx.AsyncClient`` per worker, opened at start-up with a keep-alive pool.
Node errors are mapped here, once: a node's 400 is the client's mistake and is
passed on; anything else from a node is our failure and becomes a 502.
"""

from __future__ import annotations

import json

import httpx

from edge.errors import APIError, InvalidRequest, NodeFailed

__all__ = ["NODE_FAILURES", "make_client", "node_error"]

#: httpx errors meaning the node did not answer properly.
NODE_FAILURES = (httpx.TransportError, httpx.StreamError)


def make_client(*, connect_timeout: float, timeout: float, max_connections: int,
                api_key: str = "") -> httpx.AsyncClient:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
        limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections, keepalive_expiry=60),
        headers=headers,
        follow_redirects=False,
        trust_env=False,
    )


def node_error(status: int, body: bytes) -> APIError:
    """The error to answer when a node replied ``status`` with ``body``."""
    message = _message(body) or f"The GPU node answered HTTP {status}."
    if status in (400, 422):
        return InvalidRequest(message)
    return NodeFailed(f"The GPU node failed (HTTP {status}): {message}")


def _message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body[:300].decode(errors="replace").strip()
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(payload.get("detail"), str):
            return payload["detail"]
    return ""
