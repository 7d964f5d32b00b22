"""What routing and billing read from the bodies of embeddings, rerank, score, responses,
messages and tokenize, and the refusals a client hears before anything is reserved."""

from __future__ import annotations

import json

import pytest

from edge.billing.reservations import worst_case_tokens
from edge.errors import InvalidRequest
from edge.metering.pooling_requests import MAX_INPUTS
from edge.metering.request_spec import Endpoint, check_fits, check_kind, parse_request


def parse(endpoint: Endpoint, **body):
    return parse_request(json.dumps({"model": "m", **body}).encode(), endpoint)


def refused(endpoint: Endpoint, **body) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(endpoint, **body)
    return caught.value


@pytest.mark.parametrize(("value", "inputs"), [
    ("hello", 1), (["a", "b", "c"], 3), ([1, 2, 3], 1), ([[1, 2], [3]], 2)])
def test_embeddings_count_their_inputs_and_reserve_no_output(value, inputs) -> None:
    spec = parse(Endpoint.EMBEDDINGS, input=value, encoding_format="base64", dimensions=64)
    assert (spec.prompts, spec.max_tokens, spec.stream) == (inputs, 0, False)
    assert worst_case_tokens(100, spec.max_tokens, spec.choices, 8192, spec.prompts)[1] == 0


@pytest.mark.parametrize(("value", "param"), [
    ([], "input"), ("", "input"), (["a", 1], "input[1]"), ([1, "a"], "input[1]"),
    ([[1], "a"], "input[1]"), ([1, -5], "input[1]"), ([[1], []], "input[1]"),
    ([True], "input[0]"), ({"text": "x"}, "input"), (None, "input"),
    (["x"] * (MAX_INPUTS + 1), "input")])
def test_embedding_inputs_no_node_takes_are_refused(value, param) -> None:
    assert refused(Endpoint.EMBEDDINGS, input=value).param == param


def test_embedding_options_are_checked() -> None:
    assert refused(Endpoint.EMBEDDINGS, input="x", encoding_format="hex").param == \
        "encoding_format"
    assert refused(Endpoint.EMBEDDINGS, input="x", dimensions=0).param == "dimensions"
    assert refused(Endpoint.EMBEDDINGS, input="x", dimensions="9").param == "dimensions"


def test_a_rerank_reserves_the_query_once_per_document() -> None:
    query = "q" * 500
    raw = json.dumps({"model": "m", "query": query, "documents": ["d1", "d2", "d3"]}).encode()
    spec = parse_request(raw, Endpoint.RERANK)
    assert spec.prompts == 4  # the query and three documents, each up to the context
    assert spec.prompt_bound is not None and spec.prompt_bound >= len(raw) + 3 * len(query)
    cohere = parse(Endpoint.RERANK, query="q", documents=[{"text": "d"}], top_n=1,
                   return_documents=True)
    assert cohere.prompts == 2


@pytest.mark.parametrize(("body", "param"), [
    ({"documents": ["d"]}, "query"), ({"query": "q"}, "documents"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": ["d", 3]}, "documents[1]"),
    ({"query": "q", "documents": ["d"], "top_n": -1}, "top_n"),
    ({"query": "q", "documents": ["d"], "return_documents": "yes"}, "return_documents")])
def test_rerank_refusals(body, param) -> None:
    assert refused(Endpoint.RERANK, **body).param == param


def test_score_pairs_one_to_many_and_many_to_many() -> None:
    # Texts the node may read, each up to the context (an embedding model embeds each).
    assert parse(Endpoint.SCORE, text_1="q", text_2=["a", "b"]).prompts == 3
    assert parse(Endpoint.SCORE, text_1=["q", "r"], text_2=["a", "b"]).prompts == 4
    assert parse(Endpoint.SCORE, text_1="q", text_2="a").prompts == 2
    assert refused(Endpoint.SCORE, text_1=["q", "r"], text_2=["a", "b", "c"]).param == "text_1"
    assert refused(Endpoint.SCORE, text_1="q").param == "text_2"
    assert parse(Endpoint.SCORE, queries="q", documents=["a", "b", "c"]).prompts == 4
    # Two pairs named: the node would score one and the reservation bound the other.
    assert refused(Endpoint.SCORE, text_1="a", text_2="b", queries="q",
                   documents=["d"]).param == "documents"
    assert refused(Endpoint.SCORE, queries=["q", "r"], items=["a"]).param == "queries"


def test_responses_spec() -> None:
    spec = parse(Endpoint.RESPONSES, input="hi", max_output_tokens=32, stream=True)
    assert (spec.stream, spec.max_tokens, spec.stateful) == (True, 32, False)
    items = parse(Endpoint.RESPONSES, input=[{"role": "user", "content": "hi"}])
    assert items.max_tokens is None and items.prompt_bound is None
    follow_up = parse(Endpoint.RESPONSES, input="more", previous_response_id="resp_1")
    # The node prepends what it stored: the prompt is bounded by the context, not the body.
    assert follow_up.stateful
    assert worst_case_tokens(follow_up.prompt_bound or 0, None, 1, 4096, 1)[0] == 4096
    with pytest.raises(InvalidRequest) as caught:
        check_fits(parse(Endpoint.RESPONSES, input="x", max_output_tokens=9000), 4096)
    assert caught.value.param == "max_output_tokens"


@pytest.mark.parametrize(("body", "param"), [
    ({}, "input"), ({"input": ""}, "input"), ({"input": []}, "input"),
    ({"input": [3]}, "input"), ({"input": "x", "instructions": 3}, "instructions"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "previous_response_id": 5}, "previous_response_id"),
    ({"input": "x", "temperature": "hot"}, "temperature")])
