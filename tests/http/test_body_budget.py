"""Bodies a worker holds at once are bounded; sizes are checked before anything is buffered."""

from __future__ import annotations

import json
import socket

from tests.http.conftest import BUDGET, MAX_BODY, MODEL, Edge, closed, openai_error, read_answer

CHAT = "/v1/chat/completions"


def big_stream(edge: Edge, size: int) -> socket.socket:
    """A streamed chat request padded to ``size`` bytes, its answer begun: its body is held."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "user": ""}
    body["user"] = "x" * (size - len(json.dumps(body)))
    raw = json.dumps(body).encode()
    assert len(raw) == size
    sock = edge.connect()
    sock.sendall(edge.head("POST", CHAT, f"Authorization: Bearer {edge.key}",
                           "Content-Type: application/json", f"Content-Length: {size}") + raw)
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def finish(sock: socket.socket) -> None:
    """Read a begun stream to its last chunk."""
    data = b""
    sock.settimeout(15)
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, "closed mid-stream"
        data = data[-16:] + chunk
    sock.close()


def small_request(edge: Edge, size: int = 30_000) -> tuple[int, dict[str, str], bytes]:
    sock = edge.connect()
    with sock:
        sock.sendall(edge.head("POST", CHAT, "Content-Type: application/json",
                               f"Content-Length: {size}") + b" " * size)
        return read_answer(sock)


def test_a_body_over_the_budget_is_refused_until_there_is_room(edge: Edge) -> None:
    held = [big_stream(edge, MAX_BODY - 10_000) for _ in range(2)]  # 380 kB of 400 kB
    assert BUDGET - 2 * (MAX_BODY - 10_000) < 30_000
    try:
        status, headers, body = small_request(edge)
        assert status == 503
        assert headers["retry-after"] == "1"
        error = openai_error(body)
        assert error["code"] == "service_unavailable"
        assert "bodies" in error["message"]
    finally:
        for sock in held:  # the streams end: their bodies are given back
            finish(sock)
    status, _headers, body = small_request(edge)
    assert status == 401, body  # accepted, read, and judged: no key


def test_a_refused_body_keeps_the_connection(edge: Edge) -> None:
    held = [big_stream(edge, MAX_BODY - 10_000) for _ in range(2)]
    sock = edge.connect()
    try:
        sock.sendall(edge.head("POST", CHAT, "Content-Length: 30000") + b" " * 30_000)
        assert read_answer(sock)[0] == 503
    finally:
        for stream in held:
            finish(stream)
    sock.sendall(edge.head("GET", "/healthz"))  # the refused body was read and dropped
    assert read_answer(sock)[0] == 200
    sock.close()


def test_content_length_over_the_limit_is_413_before_the_body(edge: Edge) -> None:
    sock = edge.connect()
    sock.sendall(edge.head("POST", CHAT, f"Content-Length: {MAX_BODY + 1}"))
    status, _headers, body = read_answer(sock)  # nothing of the body was sent
    assert status == 413
    assert openai_error(body)["code"] == "request_too_large"
    assert closed(sock)


def test_a_chunk_over_the_limit_is_413_before_its_bytes(edge: Edge) -> None:
    sock = edge.connect()
    sock.sendall(edge.head("POST", CHAT, "Transfer-Encoding: chunked")
                 + f"{MAX_BODY + 1:x}\r\n".encode() + b"x" * 100)
    status, _headers, body = read_answer(sock)
    assert status == 413
    assert openai_error(body)["code"] == "request_too_large"
    assert closed(sock)


def test_chunks_adding_up_over_the_limit_are_413(edge: Edge) -> None:
    sock = edge.connect()
    sock.sendall(edge.head("POST", CHAT, "Transfer-Encoding: chunked"))
    chunk = 50_000
    try:
        for _ in range(MAX_BODY // chunk + 1):
            sock.sendall(f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, _headers, _body = read_answer(sock)
    assert status == 413


def test_bodies_sanic_drops_after_an_early_answer_are_not_held(edge: Edge) -> None:
    """A 404's body, or a GET's, is read and dropped after the answer: never counted."""
    sock = edge.connect()
    for n in range(BUDGET // 100_000 + 2):
        method, path = ("POST", "/no-such-page") if n % 2 else ("GET", "/healthz")
        sock.sendall(edge.head(method, path, "Content-Length: 100000") + b" " * 100_000)
        assert read_answer(sock)[0] in (200, 404)
    sock.close()
    status, _headers, body = small_request(edge)
    assert status == 401, body  # the budget is whole
