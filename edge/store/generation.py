"""The hot store's generation: which Redis server the namespace was last healed on.

``$ns:gen`` (:func:`edge.store.keys.generation`) holds
``<token>:<SQL's lone changes>:<run_id>``, written by the last heal
(:mod:`edge.billing.heal`, which tells the whole story) and naming the Redis server
process (its ``run_id``) it was written on. Here are only what the store itself
needs to refuse a server that the generation does not name: reading a generation,
and the connection check of :func:`edge.store.hotstore.connect_redis`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from edge.store import keys
from edge.store.replies import text

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ["HotStale", "check_connection", "generation_matches", "generation_token"]


class HotStale(ResponseError):
    """This Redis server is not the one the hot store's generation was written on.

    Raised by the connection check, so that nothing runs on a restarted, restored
    or failed-over Redis before it is healed. A ``ResponseError``: redis-py does
    not retry it, and callers answer it as "storage unavailable" (503).
    """


def generation_token(raw: bytes | str) -> str:
    """The heal's token of a generation value ``<token>:<SQL's lone changes>:<run_id>``."""
    return text(raw).partition(":")[0]


def generation_matches(raw: bytes | str | None, run_id: str) -> bool | None:
    """True: healed on this server; False: written on another one; None: no generation."""
    if raw is None:
        return None
    return text(raw).rpartition(":")[2] == run_id


def check_connection(namespace: str) -> Callable[[AbstractConnection], Awaitable[None]]:
    """A ``redis_connect_func`` refusing servers that the generation does not name.

    Raises (from each new connection):
      HotStale: the namespace's generation was written on another server.
    """
    gen_key = keys.generation(namespace)

    async def on_connect(connection: AbstractConnection) -> None:
        await connection.on_connect()
        await connection.send_command("INFO", "server")
        info = text(await connection.read_response())
        run_id = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                       if line.startswith("run_id:")), "")
        await connection.send_command("GET", gen_key)
        if generation_matches(await connection.read_response(), run_id) is False:
            raise HotStale("Redis was restarted, restored or replaced; the portal is "
                           "rebuilding its balances from the database")

    return on_connect
