"""Serving a Sanic app in the test's own event loop, on a real socket.

Both the portal (edge.app.create_app) and simnode's app are served this way by the
in-process layer (tests/support/inprocess.py): Sanic's own HTTP server, its listeners
run as one worker's would, so clients and nodes talk real HTTP over real sockets.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sanic import Sanic

__all__ = ["bound_socket", "serve_app"]


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to an ephemeral port of ``host`` (its port is known before serving)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve_app(app: Sanic, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve ``app`` in the running loop on ``sock`` (default: a new ephemeral port).

    Runs the app's ``before_server_start`` … ``after_server_stop`` listeners, as one
    worker would (the main-process listeners, like the bookkeeper, do not run), and
    yields its base URL.
    """
    app.config.TOUCHUP = False  # TouchUp rewrites shared classes: not with two apps a loop
    sock = sock or bound_socket()
    host, port = sock.getsockname()[:2]
    server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
    assert server is not None
    try:
        await server.startup()
        await server.before_start()
        await server.after_start()
        yield f"http://{host}:{port}"
    finally:
        with contextlib.suppress(Exception):
            await server.before_stop()
        closing = server.close()
        for connection in list(server.connections):
            connection.close_if_idle()
        for connection in list(server.connections):  # streams still open: cut them
            with contextlib.suppress(Exception):
                connection.abort()
        if closing is not None:
            await closing
        await server.after_stop()
        Sanic.unregister_app(app)
