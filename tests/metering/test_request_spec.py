"""Request checks: what routing and billing read from a body."""

from __future__ import annotations

import json

import pytest

from edge.billing.reservations import worst_case_tokens
from edge.errors import InvalidRequest
from edge.metering.request_spec import Endpoint, parse_request


def parse(body: dict, endpoint: Endpoint = Endpoint.CHAT):
    return parse_request(json.dumps(body).encode(), endpoint)


def test_chat_spec() -> None:
    spec = parse({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 9, "max_completion_tokens": 5, "n": 2, "stream": True,
                  "stream_options": {"include_usage": True}})
    assert (spec.model, spec.stream, spec.max_tokens, spec.choices) == ("m", True, 5, 2)
    assert spec.include_usage and not spec.continuous_usage


def test_max_completion_tokens_wins_over_max_tokens_like_vllm() -> None:
    spec = parse({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 1, "max_completion_tokens": 4000})
    assert spec.max_tokens == 4000


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_request(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], '
                      b'"temperature": NaN}', Endpoint.CHAT)


def test_completions_with_a_batch_of_prompts_counts_choices() -> None:
    spec = parse({"model": "m", "prompt": ["a", "b", "c"], "n": 2}, Endpoint.COMPLETIONS)
    assert spec.choices == 6


def test_token_id_prompts() -> None:
    assert parse({"model": "m", "prompt": [1, 2, 3]}, Endpoint.COMPLETIONS).choices == 1
    assert parse({"model": "m", "prompt": [[1], [2]]}, Endpoint.COMPLETIONS).choices == 2


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
    {"model": "m", "messages": [{"role": "assistant", "content": None,
                                 "tool_calls": [{"id": "1"}]}]},
])
def test_valid_message_shapes(body) -> None:
    assert parse(body).model == "m"


def test_worst_case_is_capped_by_the_context() -> None:
    assert worst_case_tokens(100, None, 1, 8192) == (100, 8192)
    assert worst_case_tokens(100_000, 50, 2, 8192) == (8192, 100)
    assert worst_case_tokens(10, 10_000, 3, 4096) == (10, 4096 * 3)
    assert worst_case_tokens(200_000, 16, 16, 8192, prompts=16) == (131_072, 256)


def test_deep_nesting_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest):
        parse_request(b"[" * 100_000, Endpoint.CHAT)
