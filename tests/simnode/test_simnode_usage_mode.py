"""``--usage none``: a node that reports no usage, like llama.cpp's server; ``--no-tokenize``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from simnode.cli import add_arguments, config_from_args
from simnode.config import SimConfig
from simnode.testing import SimnodeProcess, json_events, start_simnode
from simnode.tokenizer import (
    chat_prompt_tokens,
    chat_seed_text,
    completion_prompt_tokens,
    generate_text,
    generate_tokens,
)
from tests.simnode.conftest import NODE_ARGS

MESSAGES = [{"role": "user", "content": "Hello, world!"}]
SEED = chat_seed_text(MESSAGES)
ALL_USAGE = {"include_usage": True, "continuous_usage_stats": True}


@pytest.fixture(scope="module")
def bare() -> Iterator[SimnodeProcess]:
    """A node that reports no usage but tokenizes."""
    with start_simnode(*NODE_ARGS, "--usage", "none") as started:
        yield started


def post(node: SimnodeProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(node.url + path, json=body, timeout=10)


@pytest.mark.parametrize("options", [None, {"include_usage": True}, ALL_USAGE])
def test_chat_streams_carry_no_usage_whatever_is_asked(bare: SimnodeProcess, model: str,
                                                      options: dict | None) -> None:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "stream": True,
                            "max_tokens": 5}
    if options is not None:
        body["stream_options"] = options
    response = post(bare, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks, done = json_events(response.text)
    assert done
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)  # no final usage chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert pieces == generate_tokens(SEED, 5)  # the same text as in vLLM mode
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len({c["id"] for c in chunks}) == 1


def test_completion_streams_carry_no_usage(bare: SimnodeProcess, model: str) -> None:
    response = post(bare, "/v1/completions", {"model": model, "prompt": "Once upon", "stream": True,
                                              "max_tokens": 3, "stream_options": ALL_USAGE})
    chunks, done = json_events(response.text)
    assert done and len(chunks) == 3
    assert all("usage" not in c and c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == generate_text("Once upon", 3)


def test_answers_have_no_usage_key(bare: SimnodeProcess, model: str) -> None:
    chat = post(bare, "/v1/chat/completions", {"model": model, "messages": MESSAGES,
                                               "max_tokens": 4}).json()
    assert list(chat) == ["id", "object", "created", "model", "choices", "prompt_logprobs"]
    assert chat["choices"][0]["message"]["content"] == generate_text(SEED, 4)
    text = post(bare, "/v1/completions", {"model": model, "prompt": "Once upon",
                                          "max_tokens": 2}).json()
    assert list(text) == ["id", "object", "created", "model", "choices"]
    assert text["choices"][0]["text"] == generate_text("Once upon", 2)


def test_tokenize_still_answers(bare: SimnodeProcess, model: str) -> None:
    chat = post(bare, "/tokenize", {"model": model, "messages": MESSAGES}).json()
    assert chat["count"] == chat_prompt_tokens(MESSAGES)
    prompt = post(bare, "/tokenize", {"model": model, "prompt": "Once upon"}).json()
    assert prompt["count"] == completion_prompt_tokens("Once upon")
    text = post(bare, "/tokenize", {"model": model, "prompt": generate_text(SEED, 9),
                                    "add_special_tokens": False}).json()
    assert text["count"] == 9


def test_faults_still_apply(bare: SimnodeProcess, model: str) -> None:
    assert httpx.post(bare.url + "/sim/faults", json={"fail_after": 2}).status_code == 200
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            post(bare, "/v1/chat/completions", {"model": model, "messages": MESSAGES,
                                                "stream": True, "max_tokens": 6})
    finally:
        httpx.post(bare.url + "/sim/faults", json={"fail_after": None})


def test_no_tokenize_leaves_the_routes_out(node_args: tuple[str, ...], model: str) -> None:
    with start_simnode(*node_args, "--no-tokenize") as node:
        for path, body in (("/tokenize", {"model": model, "prompt": "hi"}),
                           ("/detokenize", {"model": model, "tokens": [1]})):
            response = post(node, path, body)
            assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
        answer = post(node, "/v1/chat/completions", {"model": model, "messages": MESSAGES,
                                                     "max_tokens": 2}).json()
        assert answer["usage"]["completion_tokens"] == 2  # usage is still vLLM's


def test_default_mode_still_reports_usage(node_url: str, model: str) -> None:
    response = httpx.post(node_url + "/v1/chat/completions", timeout=10, json={
        "model": model, "messages": MESSAGES, "stream": True, "max_tokens": 2,
        "stream_options": {"include_usage": True}})
    chunks, _done = json_events(response.text)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_the_options_reach_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--model", "m", "--port", "9"]))
    assert (config.usage, config.tokenize) == ("vllm", True)
    config = config_from_args(parser.parse_args(["--model", "m", "--port", "9", "--usage",
                                                 "none", "--no-tokenize"]))
    assert (config.usage, config.tokenize) == ("none", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--port", "9", "--usage", "some"])
    with pytest.raises(ValueError, match="usage"):
        SimConfig(model="m", usage="some")


def test_json_of_a_bare_chunk_is_compact(bare: SimnodeProcess, model: str) -> None:
    raw = post(bare, "/v1/chat/completions", {"model": model, "messages": MESSAGES,
                                              "stream": True, "max_tokens": 1}).text
    first = raw.split("\n\n")[0].removeprefix("data: ")
    assert first == json.dumps(json.loads(first), separators=(",", ":"))


def test_responses_and_messages_report_usage_in_any_mode(bare: SimnodeProcess,
                                                         model: str) -> None:
    responses = post(bare, "/v1/responses", {"model": model, "input": "Hello, world!",
                                             "max_output_tokens": 3}).json()
    assert (responses["usage"]["input_tokens"], responses["usage"]["output_tokens"]) == (11, 3)
    messages = post(bare, "/v1/messages", {"model": model, "max_tokens": 3,
                                           "messages": MESSAGES}).json()
    assert messages["usage"] == {"input_tokens": 11, "output_tokens": 3}
