"""A client that sends slowly is answered 408 and let go within the bounds; answers are not."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.http.conftest import (
    BOUND,
    MODEL,
    STREAM_SECONDS,
    Edge,
    LogWatch,
    closed,
    openai_error,
    read_answer,
)

CHAT = "/v1/chat/completions"
#: Slack for a loaded machine, in seconds, on top of a bound.
SLACK = 1.5


def test_a_trickled_head_is_answered_408_and_closed(edge: Edge) -> None:
    watch = LogWatch(edge.portal)
    sock = edge.connect()
    started = time.monotonic()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
    for n in range(20):  # a header line every 0.2 s would keep Sanic's own timeout away
        time.sleep(0.2)
        try:
            sock.sendall(f"X-Slow-{n}: 1\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            break
        if time.monotonic() - started > BOUND + SLACK:
            break
    status, headers, body = read_answer(sock)
    assert status == 408
    assert openai_error(body)["code"] == "request_timeout"
    assert headers["connection"] == "close"
    assert closed(sock)
    assert time.monotonic() - started < BOUND + SLACK + 1
    assert watch.problems() == []


def test_a_head_that_stops_is_answered_408(edge: Edge) -> None:
    sock = edge.connect()
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\n")
    status, _headers, _body = read_answer(sock)
    assert status == 408
    assert closed(sock)
    assert BOUND - 0.2 < time.monotonic() - started < BOUND + SLACK


def test_a_body_that_never_arrives_is_answered_408(edge: Edge) -> None:
    watch = LogWatch(edge.portal)
    sock = edge.connect()
    sock.sendall(edge.head("POST", CHAT, "Content-Type: application/json",
                           "Content-Length: 1000") + b'{"model": ')
    started = time.monotonic()
    status, _headers, body = read_answer(sock)
    assert status == 408
    assert "body" in openai_error(body)["message"]
    assert closed(sock)
    assert BOUND - 0.2 < time.monotonic() - started < BOUND + SLACK
    assert watch.problems() == []


@pytest.mark.parametrize(("framing", "trickle"), [
    ("Content-Length: 1000", b" "),
    ("Transfer-Encoding: chunked", b"1\r\n \r\n"),
], ids=["content-length", "chunked"])
def test_a_trickled_body_is_answered_408(edge: Edge, framing: str, trickle: bytes) -> None:
    sock = edge.connect()
    sock.sendall(edge.head("POST", CHAT, framing))
    started = time.monotonic()
    for _ in range(int((BOUND + SLACK) / 0.1)):
        time.sleep(0.1)
        try:
            sock.sendall(trickle)
        except (BrokenPipeError, ConnectionResetError):
            break
    status, _headers, _body = read_answer(sock)
    assert status == 408
    assert closed(sock)
    assert time.monotonic() - started < BOUND + 2 * SLACK


def test_an_unread_body_after_an_early_answer_is_bounded_too(edge: Edge) -> None:
    """Sanic reads and drops the body of a request it answered early (a 404 here)."""
    sock = edge.connect()
    sock.sendall(edge.head("POST", "/no-such-page", "Content-Length: 100000") + b"x")
    status, _headers, _body = read_answer(sock)
    assert status == 404
    started = time.monotonic()
    assert closed(sock, timeout=BOUND + SLACK)
    assert time.monotonic() - started < BOUND + SLACK


def test_a_slow_but_timely_client_is_served_on_a_kept_alive_connection(edge: Edge) -> None:
    sock = edge.connect()
    for _ in range(2):
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 1}).encode()
        head = edge.head("POST", CHAT, f"Authorization: Bearer {edge.key}",
                         "Content-Type: application/json", f"Content-Length: {len(body)}")
        for part in (head[:20], head[20:], body[:10], body[10:]):
            sock.sendall(part)
            time.sleep(BOUND / 4)  # each part is slow; the whole is within its bound
        status, headers, answer = read_answer(sock)
        assert status == 200, answer
        assert headers.get("connection") == "keep-alive"


def test_a_stream_may_last_longer_than_the_bounds(edge: Edge) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.monotonic()
    with httpx.stream("POST", edge.url + CHAT, json=body, timeout=30,
                      headers={"authorization": f"Bearer {edge.key}"}) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert text.rstrip().endswith("data: [DONE]")
    assert time.monotonic() - started > max(STREAM_SECONDS * 0.8, 2 * BOUND + 0.5)
