"""A client's or Nginx's X-Request-Id joins the logs; the portal's own id stays unique."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.http.conftest import MODEL, Edge, LogWatch, read_answer

CHAT = "/v1/chat/completions"
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def test_without_a_client_id_the_portal_makes_one(edge: Edge) -> None:
    response = httpx.get(edge.url + "/healthz")
    assert response.headers["x-request-id"].startswith("req_")
    assert "x-portal-request-id" not in response.headers


@pytest.mark.parametrize("given", ["0f8e1c2d3b4a59687766554433221100",  # Nginx's $request_id
                                   "client.trace:42_a-b", "x" * 128])
def test_a_valid_client_id_is_kept_beside_the_portals_own(edge: Edge, given: str) -> None:
    for response in (httpx.get(edge.url + "/healthz", headers={"x-request-id": given}),
                     httpx.post(edge.url + CHAT, json=GOOD, headers={"x-request-id": given})):
        assert response.headers["x-request-id"] == given
        assert response.headers["x-portal-request-id"].startswith("req_")


@pytest.mark.parametrize("given", ["x" * 129, "two words", "semi;colon", "caf\u00e9", ""])
def test_an_invalid_client_id_is_replaced(edge: Edge, given: str) -> None:
    response = httpx.get(edge.url + "/healthz", headers={"x-request-id": given.encode()})
    assert response.headers["x-request-id"].startswith("req_")
    assert "x-portal-request-id" not in response.headers


def test_requests_sharing_a_client_id_are_each_reserved_and_charged(edge: Edge) -> None:
    """The client's id is not the reservation's: two calls with one id are two charges."""
    headers = {"authorization": f"Bearer {edge.key}", "x-request-id": "same-id"}

    def balance() -> int:
        answer = httpx.get(edge.url + "/v1/key", headers=headers)
        return answer.json()["data"]["balance_micros"]

    before = balance()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: httpx.post(edge.url + CHAT, json=GOOD,
                                                     headers=headers, timeout=30), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert {a.headers["x-request-id"] for a in answers} == {"same-id"}
    assert len({a.headers["x-portal-request-id"] for a in answers}) == 4
    charged = sum(int(a.headers["x-portal-cost-micros"]) for a in answers)
    assert charged > 0
    assert before - balance() == charged


def test_a_client_gone_mid_body_leaves_no_traceback(edge: Edge) -> None:
    watch = LogWatch(edge.portal)
    for sent in (b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\n",  # mid-head
                 b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\n"  # mid-body
                 b"Content-Length: 1000\r\n\r\n{\"model\":"):
        sock = edge.connect()
        sock.sendall(sent)
        time.sleep(0.3)
        sock.close()
    sock = edge.connect()  # and a client gone while its answer streams
    body = json.dumps({**GOOD, "max_tokens": 10, "stream": True}).encode()
    sock.sendall(edge.head("POST", CHAT, f"Authorization: Bearer {edge.key}",
                           f"Content-Length: {len(body)}") + body)
    sock.recv(100)
    sock.close()
    time.sleep(3)  # the stream's pace: 5 tokens per second
    with edge.connect() as sock:  # the worker still answers
        sock.sendall(edge.head("GET", "/healthz"))
        assert read_answer(sock)[0] == 200
    assert watch.problems() == [], watch.text()
