"""Checks a request body and extracts what routing and billing need.

The checks are the ones whose failure the client must hear about from us, in
the route's words (wrong types, missing fields); anything finer, such as a
sampling parameter's range, is the node's to judge: vLLM answers 400 and we
pass it on. Chat and completions are checked here; the other routes' bodies in
:mod:`edge.metering.pooling_requests` (embeddings, rerank, score) and
:mod:`edge.metering.agent_requests` (responses, messages).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from edge.errors import InvalidRequest
from edge.jsonbody import json_object

__all__ = ["Endpoint", "RequestSpec", "check_fits", "check_kind", "check_numbers",
           "optional_int", "parse_request", "stream_flag"]

#: What each kind of model serves (:class:`edge.db.models.ModelKind`'s values).
_GENERATE = frozenset({"generate"})
_POOLING = frozenset({"embed", "rerank"})


class Endpoint(StrEnum):
    """A metered route: the usage row's ``endpoint``, its node path and model kinds."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
    MESSAGES = "messages"
    RERANK = "rerank"
    SCORE = "score"
    TOKENIZE = "tokenize"  # free: rate-limited, charged nothing
    DETOKENIZE = "detokenize"

    @property
    def free(self) -> bool:
        """Served at no charge (the usage row says it happened, for nothing)."""
        return self in (Endpoint.TOKENIZE, Endpoint.DETOKENIZE)

    @property
    def path(self) -> str:
        """The node's path for it (vLLM's)."""
        return _PATHS[self]

    @property
    def kinds(self) -> frozenset[str]:
        """The model kinds that serve it (vLLM scores and reranks with embedding
        models too, by cosine similarity)."""
        if self is Endpoint.EMBEDDINGS:
            return frozenset({"embed"})
        if self in (Endpoint.RERANK, Endpoint.SCORE):
            return _POOLING
        if self.free:
            return _GENERATE | _POOLING
        return _GENERATE


_PATHS = {Endpoint.CHAT: "/v1/chat/completions", Endpoint.COMPLETIONS: "/v1/completions",
          Endpoint.EMBEDDINGS: "/v1/embeddings", Endpoint.RESPONSES: "/v1/responses",
          Endpoint.MESSAGES: "/v1/messages", Endpoint.RERANK: "/v1/rerank",
          Endpoint.SCORE: "/v1/score", Endpoint.TOKENIZE: "/tokenize",
          Endpoint.DETOKENIZE: "/detokenize"}


@dataclasses.dataclass(slots=True)
class RequestSpec:
    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None  # generated tokens allowed per choice (0: the route generates none)
    choices: int  # completions the node will generate (n × prompts)
    n: int  # completions per prompt
    #: Prompts in the request (completions may batch several, embeddings too): each is
    #: at most the context. For rerank and score, the texts the node reads.
    prompts: int
    include_usage: bool  # the client asked for the final usage chunk
    continuous_usage: bool  # the client asked for usage on every chunk
    #: An upper bound of the prompt's tokens when the body's length is none (a rerank
    #: pairs the query with every document); None: the body's length in bytes.
    prompt_bound: int | None = None
    #: The request names state a node keeps (``previous_response_id``): a node that
    #: does not have it answers 404, passed on instead of trying another node.
    stateful: bool = False


def parse_request(raw: bytes, endpoint: Endpoint) -> RequestSpec:
    """Parse and check a request body.

    Raises:
      InvalidRequest: the body is not JSON, or a field has the wrong type.
    """
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    body = json_object(raw)

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string.", param="model")
    parsers = _PARSERS or _load_parsers()
    return parsers[endpoint](body, model, len(raw))


def check_kind(spec: RequestSpec, kind: str, name: str) -> None:
    """Refuse a model whose nodes do not serve this kind of request.

    Raises:
      InvalidRequest: code ``model_kind_mismatch``.
    """
    endpoint = spec.endpoint
    if kind not in endpoint.kinds:
        serves = {"generate": "chat, completions, responses and messages",
                  "embed": "embeddings, score and rerank",
                  "rerank": "score and rerank"}.get(kind, kind)
        raise InvalidRequest(f"The model '{name}' is a {kind} model: it serves {serves}, "
                             f"not {endpoint.value}. GET /v1/models says each model's kind.",
                             param="model", code="model_kind_mismatch")


#: ``(body, model, body size) -> spec``, one per endpoint.
Parser = Callable[[dict[str, Any], str, int], RequestSpec]
_PARSERS: dict[Endpoint, Parser] = {}


