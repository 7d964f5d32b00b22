"""The node transport against real sockets: reuse, closed idle connections, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from edge.fleet.transport import HIGH_WATER
from edge.fleet.upstream import Upstream
from simnode.testing import free_port

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'


def upstream(**timeouts: float) -> Upstream:
    return Upstream(connect_timeout=timeouts.get("connect", 2.0),
                    timeout=timeouts.get("read", 5.0), max_connections=8)


async def serve(handler: Callable) -> AsyncIterator[tuple[str, list]]:
    """A raw TCP server; ``handler(reader, writer, accepted)`` speaks HTTP by hand."""
    accepted: list = []

    async def on_client(reader, writer):
        accepted.append(writer)
        try:
            await handler(reader, writer, accepted)
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", accepted


async def read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


def response(body: bytes, *, close: bool = False) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: " + connection +
            b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def test_keep_alive_connections_are_reused(simnode) -> None:
    node = simnode("--model", "m")
    client = upstream()
    for _ in range(20):
        answer = await client.post(node.url + "/v1/chat/completions", BODY)
        await answer.aread()
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    idle = sum(len(c) for c in client.transport._idle.values())
    assert idle == 1
    await client.aclose()


async def test_a_connection_closed_by_the_node_while_idle_is_not_reused() -> None:
    async def handler(reader, writer, accepted):
        await read_request(reader)
        writer.write(response(b'{"ok":1}'))
        await writer.drain()
        # then close the idle keep-alive connection, as uvicorn does after 5 s

    async for url, accepted in serve(handler):
        client = upstream()
        first = await client.post(url, BODY)
        await first.aread()
        await asyncio.sleep(0.1)  # the close reaches us
        second = await client.post(url, BODY)
        await second.aread()
        assert second.json() == {"ok": 1}
        assert len(accepted) == 2
        await client.aclose()


async def test_connection_close_header_is_honoured() -> None:
    async def handler(reader, writer, accepted):
        while True:
            await read_request(reader)
            writer.write(response(b"{}", close=True))
            await writer.drain()

    async for url, accepted in serve(handler):
        client = upstream()
        for _ in range(3):
            await (await client.post(url, BODY)).aread()
        assert len(accepted) == 3
        await client.aclose()


async def test_refused_connection_is_a_connect_error() -> None:
    client = upstream()
    with pytest.raises(httpx.ConnectError):
        await client.post(f"http://127.0.0.1:{free_port()}/v1/x", BODY)


async def test_silent_node_is_a_read_timeout() -> None:
    async def handler(reader, writer, accepted):
        await read_request(reader)
        await asyncio.sleep(5)

    async for url, _ in serve(handler):
        client = upstream(read=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, BODY)


async def test_garbage_is_a_protocol_error() -> None:
    async def handler(reader, writer, accepted):
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    async for url, _ in serve(handler):
        with pytest.raises(httpx.RemoteProtocolError):
            await upstream().post(url, BODY)


async def test_a_stream_cut_mid_body_raises_after_the_bytes_that_came() -> None:
    async def handler(reader, writer, accepted):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()

    async for url, _ in serve(handler):
        answer = await upstream().post(url, BODY)
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in answer.aiter_raw():
                received.append(chunk)
        assert b"".join(received) == b"hello"


async def test_large_streams_pause_reading_instead_of_buffering(simnode) -> None:
    node = simnode("--model", "m")
    client = upstream()
    body = (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4000,'
            b'"ignore_eos":true,"stream":true}')
    answer = await client.post(node.url + "/v1/chat/completions", body)
    connection = answer.stream._connection
    await asyncio.sleep(0.5)  # the node writes as fast as it can; we do not read
    assert 0 < connection.buffered <= HIGH_WATER + 256 * 1024
    total = 0
    async for chunk in answer.aiter_raw():
        total += len(chunk)
    assert total > HIGH_WATER + 256 * 1024 and b"[DONE]" in chunk
