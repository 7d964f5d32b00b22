"""``/v1/embeddings``, ``/score`` and ``/rerank``: the routes of embed and rerank models.

As in vLLM 0.33, every input (a text, a query, a document, a cross-encoder pair) is
one engine request: its tokens are the usage, it is checked against the context
window on its own, and it counts once in ``vllm:request_success_total{stop}``.

- An embed model (a bi-encoder) scores by the cosine similarity of the query's and
  the document's embeddings; the usage counts each query and each document once
  (``count_text + 1`` for BOS each).
- A rerank model (a cross-encoder) reads each (query, document) pair as one prompt,
  ``count_text(query) + count_text(document) + 3`` tokens, and scores it
  ``sigmoid(8 * cosine - 4)`` (see :mod:`simnode.vectors`).

vLLM's pooling routes take any model name past the check that other routes do, and
then refuse an unknown one with ``NotFoundError`` and no ``param``; so does simnode.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sanic import HTTPResponse

from simnode.config import SimConfig
from simnode.context import SimContext, SimRequest
from simnode.errors import BadRequest, ErrorDetail, InvalidBody, ModelNotFound
from simnode.parsing import check_prompt_length, load_body, optional_int
from simnode.serving import enter
from simnode.tokenizer import VOCAB_SIZE, chat_prompt_ids, completion_prompt_ids, pair_ids
from simnode.vectors import (
    cosine,
    cross_encoder_score,
    embed_ids,
    encode_base64,
    floats_json,
    normalize,
)

__all__ = ["ARCHITECTURES", "embeddings", "rerank", "score"]

#: The architecture a simulated model of each kind reports in vLLM's messages.
ARCHITECTURES = {"embed": "SimnodeEmbeddingModel", "rerank": "SimnodeForSequenceClassification"}
#: ``encoding_format`` values vLLM accepts; simnode answers the first two.
_ENCODINGS = ("float", "base64", "bytes", "bytes_only")
_DTYPES = ("float32", "float16", "bfloat16", "fp8_e4m3", "fp8_e5m2")
_ENDIANNESS = ("native", "big", "little")
#: Pair fields ``/score`` accepts, in the order vLLM's request union tries them.
_SCORE_FIELDS = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"),
                 ("text_1", "text_2"))
_WORD_RE = re.compile(r"\w+|[^\w\s]")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(slots=True)
class _Prompt:
    """One engine request: its token ids."""

    ids: list[int]


@dataclass(slots=True)
class _Pooled:
    """A planned pooling request: its engine prompts and how to build the answer."""

    prompts: list[_Prompt]
    build: Callable[[str], bytes]
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(p.ids) for p in self.prompts)


def _usage(tokens: int) -> str:
    """vLLM's full ``UsageInfo`` of a pooling answer (no output tokens)."""
    return (
        f'{{"prompt_tokens":{tokens},"total_tokens":{tokens},"completion_tokens":0,'
        '"prompt_tokens_details":null,"completion_tokens_details":null}'
    )


def _request_id(request: SimRequest, data: dict[str, Any], prefix: str) -> str:
    """``prefix-<id>``: the ``X-Request-Id`` header, else the body's ``request_id``."""
    given = request.headers.get("x-request-id")
    if given is None:
        body_id = data.get("request_id")
        given = body_id if isinstance(body_id, str) else os.urandom(16).hex()
    return f"{prefix}-{given}"


def _check_model(data: dict[str, Any], config: SimConfig) -> None:
    model = data.get("model")
    if model is not None and model != config.model:
        raise ModelNotFound(model, param=None)


def _truncation(data: dict[str, Any]) -> tuple[int | None, bool]:
    """``truncate_prompt_tokens`` (-1: the context) and whether to keep the last tokens."""
    keep = optional_int(data, "truncate_prompt_tokens")
    if keep is not None and keep < -1:
        raise InvalidBody("greater_than_equal", ("truncate_prompt_tokens",),
                          "Input should be greater than or equal to -1", keep)
    return keep, data.get("truncation_side") == "left"


