"""The bodies of the routes that read text and generate none: embeddings, rerank, score,
and the free ``/tokenize`` and ``/detokenize``.

They are charged per input token at the model's input price, so the reservation
holds the prompt's bound and no output. The bound is the body's length in bytes,
except where the node reads one text several times: a rerank or a one-to-many
score pairs the query with every document, so the query counts once per document.
"""

from __future__ import annotations

import json
from typing import Any

from edge.errors import InvalidRequest
from edge.metering.request_spec import Endpoint, RequestSpec, optional_int

__all__ = ["MAX_INPUTS", "parse_detokenize", "parse_embeddings", "parse_rerank",
           "parse_score", "parse_tokenize"]

#: Inputs, documents or pairs in one request (OpenAI's limit for embeddings).
MAX_INPUTS = 2048
#: Tokens a node may add around each text of a pair (CLS, SEP, EOS ...), for the bound.
_SPECIALS_PER_PAIR = 4


def _spec(endpoint: Endpoint, body: dict[str, Any], model: str, prompts: int,
          bound: int | None = None) -> RequestSpec:
    return RequestSpec(endpoint=endpoint, body=body, model=model, stream=False, max_tokens=0,
                       choices=1, n=1, prompts=prompts, include_usage=False,
                       continuous_usage=False, prompt_bound=bound)


def parse_embeddings(body: dict[str, Any], model: str, _size: int) -> RequestSpec:
    """``POST /v1/embeddings``: ``input`` a string, strings, token ids or lists of them."""
    inputs = _embedding_inputs(body.get("input"))
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.",
                             param="encoding_format")
    optional_int(body, "dimensions", minimum=1)
    return _spec(Endpoint.EMBEDDINGS, body, model, inputs)


