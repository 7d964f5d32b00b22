"""Broken streams: the client gets a clean end and pays for what it received, no more."""

from __future__ import annotations

import json
import signal
import time

import httpx
import openai
import pytest

from simnode.testing import free_port, start_simnode
from simnode.tokenizer import chat_prompt_tokens
from tests.support.standard import MODEL, Deployment, expected_cost

MESSAGES = [{"role": "user", "content": "Write a long story."}]


def stream_body(max_tokens: int = 40) -> dict:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True}


def usage_of(deployment: Deployment, key_id: int) -> tuple:
    deployment.wait_ledger(key_id, 1)
    (row,) = deployment.sql("SELECT prompt_tokens, completion_tokens, cost, status, cancelled "
                            "FROM usage_log WHERE key_id=?", key_id)
    return row


@pytest.fixture
def faults(deployment: Deployment):
    """Set simnode faults for one test and put them back after."""
    def set_faults(**changes: object) -> None:
        response = httpx.post(deployment.node.url + "/sim/faults", json=changes)
        assert response.status_code == 200, response.text
    yield set_faults
    set_faults(fail_after=None, fail_status=None, hang=False, tokens_per_second=0.0, ttft=0.0)


def test_node_breaking_mid_stream_ends_cleanly_and_charges_what_was_sent(
        deployment: Deployment, faults) -> None:
    faults(fail_after=7)
    key_id, key = deployment.key("1")
    before = deployment.balance(key)
    with httpx.stream("POST", deployment.url + "/v1/chat/completions", json=stream_body(),
                      headers={"authorization": f"Bearer {key}"}, timeout=30) as response:
        assert response.status_code == 200
        body = response.read().decode()
    events = [e.removeprefix("data: ") for e in body.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"  # a clean end, not a dropped connection
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_error"
    tokens = [json.loads(e) for e in events[:-2]]
    content = [c for c in tokens if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 7
    prompt = chat_prompt_tokens(MESSAGES)
    assert deployment.balance(key) == before - expected_cost(prompt, 7)
    assert usage_of(deployment, key_id) == (prompt, 7, expected_cost(prompt, 7), 502, 0)
    deployment.assert_books_balance(key_id)


def test_openai_sdk_sees_a_broken_stream_as_an_error(deployment: Deployment, faults) -> None:
    faults(fail_after=3)
    _key_id, key = deployment.key("1")
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key=key, max_retries=0)
    received = []
    with pytest.raises(openai.APIError):
        body = stream_body()
        body.pop("ignore_eos")
        for chunk in client.chat.completions.create(**body, extra_body={"ignore_eos": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert len(received) == 3


def test_client_abort_is_charged_for_tokens_delivered(deployment: Deployment, faults) -> None:
    faults(tokens_per_second=20.0)
    key_id, key = deployment.key("1")
    before = deployment.balance(key)
    received = 0
    with httpx.stream("POST", deployment.url + "/v1/chat/completions", json=stream_body(200),
                      headers={"authorization": f"Bearer {key}"}, timeout=30) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                received += 1
                if received == 5:
                    break  # closes the connection
    prompt, completion, cost, status, cancelled = usage_of(deployment, key_id)
    assert (status, cancelled) == (499, 1)
    assert prompt == chat_prompt_tokens(MESSAGES)
    # The edge wrote the tokens the client read, and at most one more it could not.
    assert 5 <= completion <= 6
    assert cost == expected_cost(prompt, completion)
    assert deployment.balance(key) == before - cost
    deployment.assert_books_balance(key_id)


def test_node_killed_mid_stream(deployment: Deployment) -> None:
    node = start_simnode("--model", "victim", "--tokens-per-second", "20")
    try:
        deployment.portal.add_model("victim-model", served_name="victim")
        deployment.portal.add_node("victim-model", node.url)
        key_id, key = deployment.key("1")
        for _ in range(50):
            probe = httpx.get(deployment.url + "/v1/models/victim-model")
            if probe.status_code == 200:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        received = 0
        body = {**stream_body(200), "model": "victim-model"}
        with httpx.stream("POST", deployment.url + "/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {key}"}, timeout=30) as response:
            lines = []
            for line in response.iter_lines():
                if not line:
                    continue
                lines.append(line)
                if '"content":"' in line and '"content":""' not in line:
                    received += 1
                    if received == 4:
                        node.process.send_signal(signal.SIGKILL)
        assert lines[-1] == "data: [DONE]"
        assert '"upstream_error"' in lines[-2]
        prompt, completion, cost, status, _ = usage_of(deployment, key_id)
        assert status == 502
        assert completion >= 4
        content_lines = [x for x in lines if '"content":"' in x and '"content":""' not in x]
        assert completion == len(content_lines)
        assert cost == expected_cost(prompt, completion)
    finally:
        node.stop()


def test_refused_connection_is_retried_on_another_node(deployment: Deployment, simnode) -> None:
    alive = simnode("--model", "pair")
    deployment.portal.add_model("pair-model", served_name="pair")
    deployment.portal.add_node("pair-model", f"http://127.0.0.1:{free_port()}")  # nothing there
    deployment.portal.add_node("pair-model", alive.url)
    _key_id, key = deployment.key("1")
    time.sleep(0.3)
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key=key, max_retries=0)
    for _ in range(10):
        answer = client.chat.completions.create(model="pair-model", messages=MESSAGES,
                                                max_tokens=2)
        assert answer.usage.completion_tokens == 2