def _check_truncation(keep: int | None, config: SimConfig) -> int | None:
    """Refuse a truncation beyond the context (after the model check, as vLLM does)."""
    if keep is not None and keep > config.max_model_len:
        raise BadRequest("truncate_prompt_tokens value is greater than max_model_len. "
                         "Please request a smaller truncation size.")
    return config.max_model_len if keep == -1 else keep


def _truncate(ids: list[int], keep: int | None, left: bool) -> list[int]:
    if keep is None or keep >= len(ids):
        return ids
    if keep == 0:
        return []
    return ids[-keep:] if left else ids[:keep]


def _check_engine_input(ids: list[int]) -> None:
    """The engine's own checks: a prompt of no tokens, ids outside the vocabulary."""
    if not ids:
        raise BadRequest("The decoder prompt cannot be empty")
    low, high = min(ids), max(ids)
    if low < 0:
        raise BadRequest(f"Token id {low} is out of vocabulary")
    if high >= VOCAB_SIZE:
        raise BadRequest(f"Token id {high} is out of vocabulary")


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    )


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in value
    )


#: The members of vLLM's embedding request union that read ``messages``, whose errors
#: follow the completion member's when no member accepts a body.
_CHAT_MEMBERS = ("EmbeddingChatRequest", "EmbeddingBatchChatRequest",
                 "EmbeddingChatInputRequest", "EmbeddingBatchChatInputRequest")


def _input_errors(value: Any, data: dict[str, Any]) -> InvalidBody:
    """What vLLM's validation answers an ``input`` of no accepted type.

    Pydantic reports each branch of ``list[int] | list[list[int]] | str | list[str]`` in
    turn, then the members of the request union that want ``messages``.
    """
    member = "EmbeddingCompletionRequest"
    errors: list[ErrorDetail] = []
    if value is None:
        errors.append(("missing", (member, "input"), "Field required", data))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                errors.append(("int_parsing", (member, "input", i), "Input should be a valid "
                               "integer, unable to parse string as an integer", item))
            elif isinstance(item, bool) or not isinstance(item, int):
                errors.append(("int_type", (member, "input", i),
                               "Input should be a valid integer", item))
        for i, item in enumerate(value):
            if not isinstance(item, list):
                errors.append(("list_type", (member, "input", i), "Input should be a valid list",
                               item))
        errors.append(("string_type", (member, "input"), "Input should be a valid string",
                       value))
        for i, item in enumerate(value):
            if not isinstance(item, str):
                errors.append(("string_type", (member, "input", i),
                               "Input should be a valid string", item))
    else:
        for branch in ("list_type", "list_type", "string_type", "list_type"):
            msg = "Input should be a valid string" if branch == "string_type" else \
                "Input should be a valid list"
            errors.append((branch, (member, "input"), msg, value))
    errors += [("missing", (name, "messages"), "Field required", data) for name in _CHAT_MEMBERS]
    first, *more = errors
    return InvalidBody(*first, more=tuple(more))


@dataclass(slots=True)
class _EmbeddingInputs:
    """The inputs of an embeddings request, validated but not yet tokenized."""

    texts: list[str] | None = None
    token_prompts: list[list[int]] | None = None
    messages: list[Any] | None = None


def _embedding_inputs(data: dict[str, Any]) -> _EmbeddingInputs:
    """Sort ``input`` (or ``messages``) into the union member vLLM's validation picks."""
    messages = data.get("messages")
    value = data.get("input")
    if messages is None and _is_messages(value):
        messages = value
    if messages is not None:
        if not _is_messages(messages):
            raise InvalidBody("list_type", ("EmbeddingChatRequest", "messages"),
                              "Input should be a valid list", messages)
        return _EmbeddingInputs(messages=messages)
    if isinstance(value, str):
        return _EmbeddingInputs(texts=[value])
    if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
        return _EmbeddingInputs(texts=value)
    if _is_ids(value):
        return _EmbeddingInputs(token_prompts=[value] if value else [])
    if isinstance(value, list) and value and all(_is_ids(x) for x in value):
        return _EmbeddingInputs(token_prompts=value)
    raise _input_errors(value, data)