def test_responses_refusals(body, param) -> None:
    assert refused(Endpoint.RESPONSES, **body).param == param


def test_messages_spec_requires_max_tokens_as_anthropic_does() -> None:
    spec = parse(Endpoint.MESSAGES, max_tokens=50, system="Be brief.",
                 messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert (spec.max_tokens, spec.stream) == (50, False)
    assert refused(Endpoint.MESSAGES, messages=[{"role": "user", "content": "hi"}]).param == \
        "max_tokens"


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 5}, "messages"), ({"max_tokens": 5, "messages": []}, "messages"),
    ({"max_tokens": 5, "messages": [{"content": "x"}]}, "messages.0"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 3}, "system"),
    ({"max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens")])
def test_messages_refusals(body, param) -> None:
    assert refused(Endpoint.MESSAGES, **body).param == param


def test_tokenize_and_detokenize_are_free_and_checked() -> None:
    assert parse(Endpoint.TOKENIZE, prompt="hi").endpoint.free
    assert parse(Endpoint.TOKENIZE, messages=[{"role": "user", "content": "hi"}]).prompts == 1
    assert parse(Endpoint.DETOKENIZE, tokens=[1, 2]).endpoint.free
    assert refused(Endpoint.TOKENIZE).param == "prompt"
    assert refused(Endpoint.TOKENIZE, messages=[]).param == "messages"
    assert refused(Endpoint.DETOKENIZE, tokens=[1, -1]).param == "tokens[1]"
    assert refused(Endpoint.DETOKENIZE, tokens="1 2").param == "tokens"


@pytest.mark.parametrize(("endpoint", "kind", "ok"), [
    (Endpoint.CHAT, "generate", True), (Endpoint.CHAT, "embed", False),
    (Endpoint.EMBEDDINGS, "embed", True), (Endpoint.EMBEDDINGS, "generate", False),
    (Endpoint.EMBEDDINGS, "rerank", False), (Endpoint.RERANK, "rerank", True),
    (Endpoint.RERANK, "embed", True), (Endpoint.SCORE, "generate", False),
    (Endpoint.MESSAGES, "rerank", False), (Endpoint.TOKENIZE, "embed", True)])
def test_a_model_serves_the_routes_of_its_kind(endpoint, kind, ok) -> None:
    bodies = {Endpoint.CHAT: {"messages": [{"role": "user", "content": "x"}]},
              Endpoint.EMBEDDINGS: {"input": "x"}, Endpoint.RERANK: {"query": "q",
                                                                     "documents": ["d"]},
              Endpoint.SCORE: {"text_1": "a", "text_2": "b"},
              Endpoint.MESSAGES: {"max_tokens": 1, "messages": [{"role": "user",
                                                                  "content": "x"}]},
              Endpoint.TOKENIZE: {"prompt": "x"}}
    spec = parse(endpoint, **bodies[endpoint])
    if ok:
        check_kind(spec, kind, "m")
    else:
        with pytest.raises(InvalidRequest) as caught:
            check_kind(spec, kind, "m")
        assert caught.value.code == "model_kind_mismatch"
        assert caught.value.param == "model"