def _embedding_inputs(value: Any) -> int:
    """How many inputs ``input`` holds, refusing what no node takes."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be an empty string.", param="input")
        return 1
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a non-empty string, an array of strings, an "
                             "array of token ids or an array of arrays of token ids.",
                             param="input")
    _check_count(len(value), "input")
    first = value[0]
    if isinstance(first, str):
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise InvalidRequest(f"'input[{index}]' must be a non-empty string, like the "
                                     "first input.", param=f"input[{index}]")
        return len(value)
    if isinstance(first, list):
        for index, item in enumerate(value):
            if not isinstance(item, list) or not item:
                raise InvalidRequest(f"'input[{index}]' must be a non-empty array of token "
                                     "ids, like the first input.", param=f"input[{index}]")
            _check_token_ids(item, f"input[{index}]")
        return len(value)
    _check_token_ids(value, "input")
    return 1


def _check_token_ids(ids: list[Any], param: str) -> None:
    for index, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise InvalidRequest(f"'{param}[{index}]' must be a token id (an integer >= 0); "
                                 "an input mixes types or holds a negative id.",
                                 param=f"{param}[{index}]")


def _check_count(count: int, param: str) -> None:
    if count > MAX_INPUTS:
        raise InvalidRequest(f"'{param}' holds {count} items; at most {MAX_INPUTS} are "
                             "allowed in one request.", param=param)


def _text(value: Any, param: str) -> str:
    """A text of a pair: a string, or a ``{"text": ...}`` document as Cohere sends it."""
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        value = value["text"]
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}' must be a string.", param=param)
    return value


def _texts(value: Any, param: str, *, one_ok: bool) -> list[str]:
    if one_ok and (isinstance(value, str) or isinstance(value, dict)):
        return [_text(value, param)]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{param}' must be a non-empty array of strings"
                             + (" or a string." if one_ok else "."), param=param)
    _check_count(len(value), param)
    return [_text(item, f"{param}[{index}]") for index, item in enumerate(value)]


def _repeat_bound(size: int, repeated: str, pairs: int) -> int:
    """Tokens of ``pairs`` pairs that each repeat ``repeated`` (at most a token per byte)."""
    return size + pairs * (len(json.dumps(repeated).encode()) + _SPECIALS_PER_PAIR)


def parse_rerank(body: dict[str, Any], model: str, size: int) -> RequestSpec:
    """``POST /v1/rerank`` (Jina's and Cohere's shape): one query, many documents."""
    query = _text(body.get("query"), "query")
    documents = _texts(body.get("documents"), "documents", one_ok=False)
    optional_int(body, "top_n", minimum=0)
    flag = body.get("return_documents")
    if flag is not None and not isinstance(flag, bool):
        raise InvalidRequest("'return_documents' must be a boolean.", param="return_documents")
    # The query and each document may each fill the context (an embedding model embeds
    # each on its own; a cross-encoder's pairs are fewer).
    return _spec(Endpoint.RERANK, body, model, len(documents) + 1,
                 _repeat_bound(size, query, len(documents)))


#: The pairs of fields ``/score`` takes, in the order vLLM's request union tries them.
_SCORE_FIELDS = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"),
                 ("text_1", "text_2"))


def parse_score(body: dict[str, Any], model: str, size: int) -> RequestSpec:
    """``POST /v1/score`` (vLLM's): ``text_1`` against ``text_2`` (or ``queries`` against
    ``documents``...), one to one, one to many, or many to many of the same length."""
    named = {name for pair in _SCORE_FIELDS for name in pair if name in body}
    pairs_named = [pair for pair in _SCORE_FIELDS if pair[0] in named and pair[1] in named]
    if len(named) > 2:
        # The node would score one pair of them and the reservation bound another.
        raise InvalidRequest("Name one pair of texts to score: 'text_1' and 'text_2', "
                             "'queries' and 'documents' (or 'items'), or 'data_1' and "
                             "'data_2'.", param=sorted(named)[0])
    names = pairs_named[0] if pairs_named else next(
        (pair for pair in _SCORE_FIELDS if pair[0] in named), ("text_1", "text_2"))
    first = _texts(body.get(names[0]), names[0], one_ok=True)
    second = _texts(body.get(names[1]), names[1], one_ok=True)
    if len(first) > 1 and len(first) != len(second):
        raise InvalidRequest(f"'{names[0]}' holds {len(first)} texts and '{names[1]}' "
                             f"{len(second)}: give one {names[0]}, or as many as "
                             f"{names[1]}.", param=names[0])
    pairs = len(second)
    bound = _repeat_bound(size, first[0], pairs) if len(first) == 1 else \
        size + pairs * _SPECIALS_PER_PAIR
    # Each text may fill the context: a cross-encoder reads each pair as one prompt, an
    # embedding model embeds every text on its own.
    return _spec(Endpoint.SCORE, body, model, len(first) + pairs, bound)


def parse_tokenize(body: dict[str, Any], model: str, _size: int) -> RequestSpec:
    """``POST /tokenize`` (vLLM's): a ``prompt`` string, or chat ``messages``."""
    messages = body.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not messages or \
                not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("'messages' must be a non-empty array of message objects.",
                                 param="messages")
    elif not isinstance(body.get("prompt"), str):
        raise InvalidRequest("Give 'prompt' (a string) or 'messages' (chat messages).",
                             param="prompt")
    flag = body.get("add_special_tokens")
    if flag is not None and not isinstance(flag, bool):
        raise InvalidRequest("'add_special_tokens' must be a boolean.",
                             param="add_special_tokens")
    return _spec(Endpoint.TOKENIZE, body, model, 1, 0)


def parse_detokenize(body: dict[str, Any], model: str, _size: int) -> RequestSpec:
    """``POST /detokenize`` (vLLM's): ``tokens``, a list of token ids."""
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise InvalidRequest("'tokens' must be an array of token ids.", param="tokens")
    _check_token_ids(tokens, "tokens")
    return _spec(Endpoint.DETOKENIZE, body, model, 1, 0)