def _embedding_prompts(
    inputs: _EmbeddingInputs, data: dict[str, Any], config: SimConfig, keep: int | None,
    left: bool,
) -> list[list[int]]:
    """The token ids of each input, each checked against the context window."""
    if inputs.messages is not None:  # one conversation; the template adds the specials
        try:
            ids = chat_prompt_ids(inputs.messages)[:-2]  # no generation prompt
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        prompts = [ids]
        clipped = True
    elif inputs.texts is not None:
        special = data.get("add_special_tokens", True) is not False
        prompts = [completion_prompt_ids(t, add_special_tokens=special) for t in inputs.texts]
        clipped = True
    else:
        prompts = [list(ids) for ids in inputs.token_prompts or []]
        clipped = False
    prompts = [_truncate(ids, keep, left) for ids in prompts]
    for ids in prompts:
        check_prompt_length(len(ids), config.max_model_len, clipped=clipped)
    return prompts


def _embedding_plan(data: dict[str, Any], request: SimRequest) -> _Pooled:
    config = request.app.ctx.config
    if "normalize" in data:
        raise BadRequest("Parameter `normalize` was removed; use `use_activation` instead.",
                         param="normalize")
    for key, allowed, default in (("encoding_format", _ENCODINGS, "float"),
                                  ("embed_dtype", _DTYPES, "float32"),
                                  ("endianness", _ENDIANNESS, "native")):
        value = data.get(key, default)
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise InvalidBody("literal_error", ("EmbeddingCompletionRequest", key),
                              f"Input should be {options}", value)
    encoding = data.get("encoding_format", "float")
    dimensions = optional_int(data, "dimensions")
    keep, left = _truncation(data)
    inputs = _embedding_inputs(data)
    _check_model(data, config)
    keep = _check_truncation(keep, config)
    if encoding not in ("float", "base64"):
        raise BadRequest("simnode serves encoding_format float and base64",
                         param="encoding_format", value=encoding)
    if not (inputs.texts or inputs.token_prompts or inputs.messages):
        raise BadRequest("You must pass at least one prompt")
    prompts = _embedding_prompts(inputs, data, config, keep, left)
    dim = config.embedding_dim
    if dimensions is not None and not 1 <= dimensions <= dim:
        raise BadRequest(f"Model {config.model!r} only supports dimensions in range "
                         f"[1, {dim}], got {dimensions}.")
    for ids in prompts:
        _check_engine_input(ids)
    size = dimensions if dimensions is not None else dim
    activation = data.get("use_activation") is not False
    dtype, endianness = data.get("embed_dtype", "float32"), data.get("endianness", "native")
    request_id = _request_id(request, data, "embd")

    def build(model_json: str) -> bytes:
        items = []
        for index, ids in enumerate(prompts):
            vector = embed_ids(ids, size)
            if activation:
                vector = normalize(vector)
            if encoding == "base64":
                encoded = '"' + encode_base64(vector, dtype, endianness) + '"'
            else:
                encoded = floats_json(vector)
            items.append(f'{{"index":{index},"object":"embedding","embedding":{encoded}}}')
        tokens = sum(len(ids) for ids in prompts)
        return (
            f'{{"id":{_dumps(request_id)},"object":"list","created":{int(time.time())},'
            f'"model":{model_json},"data":[{",".join(items)}],"usage":{_usage(tokens)}}}'
        ).encode()

    return _Pooled([_Prompt(ids) for ids in prompts], build)


