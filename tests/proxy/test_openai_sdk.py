"""The official openai SDK against a real portal: answers, streams and exact charges."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from simnode.tokenizer import chat_prompt_tokens, completion_prompt_tokens
from tests.support.standard import MODEL, REPLY_TOKENS, SERVED, Deployment, expected_cost

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three prime numbers, please."}]


def sdk(deployment: Deployment, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=deployment.url + "/v1", api_key=key, max_retries=0)


def test_chat_completion_is_answered_and_charged_exactly(deployment: Deployment) -> None:
    key_id, key = deployment.key("1")
    before = deployment.balance(key)
    raw = sdk(deployment, key).chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=7)
    answer = raw.parse()

    prompt = chat_prompt_tokens(MESSAGES)
    assert answer.model == MODEL  # the node's served name is rewritten
    assert answer.usage.prompt_tokens == prompt
    assert answer.usage.completion_tokens == 7
    assert answer.choices[0].finish_reason == "length"
    cost = expected_cost(prompt, 7)
    assert int(raw.headers["x-portal-cost-micros"]) == cost
    assert round(answer.usage.cost * 1_000_000) == cost  # usage.cost, in USD, as OpenRouter
    assert raw.headers["x-request-id"].startswith("req_")
    assert deployment.balance(key) == before - cost

    deployment.wait_ledger(key_id, 1)
    assert deployment.assert_books_balance(key_id) == before - cost
    (status, pt, ct, charged, streamed), = deployment.sql(
        "SELECT status, prompt_tokens, completion_tokens, cost, streamed FROM usage_log "
        "WHERE request_id=?", raw.headers["x-request-id"])
    assert (status, pt, ct, charged, streamed) == (200, prompt, 7, cost, 0)


def test_stream_is_relayed_chunk_by_chunk_and_charged_exactly(deployment: Deployment) -> None:
    key_id, key = deployment.key("1")
    before = deployment.balance(key)
    stream = sdk(deployment, key).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) == REPLY_TOKENS
    assert all(c.usage is None for c in chunks)  # not asked for: taken back out
    assert all(c.model == MODEL for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    cost = expected_cost(chat_prompt_tokens(MESSAGES), REPLY_TOKENS)
    assert deployment.balance(key) == before - cost
    deployment.wait_ledger(key_id, 1)
    assert deployment.assert_books_balance(key_id) == before - cost


def test_stream_with_include_usage_gets_the_final_usage_chunk(deployment: Deployment) -> None:
    _key_id, key = deployment.key("1")
    chunks = list(sdk(deployment, key).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=5,
        stream_options={"include_usage": True}))
    final = chunks[-1]
    assert final.choices == []
    assert final.usage.prompt_tokens == chat_prompt_tokens(MESSAGES)
    assert final.usage.completion_tokens == 5
    assert round(final.usage.cost * 1_000_000) == expected_cost(chat_prompt_tokens(MESSAGES), 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_text_completions_stream_and_not(deployment: Deployment) -> None:
    key_id, key = deployment.key("1")
    client = sdk(deployment, key)
    prompt = "Once upon a time"
    before = deployment.balance(key)
    answer = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4)
    assert answer.model == MODEL
    assert answer.usage.completion_tokens == 4
    pieces = [c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, stream=True) if c.choices]
    assert len([p for p in pieces if p]) == 6
    p = completion_prompt_tokens(prompt)
    assert deployment.balance(key) == before - expected_cost(p, 4) - expected_cost(p, 6)
    deployment.wait_ledger(key_id, 2)
    deployment.assert_books_balance(key_id)


def test_extra_vllm_parameters_pass_through(deployment: Deployment) -> None:
    _key_id, key = deployment.key("1")
    answer = sdk(deployment, key).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=50,
        extra_body={"ignore_eos": True, "top_k": 5, "repetition_penalty": 1.1})
    # ignore_eos makes simnode generate exactly max_tokens: proof the extras arrived.
    assert answer.usage.completion_tokens == 50


def test_models_list_has_prices_and_state(deployment: Deployment) -> None:
    _key_id, key = deployment.key("1")
    models = sdk(deployment, key).models.list()
    entry = next(m for m in models.data if m.id == MODEL)
    extra = entry.model_extra
    assert extra["pricing"]["input"] == "0.500000"
    assert extra["pricing"]["output_micros"] == 1_500_000
    assert extra["state"] == "running"


def test_key_endpoint_reports_balance_and_limits(deployment: Deployment) -> None:
    _key_id, key = deployment.key("2.5", rpm=77, tpm=12345)
    data = httpx.get(deployment.url + "/v1/key",
                     headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert data["balance"] == "2.500000"
    assert data["limits"] == {"requests_per_minute": 77, "tokens_per_minute": 12345}
    assert data["prefix"] == key[:14]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints(deployment: Deployment, path: str) -> None:
    response = httpx.get(deployment.url + path)
    assert response.status_code == 200
    assert response.headers["x-request-id"]


def test_metrics_count_requests_and_spend(deployment: Deployment) -> None:
    _key_id, key = deployment.key("1")
    sdk(deployment, key).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
    text = httpx.get(deployment.url + "/metrics").text
    assert f'portal_requests_total{{endpoint="chat",model="{MODEL}",status="200"}}' in text
    assert "portal_spend_micro_dollars_total" in text
    assert "portal_request_duration_seconds_bucket" in text


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_beyond_the_catalogued_context_is_refused(deployment: Deployment,
                                                             stream: bool) -> None:
    """The node serves 8,192 tokens of context but the catalogue says 40: the
    reservation can hold 40 completion tokens, so no more may be asked for."""
    short = "m1-short"
    if not any(m["id"] == short for m in deployment.portal.cli_json("models", "list", "--json")):
        deployment.portal.add_model(short, served_name=SERVED, context=40)
        deployment.portal.add_node(short, deployment.node.url)
        # Adding the node learnt its context (8,192); say 40 again, as an operator's
        # edit would, until the next health check.
        deployment.portal.add_model(short, served_name=SERVED, context=40)
    key_id, key = deployment.key("0.01")
    client = sdk(deployment, key)
    for _ in range(50):
        try:
            if client.models.retrieve(short).context_length == 40:
                break
        except openai.NotFoundError:
            pass
        time.sleep(0.1)  # every worker hears of the model
    ask = {"model": short, "messages": MESSAGES, "stream": stream,
           "extra_body": {"ignore_eos": True}}

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**ask, max_tokens=500)
    error = refused.value.body
    assert (error["code"], error["param"]) == ("context_length_exceeded", "max_tokens")
    assert "500" in error["message"] and "40" in error["message"]
    assert deployment.balance(key) == 10_000  # nothing held, nothing charged

    if stream:
        chunks = list(client.chat.completions.create(
            **ask, max_tokens=40, stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(**ask, max_tokens=40).usage
    assert usage.completion_tokens == 40
    deployment.wait_ledger(key_id, 1)
    (cost,), = deployment.sql("SELECT cost FROM usage_log WHERE key_id=?", key_id)
    assert cost == expected_cost(usage.prompt_tokens, 40)
    assert deployment.assert_books_balance(key_id) == 10_000 - cost
