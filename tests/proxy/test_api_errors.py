"""Every error a client can cause: OpenAI's shape, the right status, nothing charged."""

from __future__ import annotations

import json

import httpx
import pytest

from simnode.testing import free_port
from tests.support.standard import MODEL, Deployment

CHAT = "/v1/chat/completions"
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def post(deployment: Deployment, key: str | None, body: object, *, path: str = CHAT,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = dict(headers or {})
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(deployment.url + path, content=content, headers=sent, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def key(deployment: Deployment) -> tuple[int, str]:
    return deployment.key("5")


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Basic abc", "Bearer sk-ip-short",
    "Bearer sk-ip-aaaaaaaa_" + "x" * 43,  # well formed, unknown
    "Bearer sk-ip-" + "é" * 60,
])
def test_bad_credentials_are_refused(deployment: Deployment, header: str | None) -> None:
    headers = {} if header is None else {"authorization": header.encode("utf-8")}
    response = httpx.post(deployment.url + CHAT, json=GOOD, headers=headers)
    assert_error(response, 401, "invalid_api_key")


def test_a_valid_prefix_with_a_wrong_secret_is_refused(deployment: Deployment, key) -> None:
    _id, secret = key
    forged = secret[:15] + ("A" if secret[15] != "A" else "B") + secret[16:]
    assert_error(post(deployment, forged, GOOD), 401, "invalid_api_key")