def _score_side(value: Any, loc: tuple[object, ...]) -> list[str | dict[str, Any]]:
    """One side of a score or rerank request: texts, or multimodal ``{"content": [...]}``."""
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if isinstance(item, str):
            continue
        if not (isinstance(item, dict) and isinstance(item.get("content"), list)):
            where = (*loc, i) if isinstance(value, list) else loc
            raise InvalidBody("missing", (*where, "content"), "Field required", item)
    return items


def _texts(items: list[str | dict[str, Any]], kind: str) -> list[str]:
    """The texts of one side; a model without vision refuses multimodal content."""
    texts = []
    for item in items:
        if not isinstance(item, str):
            raise BadRequest(f"MultiModalParam is not supported for {ARCHITECTURES[kind]}")
        texts.append(item)
    return texts


def _check_lengths(queries: list[str], documents: list[str]) -> None:
    if len(queries) > 1 and len(queries) != len(documents):
        raise BadRequest("Input lengths must be either 1:1, 1:N or N:N")
    if not queries:
        raise BadRequest("At least one text element must be given")
    if not documents:
        raise BadRequest("At least one text_pair element must be given")


def _token_limits(data: dict[str, Any], config: SimConfig) -> tuple[int, int]:
    limits = []
    for key in ("max_tokens_per_query", "max_tokens_per_doc"):
        value = optional_int(data, key) or 0
        if value < 0:
            raise BadRequest(f"{key} must be a non-negative integer")
        if value >= config.max_model_len:
            raise BadRequest(f"{key} ({value}) must be less than max_model_len "
                             f"({config.max_model_len}).")
        limits.append(value)
    return limits[0], limits[1]


def _clip_words(text: str, limit: int) -> str:
    """The text of the first ``limit`` tokens of ``text`` (0: all of it)."""
    if limit <= 0:
        return text
    matches = list(_WORD_RE.finditer(text))
    return text if len(matches) <= limit else text[: matches[limit - 1].end()]


def _pair_plan(
    data: dict[str, Any],
    request: SimRequest,
    first: list[str | dict[str, Any]],
    second: list[str | dict[str, Any]],
) -> tuple[list[_Prompt], list[float], list[str]]:
    """The engine prompts, the score of each (query, document) pair, and the documents
    (as given: a rerank echoes them whole, clipped or not)."""
    ctx: SimContext = request.app.ctx
    config = ctx.config
    keep, left = _truncation(data)
    _check_model(data, config)
    keep = _check_truncation(keep, config)
    queries, documents = _texts(first, config.kind), _texts(second, config.kind)
    _check_lengths(queries, documents)
    given = documents
    per_query, per_doc = _token_limits(data, config)
    queries = [_clip_words(q, per_query) for q in queries]
    documents = [_clip_words(d, per_doc) for d in documents]
    pairs = list(zip(queries * len(documents) if len(queries) == 1 else queries, documents,
                     strict=True))
    dim = config.embedding_dim
    prompts: list[_Prompt] = []
    if config.kind == "rerank":  # a cross-encoder reads each pair as one prompt
        for query, document in pairs:
            ids = _truncate(pair_ids(query, document), keep, left)
            check_prompt_length(len(ids), config.max_model_len)
            prompts.append(_Prompt(ids))
        activation = data.get("use_activation") is not False
        vectors = {t: embed_ids(_text(t), dim) for t in (*queries, *documents)}
        scores = [cross_encoder_score(cosine(vectors[q], vectors[d]), activation=activation)
                  for q, d in pairs]
        return prompts, scores, given
    vectors = {}
    for text in (*queries, *documents):  # a bi-encoder embeds each text once
        ids = _truncate(completion_prompt_ids(text), keep, left)
        check_prompt_length(len(ids), config.max_model_len)
        prompts.append(_Prompt(ids))
        vectors[text] = embed_ids(ids, dim)
    scores = [cosine(vectors[q], vectors[d]) for q, d in pairs]
    return prompts, scores, given


def _text(text: str) -> list[int]:
    return completion_prompt_ids(text, add_special_tokens=False)