def _load_parsers() -> dict[Endpoint, Parser]:
    """Fill :data:`_PARSERS` (their modules import this one, so not at import time)."""
    from edge.metering.agent_requests import parse_messages, parse_responses
    from edge.metering.pooling_requests import (
        parse_detokenize,
        parse_embeddings,
        parse_rerank,
        parse_score,
        parse_tokenize,
    )

    _PARSERS.update({
        Endpoint.CHAT: lambda body, model, _size: _generation_spec(body, model, Endpoint.CHAT),
        Endpoint.COMPLETIONS: lambda body, model, _size: _generation_spec(
            body, model, Endpoint.COMPLETIONS),
        Endpoint.EMBEDDINGS: parse_embeddings, Endpoint.RERANK: parse_rerank,
        Endpoint.SCORE: parse_score, Endpoint.RESPONSES: parse_responses,
        Endpoint.MESSAGES: parse_messages, Endpoint.TOKENIZE: parse_tokenize,
        Endpoint.DETOKENIZE: parse_detokenize})
    return _PARSERS


def stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    return stream


_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty",
                  "repetition_penalty", "min_p")
_INT_PARAMS = ("top_k", "seed", "logprobs", "top_logprobs")


def _generation_spec(body: dict[str, Any], model: str, endpoint: Endpoint) -> RequestSpec:
    """Chat and completions."""
    prompts = 1
    if endpoint is Endpoint.CHAT:
        _check_messages(body.get("messages"))
    else:
        prompts = _check_prompt(body.get("prompt"))

    stream = stream_flag(body)

    max_tokens = optional_int(body, "max_tokens", minimum=1)
    if endpoint is Endpoint.CHAT:
        # vLLM (and OpenAI) take max_completion_tokens over max_tokens: so must the
        # reservation, or a small max_tokens would hold little for a long answer.
        completion_cap = optional_int(body, "max_completion_tokens", minimum=1)
        if completion_cap is not None:
            max_tokens = completion_cap
    n = optional_int(body, "n", minimum=1)
    if n is not None and n > 16:
        raise InvalidRequest("'n' may be at most 16.", param="n")
    check_numbers(body, _NUMBER_PARAMS)
    for name in _INT_PARAMS:
        if name == "logprobs" and endpoint is Endpoint.CHAT:
            continue  # a boolean in chat
        optional_int(body, name, minimum=None)

    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    options = options or {}
    include_usage = options.get("include_usage", False) is True
    continuous = options.get("continuous_usage_stats", False) is True

    return RequestSpec(endpoint=endpoint, body=body, model=model, stream=stream,
                       max_tokens=max_tokens, choices=prompts * (n or 1), n=n or 1,
                       prompts=prompts,
                       include_usage=include_usage, continuous_usage=continuous)


def check_numbers(body: dict[str, Any], names: tuple[str, ...]) -> None:
    """Refuse a sampling parameter that is not a number (its range is the node's)."""
    for name in names:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{name}' must be a number.", param=name)


def check_fits(spec: RequestSpec, context_length: int) -> None:
    """Refuse a ``max_tokens`` beyond the model's context.

    No answer can be that long, and the reservation holds at most the context per
    choice: a node started with a longer ``--max-model-len`` must not be asked for
    more than was reserved.

    Raises:
      InvalidRequest: code ``context_length_exceeded``.
    """
    if spec.max_tokens is not None and spec.max_tokens > context_length:
        name = next((n for n in ("max_completion_tokens", "max_output_tokens")
                     if n in spec.body), "max_tokens")
        raise InvalidRequest(f"'{name}' is {spec.max_tokens}, more than the model's context "
                             f"of {context_length} tokens.", param=name,
                             code="context_length_exceeded")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.",
                             param="messages")
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{param}' must be an object.", param=param)
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"'{param}.role' must be a string.", param=f"{param}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"'{param}.content' must be a string or an array of parts.",
                                 param=f"{param}.content")


def _check_prompt(prompt: Any) -> int:
    """Returns how many prompts the request carries (vLLM batches a list)."""
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return len(prompt)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return 1  # one prompt given as token ids
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return len(prompt)
    raise InvalidRequest("'prompt' must be a string, an array of strings or of token ids.",
                         param="prompt")


def optional_int(body: dict[str, Any], name: str, *, minimum: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer.", param=name)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"'{name}' must be at least {minimum}.", param=name)
    return value
