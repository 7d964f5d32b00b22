"""A WebSocket chat client for tests: connect, send frames, wait for events."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import websockets

__all__ = ["CHAT_MODEL", "ChatClient", "Person", "clients_on_both_workers", "say"]

#: The model the conversation tests talk with (served by a node double as ``sim-m1``).
CHAT_MODEL = "m1"


class ChatClient:
    def __init__(self, socket, ready: dict[str, Any]) -> None:
        self.socket = socket
        self.ready = ready
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())
        self._arrived = asyncio.Event()
        self._taken: set[int] = set()

    @classmethod
    async def connect(cls, base_url: str, room: str, key: str | None = None, *,
                      headers: dict[str, str] | None = None) -> ChatClient:
        url = base_url.replace("http://", "ws://") + f"/ws/chat/{room}"
        socket = await websockets.connect(url, additional_headers=headers or {},
                                          max_size=2**22, open_timeout=10)
        try:
            if key is not None:
                await socket.send(json.dumps({"type": "auth", "key": key}))
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if event["type"] == "ready":
                    return cls(socket, event)
                if event["type"] == "error":
                    raise ConnectionRefusedError(event["message"])
        except websockets.ConnectionClosed as closed:
            reason = closed.rcvd.reason if closed.rcvd else str(closed)
            raise ConnectionRefusedError(reason) from None

    @property
    def worker(self) -> str:
        return self.ready["worker"]

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                event = json.loads(raw)
                event["_at"] = time.time()  # arrival, for latency measurements
                self.events.append(event)
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self._arrived.set()

    async def send(self, **frame: Any) -> None:
        await self.socket.send(json.dumps(frame))

    async def wait_for(self, kind: str, /, timeout: float = 15.0,
                       **match: Any) -> dict[str, Any]:
        """The first event of ``kind`` (matching ``match``) not returned before."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, event in enumerate(self.events):
                if index not in self._taken and event["type"] == kind and all(
                        event.get(k) == v for k, v in match.items()):
                    self._taken.add(index)
                    return event
            if self._reader.done():
                raise ConnectionError(f"socket closed waiting for {kind}: {self.events[-5:]}")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {kind} {match} among {self.events[-10:]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    def log(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] in kinds]

    async def close(self) -> None:
        await self.socket.close()
        await self._reader


async def clients_on_both_workers(base_url: str, room: str, keys: list[str]) -> list[ChatClient]:
    """One client per key, alternating between the two workers (reconnecting as needed)."""
    clients: list[ChatClient] = []
    for index, key in enumerate(keys):
        wanted = None if index == 0 else (
            clients[0].worker if index % 2 == 0 else None)
        for _attempt in range(60):
            client = await ChatClient.connect(base_url, room, key)
            if index == 0 or (wanted and client.worker == wanted) or (
                    not wanted and client.worker != clients[0].worker):
                clients.append(client)
                break
            await client.close()
        else:
            raise RuntimeError("could not reach both workers")
    return clients


class Person:
    """An account with one key, and an HTTP client that sends it (``portal``: any portal
    with a ``url``)."""

    def __init__(self, portal: Any, key_id: int, secret: str) -> None:
        self.portal, self.key_id, self.secret = portal, key_id, secret
        self.http = httpx.AsyncClient(base_url=portal.url, timeout=30,
                                      headers={"authorization": f"Bearer {secret}"})

    async def room(self, **body: Any) -> str:
        """Make a room (private unless ``body`` says otherwise); its name."""
        made = await self.http.post("/api/rooms", json=body or {"private": True})
        assert made.status_code in (200, 201), made.text
        return str(made.json()["name"])

    async def sidebar(self, query: str = "", **params: str) -> list[dict[str, Any]]:
        response = await self.http.get("/api/conversations",
                                       params={"q": query, **params} if query else params)
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    async def join(self, room: str) -> ChatClient:
        return await ChatClient.connect(self.portal.url, room, self.secret)


async def say(client: ChatClient, text: str, *, model: str = CHAT_MODEL,
              **frame: Any) -> dict[str, Any]:
    """Send a message that asks the model; the reply's ``done`` event."""
    await client.send(type="message", text=text, model=model, **frame)
    sent = await client.wait_for("sent")
    reply = await client.wait_for("message", role="assistant", reply_to=sent["id"])
    return await client.wait_for("done", reply_id=reply["id"])