def _score_plan(data: dict[str, Any], request: SimRequest) -> _Pooled:
    for first, second in _SCORE_FIELDS:
        if first in data and second in data:
            break
    else:
        raise InvalidBody("missing", ("ScoreQueriesDocumentsRequest", "queries"),
                          "Field required", data,
                          more=(("missing", ("ScoreQueriesDocumentsRequest", "documents"),
                                 "Field required", data),
                                ("missing", ("ScoreTextRequest", "text_1"), "Field required",
                                 data),
                                ("missing", ("ScoreTextRequest", "text_2"), "Field required",
                                 data)))
    prompts, scores, _ = _pair_plan(data, request, _score_side(data[first], (first,)),
                                    _score_side(data[second], (second,)))
    request_id = _request_id(request, data, "score")

    def build(model_json: str) -> bytes:
        items = ",".join(
            f'{{"index":{i},"object":"score","score":{_dumps(s)}}}' for i, s in enumerate(scores)
        )
        tokens = sum(len(p.ids) for p in prompts)
        return (
            f'{{"id":{_dumps(request_id)},"object":"list","created":{int(time.time())},'
            f'"model":{model_json},"data":[{items}],"usage":{_usage(tokens)}}}'
        ).encode()

    return _Pooled(prompts, build)


def _rerank_plan(data: dict[str, Any], request: SimRequest) -> _Pooled:
    query = data.get("query")
    if query is None or "documents" not in data:
        missing = "query" if query is None else "documents"
        raise InvalidBody("missing", (missing,), "Field required", data)
    if isinstance(query, list):
        raise InvalidBody("string_type", ("query", "str"), "Input should be a valid string",
                          query)
    queries = _score_side(query, ("query",))
    second = _score_side(data["documents"], ("documents",))
    top_n = optional_int(data, "top_n") or 0
    if top_n < 0:
        raise InvalidBody("greater_than_equal", ("top_n",),
                          "Input should be greater than or equal to 0", top_n)
    prompts, scores, documents = _pair_plan(data, request, queries, second)
    request_id = _request_id(request, data, "score")

    def build(model_json: str) -> bytes:
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        if 0 < top_n < len(documents):
            order = order[:top_n]
        results = ",".join(
            f'{{"index":{i},"document":{{"text":{_dumps(documents[i])},"multi_modal":null}},'
            f'"relevance_score":{_dumps(scores[i])}}}'
            for i in order
        )
        tokens = sum(len(p.ids) for p in prompts)
        return (
            f'{{"id":{_dumps(request_id)},"model":{model_json},'
            f'"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}},'
            f'"results":[{results}]}}'
        ).encode()

    return _Pooled(prompts, build)


async def _serve(
    request: SimRequest, plan: Callable[[dict[str, Any], SimRequest], _Pooled]
) -> HTTPResponse:
    ctx: SimContext = request.app.ctx
    faults = await enter(request)
    pooled = plan(load_body(request.body, request.content_type), request)
    scheduler = ctx.scheduler
    await scheduler.admit(pooled.tokens)
    try:
        if faults.ttft > 0:  # the forward pass, the only step a pooling request has
            await asyncio.sleep(faults.ttft)
        body = pooled.build(ctx.model_json)
        for _ in pooled.prompts:
            scheduler.finished("stop")
    finally:
        scheduler.release()
    return HTTPResponse(body, content_type="application/json")


async def embeddings(request: SimRequest) -> HTTPResponse:
    """Answer ``POST /v1/embeddings``."""
    return await _serve(request, _embedding_plan)


async def score(request: SimRequest) -> HTTPResponse:
    """Answer ``POST /score`` and ``POST /v1/score``."""
    return await _serve(request, _score_plan)


async def rerank(request: SimRequest) -> HTTPResponse:
    """Answer ``POST /rerank``, ``/v1/rerank`` and ``/v2/rerank`` (Jina's and Cohere's shape)."""
    return await _serve(request, _rerank_plan)