@pytest.mark.parametrize(("raw", "param"), [
    (b"", None),
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'"text"', None),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    (json.dumps({"model": 5, "messages": []}).encode(), "model"),
    (json.dumps({"model": MODEL}).encode(), "messages"),
    (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages"),
    (json.dumps({"model": MODEL, "messages": []}).encode(), "messages"),
    (json.dumps({"model": MODEL, "messages": ["hi"]}).encode(), "messages[0]"),
    (json.dumps({"model": MODEL, "messages": [{"content": "x"}]}).encode(), "messages[0].role"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 5}]}).encode(),
     "messages[0].content"),
    (json.dumps({**GOOD, "max_tokens": "10"}).encode(), "max_tokens"),
    (json.dumps({**GOOD, "max_tokens": 0}).encode(), "max_tokens"),
    (json.dumps({**GOOD, "max_tokens": True}).encode(), "max_tokens"),
    (json.dumps({**GOOD, "stream": "yes"}).encode(), "stream"),
    (json.dumps({**GOOD, "n": 1000}).encode(), "n"),
    (json.dumps({**GOOD, "temperature": "hot"}).encode(), "temperature"),
    (json.dumps({**GOOD, "stream_options": [1]}).encode(), "stream_options"),
    (b"[" * 50_000 + b"]" * 50_000, None),
    (b'{"model": "m1", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),
])
def test_malformed_requests_get_400_and_cost_nothing(deployment: Deployment, key, raw: bytes,
                                                     param: str | None) -> None:
    _id, secret = key
    before = deployment.balance(secret)
    error = assert_error(post(deployment, secret, None, raw=raw), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert deployment.balance(secret) == before


def test_completions_checks_its_prompt(deployment: Deployment, key) -> None:
    _id, secret = key
    for prompt in (None, 5, [], [1.5], {"a": 1}):
        response = post(deployment, secret, {"model": MODEL, "prompt": prompt},
                        path="/v1/completions")
        assert assert_error(response, 400)["param"] == "prompt"


def test_oversize_body_is_refused(deployment: Deployment, key) -> None:
    _id, secret = key
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    response = post(deployment, secret, body)
    assert_error(response, 413)


def test_unknown_model_is_404(deployment: Deployment, key) -> None:
    _id, secret = key
    error = assert_error(post(deployment, secret, {**GOOD, "model": "nope"}), 404,
                         "model_not_found")
    assert error["param"] == "model"


def test_unknown_route_and_method_in_openai_shape(deployment: Deployment) -> None:
    assert_error(httpx.get(deployment.url + "/v1/nothing-here"), 404)
    assert_error(httpx.get(deployment.url + CHAT), 405)


def test_insufficient_credit_is_402_and_keeps_the_balance(deployment: Deployment) -> None:
    _id, poor = deployment.key("0.000100")
    response = post(deployment, poor, {**GOOD, "max_tokens": 4000})
    error = assert_error(response, 402, "insufficient_quota")
    assert error["type"] == "insufficient_quota"
    assert deployment.balance(poor) == 100


def test_rate_limit_is_429_with_retry_after(deployment: Deployment) -> None:
    _id, limited = deployment.key("5", rpm=2)
    statuses = [post(deployment, limited, GOOD) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert_error(statuses[2], 429, "rate_limit_exceeded")
    assert int(statuses[2].headers["retry-after"]) >= 1


def test_token_rate_limit_counts_the_tokens_really_used(deployment: Deployment) -> None:
    _id, limited = deployment.key("5", tpm=300)
    # Short answers give back most of what their worst case held: many fit in a minute.
    for _ in range(4):
        assert post(deployment, limited, {**GOOD, "max_tokens": 250}).status_code == 200
    # ignore_eos makes the node use all 250 tokens: the bucket runs dry.
    long = {**GOOD, "max_tokens": 250, "ignore_eos": True}
    statuses = [post(deployment, limited, long).status_code for _ in range(3)]
    assert statuses[0] == 200
    assert statuses[-1] == 429


def test_model_without_running_node_is_503_warming(deployment: Deployment, key) -> None:
    deployment.portal.add_model("cold-model")
    _id, secret = key
    before = deployment.balance(secret)
    for _ in range(50):  # the event reaches both workers quickly
        response = post(deployment, secret, {**GOOD, "model": "cold-model"})
        if response.status_code != 404:
            break
    error = assert_error(response, 503, "model_warming")
    assert "cold-model" in error["message"]
    assert "none can be started on demand" in error["message"]  # no EC2 node to boot
    assert int(response.headers["retry-after"]) > 0
    assert deployment.balance(secret) == before


def test_node_rejecting_the_request_passes_its_400_on(deployment: Deployment, key) -> None:
    _id, secret = key
    before = deployment.balance(secret)
    # More than the node's context: vLLM (and simnode) answer 400.
    response = post(deployment, secret, {**GOOD, "max_tokens": 100_000})
    error = assert_error(response, 400)
    assert "context" in error["message"]
    assert deployment.balance(secret) == before


def _until_routed(deployment: Deployment, secret: str, model: str) -> httpx.Response:
    """Post until the model is known and its node routed (not 404, not warming)."""
    for _ in range(50):
        response = post(deployment, secret, {**GOOD, "model": model})
        if response.status_code != 404 and \
                response.json().get("error", {}).get("code") != "model_warming":
            return response
    return response


def test_refusing_node_is_503_with_retry_after_and_costs_nothing(deployment: Deployment,
                                                                 simnode) -> None:
    node = simnode("--model", "broken", "--fail-status", "500")
    deployment.portal.add_model("broken-model", served_name="broken")
    deployment.portal.add_node("broken-model", node.url)
    _id, secret = deployment.key("1")
    response = _until_routed(deployment, secret, "broken-model")
    assert_error(response, 503, "upstream_unavailable")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    # Marked down: the next call is told to come back, without reaching the node.
    again = post(deployment, secret, {**GOOD, "model": "broken-model"})
    assert_error(again, 503, "upstream_unavailable")
    assert "retry-after" in again.headers
    assert deployment.balance(secret) == 1_000_000


def test_unreachable_node_is_503_with_retry_after(deployment: Deployment) -> None:
    deployment.portal.add_model("gone-model")
    deployment.portal.add_node("gone-model", f"http://127.0.0.1:{free_port()}")
    _id, secret = deployment.key("1")
    response = _until_routed(deployment, secret, "gone-model")
    assert_error(response, 503, "upstream_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert deployment.balance(secret) == 1_000_000


def test_node_refusal_passes_its_message_and_param(deployment: Deployment, key) -> None:
    _id, secret = key
    before = deployment.balance(secret)
    response = post(deployment, secret, {**GOOD, "n": 2})  # simnode serves only n=1
    error = assert_error(response, 400)
    assert "n=1" in error["message"]
    assert error["param"] == "n"
    assert error["type"] == "invalid_request_error"
    assert deployment.balance(secret) == before


def test_garbage_never_causes_a_500(deployment: Deployment, key) -> None:
    import random

    _id, secret = key
    rng = random.Random(7)
    fields = ["model", "messages", "prompt", "stream", "max_tokens", "n", "stream_options",
              "temperature", "top_k", "logprobs", "seed"]
    values = [None, True, 0, -1, 2**70, 1.5, "", "x", [], [{}], {}, {"a": [1]}, MODEL,
              [{"role": "user", "content": "hi"}], [{"role": 1}], float("1e308")]
    for _ in range(150):
        body = {rng.choice(fields): rng.choice(values) for _ in range(rng.randint(0, 6))}
        path = rng.choice([CHAT, "/v1/completions"])
        response = post(deployment, secret, None, path=path,
                        raw=json.dumps(body, allow_nan=True).encode())
        assert response.status_code < 500 or response.status_code in (502, 503), (
            body, response.text)
        assert response.headers["x-request-id"]
