"""Whatever a client sends gets a clean answer in OpenAI's shape, and the log no traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.http.conftest import MODEL, Edge, LogWatch, openai_error, read_answer

CHAT = "/v1/chat/completions"
MESSAGES = '"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize("raw", [
    f'{{"model": "{MODEL}", {MESSAGES}, "temperature": 1e999}}',
    f'{{"model": "{MODEL}", {MESSAGES}, "temperature": -1E+400}}',
    f'{{"model": "{MODEL}", {MESSAGES}, "logit_bias": {{"5": 1e999}}}}',
    f'{{"model": "{MODEL}", {MESSAGES}, "top_p": Infinity}}',
    f'{{"model": "{MODEL}", {MESSAGES}, "top_p": NaN}}',
])
def test_numbers_beyond_a_float_are_refused(edge: Edge, raw: str) -> None:
    response = httpx.post(edge.url + CHAT, content=raw.encode(),
                          headers={"authorization": f"Bearer {edge.key}",
                                   "content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = openai_error(response.content)
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]


def test_tiny_and_large_finite_numbers_still_pass(edge: Edge) -> None:
    raw = f'{{"model": "{MODEL}", {MESSAGES}, "max_tokens": 1, "top_p": 1e-999, "seed": 7}}'
    response = httpx.post(edge.url + CHAT, content=raw.encode(),
                          headers={"authorization": f"Bearer {edge.key}"})
    assert response.status_code == 200, response.text


def test_static_files_are_served(edge: Edge) -> None:
    response = httpx.get(edge.url + "/static/style.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/static/style.css/x", "/static/app.js/", "/static/",
                                  "/static", "/static/nothing.js", "/static/../pyproject.toml",
                                  "/static/%2e%2e/app.py", "/static/..%2f..%2fapp.py"])
def test_other_paths_under_static_are_a_clean_404(edge: Edge, path: str) -> None:
    watch = LogWatch(edge.portal)
    with edge.connect() as sock:  # raw: a client library would tidy the path up
        sock.sendall(edge.head("GET", path))
        status, headers, body = read_answer(sock)
    if path == "/static/app.js/":
        assert status in (200, 404)  # Sanic's lenient trailing slash: the file itself
    else:
        assert status == 404
        assert headers["content-type"].startswith("application/json")
        assert openai_error(body)["code"] == "not_found"
    assert watch.problems() == []
