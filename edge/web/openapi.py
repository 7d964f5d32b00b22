"""The OpenAPI 3.1 description of the API, served at ``/openapi.json``.

It covers every route the app registers except the pages for people (the forms, the
``/docs`` page, static files): ``tests/web/test_openapi.py`` compares it with
``app.router.routes`` both ways, so a route added without its description, or a
description left behind by a removed route, fails there.

Shapes are written once, under ``components``, and referenced: the two error bodies
(OpenAI's, and Anthropic's for ``/v1/messages``), the refusals the metered routes share,
the headers of a metered answer, the usage routes' filters. The enumerations come from
the models and views that define them, so they cannot drift from the code.
"""

from __future__ import annotations

import copy
from typing import Any

from edge.admin import ACTIONS
from edge.db.models import (
    CapReset,
    JobStatus,
    KeyScope,
    LedgerKind,
    ModelKind,
    NodeState,
    PaymentStatus,
)
from edge.identity.keys import ROUTES

__all__ = ["openapi_document"]

Json = dict[str, Any]


def openapi_document(base_url: str) -> Json:
    """The whole document, for a portal reachable at ``base_url``.

    Each call answers a copy of its own: the shapes below share their small parts.
    """
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "Inference Portal API", "version": "1", "description": _ABOUT},
        "servers": [{"url": base_url}],
        "security": _KEY,
        "tags": [{"name": name, "description": text} for name, text in _TAGS.items()],
        "paths": {**_inference_paths(), **_catalog_paths(), **_account_paths(),
                  **_job_paths(), **_payment_paths(), **_chat_paths(), **_admin_paths(),
                  **_operations_paths()},
        "components": {
            "securitySchemes": _SECURITY_SCHEMES,
            "schemas": {**_error_schemas(), **_inference_schemas(), **_catalog_schemas(),
                        **_account_schemas(), **_job_schemas(), **_payment_schemas(),
                        **_admin_schemas(), **_operations_schemas(),
                        **_conversation_schemas()},
            "parameters": _parameters(),
            "headers": _headers(),
            "responses": _refusals(),
        },
    })


_ABOUT = (
    "OpenAI-compatible inference (and Anthropic's Messages API), billed per token from "
    "prepaid credit. Errors are in OpenAI's shape, `{\"error\": {\"message\", \"type\", "
    "\"param\", \"code\"}}` (Anthropic's on `/v1/messages`). Every answer carries "
    "`x-request-id`; a request whose head or body arrives too slowly is answered 408.")

_TAGS = {
    "inference": "Metered calls to a model's GPU nodes, and the free tokenizer",
    "models": "The catalogue: prices, kinds and node state",
    "account": "The caller's key, balance and usage",
    "jobs": "Queued inference, answered when a node of the model is up",
    "payments": "Stripe top-ups and their history",
    "chat": "Chat rooms",
    "admin": "The operator's API (bearer PORTAL_ADMIN_TOKEN)",
    "operations": "Probes, metrics and this document",
}

_SECURITY_SCHEMES: Json = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "sk-ip-…",
               "description": "An API key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": "An API key, as Anthropic's SDKs send it (taken wherever a "
                              "bearer key is)"},
    "adminToken": {"type": "http", "scheme": "bearer",
                   "description": "The operator's PORTAL_ADMIN_TOKEN"},
    "session": {"type": "apiKey", "in": "cookie", "name": "portal_session",
                "description": "The pages' sign-in; such a call also needs the session's "
                               "CSRF token in `X-CSRF-Token`"},
}

#: Who may call what: by default an API key (in either header).
_KEY: list[Json] = [{"bearer": []}, {"apiKey": []}]
_PUBLIC: list[Json] = []
_KEY_OPTIONAL: list[Json] = [{}, *_KEY]
_ADMIN: list[Json] = [{"adminToken": []}]
_KEY_OR_SESSION: list[Json] = [*_KEY, {"session": []}]


# -- small builders -----------------------------------------------------------------------
def _ref(section: str, name: str) -> Json:
    return {"$ref": f"#/components/{section}/{name}"}


def _schema(name: str) -> Json:
    return _ref("schemas", name)


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _object(properties: Json, *required: str, passes_through: bool = False,
            description: str | None = None) -> Json:
    """An object schema; ``passes_through``: fields not named here go on to the node."""
    schema: Json = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if passes_through:
        schema["additionalProperties"] = True
    if description:
        schema["description"] = description
    return schema


def _enum(values: Any, description: str | None = None) -> Json:
    schema: Json = {"type": "string", "enum": [str(v) for v in values]}
    if description:
        schema["description"] = description
    return schema


def _list_of(item: Json, **more: Any) -> Json:
    """OpenAI's list envelope, ``{"object": "list", "data": [...]}``."""
    return _object({"object": {"const": "list"}, "data": {"type": "array", "items": item},
                    **more}, "object", "data")


def _money(name: str, *, nullable: bool = False) -> Json:
    """A sum as the API shows it: a USD string and, beside it, its micro-dollars."""
    return {name: {"type": ["string", "null"] if nullable else "string",
                   "description": "USD, six decimals", "examples": ["1.500000"]},
            f"{name}_micros": {"type": ["integer", "null"] if nullable else "integer",
                               "description": "The same sum in micro-dollars"}}


def _answer(description: str, schema: Json | None = None, *,
            media: str = "application/json") -> Json:
    answer: Json = {"description": description,
                    "headers": {"x-request-id": _ref("headers", "RequestId")}}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


def _operation(op_id: str, summary: str, tag: str, responses: Json, *,
               body: Json | None = None, body_required: bool = True,
               parameters: list[Json] | None = None, security: list[Json] | None = None,
               description: str | None = None) -> Json:
    operation: Json = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": _json(body)}
    if security is not None:
        operation["security"] = security
    operation["responses"] = responses
    return operation


def _path_parameter(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def _query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _limit(most: int, default: int) -> Json:
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": most,
                            "default": default}, "Most rows to answer")


_STRING: Json = {"type": "string"}
_INTEGER: Json = {"type": "integer"}
_BOOLEAN: Json = {"type": "boolean"}
_NUMBER: Json = {"type": "number"}
_TIME: Json = {"type": ["string", "null"], "format": "date-time"}
_UNIX: Json = {"type": "integer", "description": "Unix seconds"}
_UNIX_OR_NULL: Json = {"type": ["integer", "null"], "description": "Unix seconds"}
_NAMES: Json = {"type": ["array", "null"], "items": _STRING}
_ROUTE_NAMES: Json = {"type": ["array", "null"], "items": _enum(ROUTES)}
_USD_IN: Json = {"type": ["string", "number"], "description": "USD, e.g. \"2.50\""}
_ID: Json = {"type": "integer", "minimum": 1}


# -- errors -------------------------------------------------------------------------------
def _error_schemas() -> Json:
    return {
        "Error": _object({"error": _object({
            "message": _STRING,
            "type": {"type": "string", "examples": ["invalid_request_error"]},
            "param": {"type": ["string", "null"], "description": "The field at fault"},
            "code": {"type": ["string", "null"], "examples": [
                "context_length_exceeded", "model_kind_mismatch", "invalid_api_key",
                "insufficient_quota", "credit_cap_reached", "permission_denied",
                "model_not_found", "rate_limit_exceeded", "model_warming",
                "upstream_unavailable", "upstream_error", "upstream_timeout"]},
        }, "message", "type")}, "error", description="OpenAI's error shape"),
        "AnthropicError": _object({
            "type": {"const": "error"},
            "error": _object({"type": {"type": "string", "examples": [
                "invalid_request_error", "authentication_error", "billing_error",
                "permission_error", "not_found_error", "request_too_large",
                "rate_limit_error", "api_error", "overloaded_error", "timeout_error"]},
                "message": _STRING}, "type", "message"),
            "request_id": _STRING,
        }, "type", "error", description="Anthropic's error shape (`/v1/messages` only)"),
    }


#: Every refusal: its status, component name and what it means here.
_REFUSALS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body is not valid JSON or a field is wrong (`param` names it); "
                        "`context_length_exceeded`: max_tokens is above the model's context; "
                        "`model_kind_mismatch`: the model is of another kind (see `kind` in "
                        "/v1/models); a node's own refusal passes on its message and code"),
    401: ("Unauthorized", "The key (or admin token) is missing, unknown, revoked or expired"),
    402: ("PaymentRequired", "The account's balance (`insufficient_quota`) or the key's "
                             "credit cap (`credit_cap_reached`) does not cover the request's "
                             "worst case"),
    403: ("Forbidden", "The key may not call this model or route, or its account is frozen "
                       "by a payment dispute (`permission_denied`); for /admin, the admin "
                       "API is off"),
    404: ("NotFound", "No such model (`model_not_found`) or object (`not_found`)"),
    413: ("TooLarge", "The body is larger than PORTAL_MAX_BODY_BYTES"),
    422: ("Unprocessable", "The node refused the request: vLLM's message, code and param"),
    429: ("RateLimited", "A per-minute limit of the key was reached (`rate_limit_exceeded`)"),
    502: ("BadGateway", "The node broke off its answer or sent one that is not JSON "
                        "(`upstream_error`)"),
    503: ("Unavailable", "No node runs the model yet (`model_warming`; with X-Portal-Wait: "
                         "none booted in time), its nodes failed a moment ago "
                         "(`upstream_unavailable`), or the portal's storage or Stripe is "
                         "unavailable (`service_unavailable`)"),
    504: ("GatewayTimeout", "The node did not answer in PORTAL_UPSTREAM_TIMEOUT seconds "
                            "(`upstream_timeout`)"),
}
#: The refusals that say when to come back.
_RETRY_AFTER = (429, 503)
#: Every refusal of a metered call.
_METERED = (400, 401, 402, 403, 404, 413, 422, 429, 502, 503, 504)
#: Every refusal of a free call (the tokenizer): the same, but for credit.
_FREE = tuple(status for status in _METERED if status != 402)


def _refusals() -> Json:
    """Each refusal twice: in OpenAI's shape and, named ``Anthropic…``, in Anthropic's."""
    responses: Json = {}
    for status, (name, text) in _REFUSALS.items():
        for prefix, body in (("", "Error"), ("Anthropic", "AnthropicError")):
            response: Json = {"description": text, "content": _json(_schema(body))}
            if status in _RETRY_AFTER:
                response["headers"] = {"Retry-After": _ref("headers", "RetryAfter")}
            responses[prefix + name] = response
    return responses


def _errors(*statuses: int, anthropic: bool = False) -> Json:
    prefix = "Anthropic" if anthropic else ""
    return {str(s): _ref("responses", prefix + _REFUSALS[s][0]) for s in statuses}


# -- headers and shared parameters --------------------------------------------------------
#: What a metered answer says in its headers: component name, header, schema, meaning.
_ANSWER_HEADERS: tuple[tuple[str, str, Json, str], ...] = (
    ("RequestId", "x-request-id", _STRING,
     "The client's own X-Request-Id when valid (1 to 128 of letters, digits, `._:-`), else "
     "the portal's request id"),
    ("PortalRequestId", "x-portal-request-id", _STRING,
     "The portal's request id (it names the usage row), when x-request-id is the client's"),
    ("CostMicros", "x-portal-cost-micros", _INTEGER,
     "What the call cost, micro-dollars (not on a stream: it ends with `: cost_micros=N`)"),
    ("CostUsd", "x-portal-cost-usd", _STRING, "What the call cost, USD (not on a stream)"),
    ("BalanceUsd", "x-portal-balance-usd", _STRING,
     "The account's balance after the call, USD (not on a stream)"),
    ("RateLimitLimitRequests", "x-ratelimit-limit-requests", _INTEGER,
     "The key's requests per minute"),
    ("RateLimitRemainingRequests", "x-ratelimit-remaining-requests", _INTEGER,
     "Requests the key has left now"),
    ("RateLimitResetRequests", "x-ratelimit-reset-requests", _STRING,
     "Until the key's requests are all back, as OpenAI writes it (`20ms`, `1.5s`, `6m0s`)"),
    ("RateLimitLimitTokens", "x-ratelimit-limit-tokens", _INTEGER,
     "The key's tokens per minute"),
    ("RateLimitRemainingTokens", "x-ratelimit-remaining-tokens", _INTEGER,
     "Tokens the key has left now"),
    ("RateLimitResetTokens", "x-ratelimit-reset-tokens", _STRING,
     "Until the key's tokens are all back, as OpenAI writes it"),
)


def _headers() -> Json:
    headers: Json = {name: {"description": text, "schema": schema}
                     for name, _header, schema, text in _ANSWER_HEADERS}
    headers["RetryAfter"] = {"description": "Seconds to wait before trying again",
                             "schema": {"type": "integer", "minimum": 1, "maximum": 60}}
    return headers


def _parameters() -> Json:
    usage = "Of the usage rows (UTC; the range is [start, end), at most 366 days)"
    return {
        "PortalWait": {
            "name": "X-Portal-Wait", "in": "header", "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Seconds to hold the request while a cold model's node boots "
                           "(longer asks are cut to PORTAL_MAX_WAIT); if none is up by then, "
                           "the answer is 503. Without it, a cold model is a 503 at once."},
        "UsageStart": _query("start", _STRING, f"{usage}: YYYY-MM-DD or an ISO 8601 time; "
                                               "default: 30 days before end"),
        "UsageEnd": _query("end", _STRING, f"{usage}: YYYY-MM-DD or an ISO 8601 time; "
                                           "default: now"),
        "UsageModel": _query("model", {"type": "string", "maxLength": 128},
                             "Only this model's calls"),
        "UsageKeyId": _query("key_id", _ID, "Only this key's calls (a manage key sees its "
                                            "account's keys, an API key only itself)"),
        "AccountId": _path_parameter("account_id", _ID, "The account's id"),
        "KeyId": _path_parameter("key_id", _ID, "The key's id"),
    }


def _node_answer(description: str, schema: Json, stream: str | None, *,
                 billed: bool = True) -> Json:
    """A node's answer: JSON, or an event stream when the body asked for one; with the
    key's rate limits and, when ``billed``, the cost."""
    content = _json(schema)
    if stream is not None:
        content["text/event-stream"] = {"schema": {"type": "string", "description": stream}}
    return {"description": description,
            "headers": {header: _ref("headers", name)
                        for name, header, _schema, _text in _ANSWER_HEADERS
                        if billed or not name.startswith(("Cost", "Balance"))},
            "content": content}


def _metered(op_id: str, summary: str, request: str, answer: str, description: str, *,
             stream: str | None = None, anthropic: bool = False,
             security: list[Json] | None = None) -> Json:
    """A metered call: X-Portal-Wait in, cost and rate-limit headers out, every refusal."""
    kind = "a JSON answer, or an event stream when `stream` is true" if stream else "JSON"
    return {"post": _operation(
        op_id, summary, "inference", {"200": _node_answer(
            f"The node's answer ({kind}), with its cost", _schema(answer), stream),
            **_errors(*_METERED, anthropic=anthropic)},
        body=_schema(request), parameters=[_ref("parameters", "PortalWait")],
        security=security, description=description)}


# -- inference ----------------------------------------------------------------------------
def _openai_stream(chunk: str) -> str:
    return (f"`data: {{{chunk}}}` events, then the comment `: cost_micros=N` and "
            "`data: [DONE]`; a stream the node breaks ends with an error event in OpenAI's "
            "shape before `data: [DONE]`")


_NAMED_STREAM_END = ("the final usage event has `usage.cost`, then comes the comment "
                     "`: cost_micros=N`; a stream the node breaks ends with an `error` event "
                     "in the route's shape")


def _inference_paths() -> Json:
    return {
        "/v1/chat/completions": _metered(
            "createChatCompletion", "Chat completion", "ChatCompletionRequest",
            "ChatCompletion", "OpenAI's chat completions; vLLM's extra sampling parameters "
            "pass through. For a `generate` model.",
            stream=_openai_stream("chat.completion.chunk")),
        "/v1/completions": _metered(
            "createCompletion", "Text completion", "CompletionRequest", "Completion",
            "OpenAI's (legacy) completions. For a `generate` model.",
            stream=_openai_stream("text_completion")),
        "/v1/embeddings": _metered(
            "createEmbedding", "Embeddings", "EmbeddingRequest", "EmbeddingList",
            "OpenAI's embeddings. For an `embed` model; billed for the input tokens."),
        "/v1/responses": _metered(
            "createResponse", "Response (OpenAI's Responses API)", "ResponseRequest",
            "Response", "OpenAI's Responses API. For a `generate` model. The portal stores "
            "no responses: `previous_response_id` and `store` are passed to the node (one "
            "that does not hold that response answers 404, passed on).",
            stream="`event: response.*` events (`response.created`, "
                   "`response.output_text.delta`, …, `response.completed`), each with its "
                   f"`data: {{json}}`; {_NAMED_STREAM_END}"),
        "/v1/messages": _metered(
            "createMessage", "Message (Anthropic's Messages API)", "MessageRequest",
            "Message", "Anthropic's Messages API. For a `generate` model. Errors are in "
            "Anthropic's shape.", anthropic=True,
            security=[{"apiKey": []}, {"bearer": []}],
            stream="Anthropic's events: `event: message_start`, `content_block_start`, "
                   "`content_block_delta`, …, `message_stop`, each with its `data: {json}`; "
                   f"{_NAMED_STREAM_END}"),
        "/v1/rerank": _metered(
            "rerank", "Rerank documents", "RerankRequest", "RerankResult",
            "vLLM's Jina- and Cohere-compatible rerank. For a `rerank` or `embed` model."),
        "/v1/score": _metered(
            "score", "Score text pairs", "ScoreRequest", "ScoreList",
            "vLLM's score: each text_1 against each text_2. For a `rerank` or `embed` "
            "model."),
        "/tokenize": _free("tokenize", "Text to tokens", "TokenizeRequest", "TokenizeResult"),
        "/detokenize": _free("detokenize", "Tokens to text", "DetokenizeRequest",
                             "DetokenizeResult"),
    }


def _free(op_id: str, summary: str, request: str, answer: str) -> Json:
    """The model's tokenizer, on its node: authenticated and rate-limited, not billed."""
    return {"post": _operation(
        op_id, summary, "inference",
        {"200": _node_answer("The node's answer (not billed)", _schema(answer), None,
                             billed=False), **_errors(*_FREE)},
        body=_schema(request), description="vLLM's tokenizer endpoint, for any model; "
                                           "free, but counted in the key's rate limits.")}


_MAX_TOKENS: Json = {"type": "integer", "minimum": 1,
                     "description": "At most the model's context (else 400 "
                                    "`context_length_exceeded`)"}
_SAMPLING: Json = {"temperature": _NUMBER, "top_p": _NUMBER,
                   "stop": {"type": ["string", "array", "null"], "items": _STRING},
                   "user": _STRING}
_COST: Json = {"type": "string", "description": "What the call cost, USD (the portal's)"}
_USAGE: Json = _object({"prompt_tokens": _INTEGER, "completion_tokens": _INTEGER,
                        "total_tokens": _INTEGER, "cost": _COST})


#: Most inputs, documents or pairs in one request.
_MAX_INPUTS = 2048
_TOKEN: Json = {"type": "integer", "minimum": 0, "description": "A token id"}
#: A text of a pair: a string, or a document as Cohere's clients send it.
_TEXT: Json = {"oneOf": [_STRING, _object({"text": _STRING}, "text")]}


def _many(item: Json) -> Json:
    return {"type": "array", "minItems": 1, "maxItems": _MAX_INPUTS, "items": item}


def _inference_schemas() -> Json:
    return {
        **_generation_schemas(),
        "EmbeddingRequest": _object({
            "model": _STRING,
            "input": {"oneOf": [
                {"type": "string", "minLength": 1}, _many({"type": "string", "minLength": 1}),
                _many(_TOKEN), _many({"type": "array", "minItems": 1, "items": _TOKEN})],
                "description": "A text, texts, token ids, or lists of token ids"},
            "encoding_format": {"enum": ["float", "base64"], "default": "float"},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": _STRING,
        }, "model", "input", passes_through=True),
        "EmbeddingList": _list_of(_object({
            "object": {"const": "embedding"}, "index": _INTEGER,
            "embedding": {"oneOf": [{"type": "array", "items": _NUMBER},
                                    {"type": "string", "description": "base64 float32s"}]},
        }), model=_STRING, usage=_USAGE),
        "RerankRequest": _object({
            "model": _STRING, "query": _TEXT, "documents": _many(_TEXT),
            "top_n": {"type": "integer", "minimum": 0},
            "return_documents": _BOOLEAN,
        }, "model", "query", "documents", passes_through=True),
        "RerankResult": _object({
            "id": _STRING, "model": _STRING, "usage": _USAGE,
            "results": {"type": "array", "items": _object({
                "index": _INTEGER, "relevance_score": _NUMBER,
                "document": _object({"text": _STRING})}, "index", "relevance_score")},
        }, "results"),
        "ScoreRequest": _object({
            "model": _STRING,
            "text_1": {"oneOf": [_TEXT, _many(_TEXT)],
                       "description": "One text, or as many as text_2"},
            "text_2": {"oneOf": [_TEXT, _many(_TEXT)]},
        }, "model", "text_1", "text_2", passes_through=True,
            description="One text_1 against each text_2, or pair by pair"),
        "ScoreList": _list_of(_object({"object": {"const": "score"}, "index": _INTEGER,
                                       "score": _NUMBER}),
                              id=_STRING, created=_UNIX, model=_STRING, usage=_USAGE),
        "TokenizeRequest": {"anyOf": [
            _object({"model": _STRING, "prompt": _STRING, "add_special_tokens": _BOOLEAN},
                    "model", "prompt", passes_through=True),
            _object({"model": _STRING, "messages": _schema("ChatMessages"),
                     "add_special_tokens": _BOOLEAN}, "model", "messages",
                    passes_through=True)]},
        "TokenizeResult": _object({"count": _INTEGER, "max_model_len": _INTEGER,
                                   "tokens": {"type": "array", "items": _INTEGER}}, "tokens"),
        "DetokenizeRequest": _object({"model": _STRING,
                                      "tokens": {"type": "array", "items": _TOKEN}},
                                     "model", "tokens"),
        "DetokenizeResult": _object({"prompt": _STRING}, "prompt"),
    }


def _generation_schemas() -> Json:
    """Chat, completions, Responses and Messages: the calls of a ``generate`` model."""
    return {
        "ChatMessages": {"type": "array", "minItems": 1, "items": _object({
            "role": _STRING, "content": {"type": ["string", "array", "null"]}}, "role")},
        "ChatCompletionRequest": _object({
            "model": _STRING, "messages": _schema("ChatMessages"),
            "max_tokens": _MAX_TOKENS, "max_completion_tokens": _MAX_TOKENS, **_SAMPLING,
            "stream": _BOOLEAN,
            "stream_options": _object({"include_usage": {
                "type": "boolean", "description": "End the stream with a usage chunk "
                                                  "(with `usage.cost`)"}}),
        }, "model", "messages", passes_through=True),
        "ChatCompletion": _object({
            "id": _STRING, "object": {"const": "chat.completion"}, "created": _UNIX,
            "model": _STRING, "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE}, "choices"),
        "CompletionRequest": _object({
            "model": _STRING, "prompt": {"type": ["string", "array"]},
            "max_tokens": _MAX_TOKENS, **_SAMPLING, "stream": _BOOLEAN,
            "stream_options": _object({"include_usage": _BOOLEAN}),
        }, "model", "prompt", passes_through=True),
        "Completion": _object({
            "id": _STRING, "object": {"const": "text_completion"}, "created": _UNIX,
            "model": _STRING, "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE}, "choices"),
        "ResponseRequest": _object({
            "model": _STRING,
            "input": {"type": ["string", "array"], "items": {"type": "object"},
                      "description": "Text, or a list of input items (messages…)"},
            "instructions": {"type": ["string", "null"]},
            "max_output_tokens": _MAX_TOKENS, "temperature": _NUMBER, "top_p": _NUMBER,
            "stream": _BOOLEAN,
            "previous_response_id": {"type": ["string", "null"], "description":
                                     "Passed to the node: the portal stores no responses"},
            "store": {"type": "boolean", "description": "Passed to the node"},
        }, "model", "input", passes_through=True),
        "Response": _object({
            "id": _STRING, "object": {"const": "response"}, "created_at": _UNIX,
            "model": _STRING, "status": _STRING,
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": _object({"input_tokens": _INTEGER, "output_tokens": _INTEGER,
                              "total_tokens": _INTEGER, "cost": _COST})}, "id", "output"),
        "MessageRequest": _object({
            "model": _STRING, "max_tokens": _MAX_TOKENS,
            "messages": {"type": "array", "minItems": 1, "items": _object({
                "role": {"enum": ["user", "assistant"]},
                "content": {"type": ["string", "array"], "items": {"type": "object"}},
            }, "role", "content")},
            "system": {"type": ["string", "array"], "items": {"type": "object"}},
            "stream": _BOOLEAN, "temperature": _NUMBER, "top_p": _NUMBER,
            "top_k": _INTEGER, "stop_sequences": {"type": "array", "items": _STRING},
        }, "model", "max_tokens", "messages", passes_through=True),
        "Message": _object({
            "id": _STRING, "type": {"const": "message"}, "role": {"const": "assistant"},
            "model": _STRING, "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": ["string", "null"]},
            "stop_sequence": {"type": ["string", "null"]},
            "usage": _object({"input_tokens": _INTEGER, "output_tokens": _INTEGER,
                              "cost": _COST}),
        }, "id", "type", "content"),
    }


# -- the catalogue ------------------------------------------------------------------------
def _catalog_paths() -> Json:
    name = _path_parameter("name", _STRING, "The model's name; it may hold `/` "
                                            "(`meta-llama/Llama-3.1-8B-Instruct`)")
    who = "Without a key: the public catalogue; with one, only the models it may call."
    return {
        "/v1/models": {"get": _operation(
            "listModels", "The models, with prices, kind and node state", "models",
            {"200": _answer("The models, by name", _schema("ModelList")), **_errors(401)},
            security=_KEY_OPTIONAL, description=who)},
        "/v1/models/{name}": {"get": _operation(
            "getModel", "One model", "models",
            {"200": _answer("The model", _schema("Model")), **_errors(401, 404)},
            parameters=[name], security=_KEY_OPTIONAL, description=who)},
    }


def _catalog_schemas() -> Json:
    price = "USD per 1M tokens"
    return {
        "Model": _object({
            "id": _STRING, "object": {"const": "model"}, "created": _UNIX,
            "owned_by": _STRING,
            "kind": _enum(ModelKind, "What its nodes serve: `generate` (chat, completions, "
                                     "responses, messages), `embed` (embeddings, score, "
                                     "rerank) or `rerank` (score, rerank); another call is "
                                     "400 `model_kind_mismatch`"),
            "context_length": _INTEGER,
            "pricing": _object({
                "currency": {"const": "USD"}, "unit": {"const": "1M tokens"},
                "input": {"type": "string", "description": price},
                "output": {"type": "string", "description": price},
                "input_micros": _INTEGER, "output_micros": _INTEGER}),
            "state": _enum(("running", "warming", "stopped"),
                           "`running`: a healthy node serves it; `warming`: one is booting"),
            "nodes": {"type": "object", "additionalProperties": _INTEGER,
                      "description": "How many of its nodes are in each state"},
        }, "id", "object", "kind", "pricing", "state"),
        "ModelList": _list_of(_schema("Model")),
    }


# -- the caller's key and usage -----------------------------------------------------------
def _account_paths() -> Json:
    filters = [_ref("parameters", name)
               for name in ("UsageStart", "UsageEnd", "UsageModel", "UsageKeyId")]
    scope = "A manage key sees its whole account, an API key only its own calls."
    return {
        "/v1/key": {"get": _operation(
            "getKey", "The caller's key: settings, limits, cap and balance", "account",
            {"200": _answer("The key", _object({"data": _schema("KeyStatus")}, "data")),
             **_errors(401, 403)})},
        "/v1/usage": {"get": _operation(
            "listUsage", "Usage: the calls newest first, or sums per group", "account",
            {"200": _answer("A page of calls, or the groups and their totals",
                            {"oneOf": [_schema("UsagePage"), _schema("UsageGroups")]}),
             **_errors(400, 401, 404)},
            parameters=[*filters,
                        _query("group_by", _enum(("day", "model", "key")),
                               "Sum per UTC day, model or key instead of listing calls"),
                        _limit(1000, 100),
                        _query("cursor", _STRING, "`next_cursor` of the previous page")],
            description=scope)},
        "/v1/usage/export": {"get": _operation(
            "exportUsage", "Usage as CSV", "account",
            {"200": _answer("The calls as CSV (an attachment), newest first",
                            {"type": "string"}, media="text/csv"),
             **_errors(400, 401, 404)}, parameters=filters, description=scope)},
        "/v1/generations/{request_id}": {"get": _operation(
            "getGeneration", "One call: model, node, tokens, cost, latency, status",
            "account",
            {"200": _answer("The call", _object({"data": _schema("UsageRow")}, "data")),
             **_errors(401, 404)},
            parameters=[_path_parameter("request_id", _STRING,
                                        "The call's request id (x-portal-request-id, or "
                                        "x-request-id when the portal chose it)")],
            description=scope)},
    }


def _account_schemas() -> Json:
    sums = {"requests": _INTEGER, "prompt_tokens": _INTEGER, "completion_tokens": _INTEGER,
            **_money("cost")}
    return {
        "Key": _object({
            "id": _INTEGER, "account": _INTEGER, "name": _STRING, "prefix": _STRING,
            "scope": _enum(KeyScope), "models": _NAMES, "routes": _ROUTE_NAMES,
            "limits": _object({"requests_per_minute": _INTEGER,
                               "tokens_per_minute": _INTEGER}),
            **_money("cap", nullable=True), "cap_reset": _enum(CapReset),
            **_money("spent"), "created_at": _TIME, "expires_at": _TIME,
            "revoked_at": _TIME, "revoked": _BOOLEAN,
            "previous_prefix": {"type": ["string", "null"],
                                "description": "A rotated-out secret still in its grace"},
            "previous_until": _TIME,
        }, "id", "account", "name", "prefix", "scope",
            description="A key's settings and spend (never its secret)"),
        "KeyStatus": {"allOf": [_schema("Key"), _object({
            "cap_window": _object({**_money("used"), **_money("left")},
                                  description="The current cap window (capped keys only)"),
            **_money("balance"), "frozen": _BOOLEAN,
            "account": _object({"id": _INTEGER, "name": _STRING, **_money("balance"),
                                **_money("spent"), "frozen": _BOOLEAN}),
        })]},
        "Account": _object({"id": _INTEGER, "name": _STRING, **_money("balance"),
                            **_money("spent"), "frozen": _BOOLEAN, "created_at": _TIME},
                           "id", "name", "balance", "frozen"),
        "UsageRow": _object({
            "request_id": _STRING, "created_at": _TIME, "model": _STRING,
            "node_id": {"type": ["integer", "null"]}, "key_id": _INTEGER,
            "endpoint": _STRING, "prompt_tokens": _INTEGER, "completion_tokens": _INTEGER,
            **_money("cost"), "latency_ms": _INTEGER, "status": _INTEGER,
            "streamed": _BOOLEAN, "cancelled": _BOOLEAN,
            "counted_by": {"enum": ["node", "edge"], "description": "Who counted the tokens"},
        }, "request_id", "created_at", "model", "cost"),
        "UsagePage": _list_of(_schema("UsageRow"), has_more=_BOOLEAN,
                              next_cursor={"type": ["string", "null"]}),
        "UsageGroups": _list_of(
            _object({"day": _STRING, "model": _STRING, "key_id": _INTEGER, **sums},
                     description="One of day, model or key_id, and its sums"),
            group_by=_enum(("day", "model", "key")), totals=_object(sums)),
    }


# -- jobs ---------------------------------------------------------------------------------
def _job_paths() -> Json:
    return {
        "/v1/jobs": {"post": _operation(
            "createJob", "Queue a completion; answered when a node of the model is up",
            "jobs", {"202": _answer("Queued; its worst-case cost is reserved",
                                    _schema("Job")),
                     **_errors(400, 401, 402, 403, 404, 413, 429, 503)},
            body=_schema("JobRequest"))},
        "/v1/jobs/{id}": {"get": _operation(
            "getJob", "A job's status and answer", "jobs",
            {"200": _answer("The job", _schema("Job")), **_errors(400, 401, 403, 404)},
            parameters=[_path_parameter("id", _STRING, "The job's id (`job_…`)"),
                        _query("wait", {"type": "number", "minimum": 0, "maximum": 60},
                               "Seconds to wait for the job to end (a long poll)")])},
    }


def _job_schemas() -> Json:
    return {
        "JobRequest": {"allOf": [
            {"anyOf": [_schema("ChatCompletionRequest"), _schema("CompletionRequest")]},
            _object({"endpoint": {"enum": ["chat", "completions"], "default": "chat"},
                     "deadline": {"type": "integer", "minimum": 1,
                                  "description": "Seconds to answer it in (at most "
                                                 "PORTAL_JOB_MAX_DEADLINE)"},
                     "stream": {"const": False}})],
            "description": "A chat completion's body (or, with `\"endpoint\": "
                           "\"completions\"`, a completion's), never streamed"},
        "Job": _object({
            "id": _STRING, "object": {"const": "job"}, "status": _enum(JobStatus),
            "model": _STRING, "endpoint": _STRING, "created_at": _UNIX,
            "started_at": _UNIX_OR_NULL, "finished_at": _UNIX_OR_NULL,
            "deadline_at": _UNIX, "attempts": _INTEGER,
            "result": {"type": "object", "description": "The answer (succeeded only)"},
            "error": _object({"message": _STRING, "code": _STRING}), **_money("cost"),
        }, "id", "object", "status", "model"),
    }


# -- payments -----------------------------------------------------------------------------
def _payment_paths() -> Json:
    return {
        "/api/payments/config": {"get": _operation(
            "getPaymentsConfig", "Whether payments are on, with the top-up bounds",
            "payments", {"200": _answer("The configuration", _schema("PaymentsConfig"))},
            security=_PUBLIC)},
        "/api/topup": {"post": _operation(
            "createTopup", "Start a Stripe Checkout top-up; answers its payment page",
            "payments", {"200": _answer("The payment, with Stripe's `url`",
                                        _schema("Payment")),
                         **_errors(400, 401, 403, 429, 503)},
            body=_object({"amount": {**_USD_IN, "description": "USD, within the bounds "
                                                               "of /api/payments/config"}},
                         "amount"), security=_KEY_OR_SESSION)},
        "/v1/key/payments": {"get": _operation(
            "listPayments", "The caller's Stripe payments, newest first", "payments",
            {"200": _answer("The payments", _list_of(_schema("Payment"))),
             **_errors(400, 401)}, parameters=[_limit(100, 50)],
            description="A key frozen by a dispute may still read them.")},
        "/webhooks/stripe": {"post": _operation(
            "stripeWebhook", "Stripe's signed events", "payments",
            {"200": _answer("Handled once (a repeat is a no-op)", _object({
                "received": _BOOLEAN, "id": _STRING, "type": _STRING,
                "duplicate": _BOOLEAN, "outcome": _STRING})),
             **_errors(400, 503)},
            body={"type": "object", "description": "A Stripe event"},
            parameters=[{"name": "Stripe-Signature", "in": "header", "required": True,
                         "schema": _STRING, "description": "Stripe's signature"}],
            security=_PUBLIC,
            description="400 (`webhook_refused`) changes nothing; after a 5xx Stripe "
                        "retries. Payments are off (503) without STRIPE_WEBHOOK_SECRET.")},
    }


def _payment_schemas() -> Json:
    return {
        "PaymentsConfig": _object({"payments_enabled": _BOOLEAN, "currency": _STRING,
                                   **_money("min_amount"), **_money("max_amount")},
                                  "payments_enabled"),
        "Payment": _object({
            "id": {"type": "string", "description": "The Checkout Session's id"},
            "status": _enum(PaymentStatus), "currency": _STRING, **_money("amount"),
            **_money("paid"), **_money("refunded"), **_money("credited"),
            **_money("debited"), "created_at": _TIME, "updated_at": _TIME,
            "url": {"type": "string", "description": "Stripe's payment page, while open"},
            "payment_id": {"type": "integer", "description": "Admin only (so are the rest)"},
            "account_id": _INTEGER, "payment_intent": {"type": ["string", "null"]},
            "charge_id": {"type": ["string", "null"]},
        }, "id", "status", "amount"),
    }


# -- chat ---------------------------------------------------------------------------------
_SOCKET = (
    "A WebSocket (`GET` with `Upgrade: websocket`). It is signed in by the pages' session "
    "cookie (browsers, from the portal's own origin), or by a first text frame "
    "`{\"type\": \"auth\", \"key\": \"sk-ip-…\"}` within 10 seconds. Client frames (JSON, "
    "`type` first): `auth`, `message` (`text`, `model`, `system`, `ask`, `params`), "
    "`regenerate` (`reply_id`, and a message's `model`, `system`, `params`), `edit` "
    "(`message_id`, `text`, and a message's fields), `choose` (`message_id`), `stop`, "
    "`history`, `resume`, `ping`. Server events: `ready`, `message`, `delta`, `done`, "
    "`chosen` (`show` and `hide`: the alternatives now shown and set aside), `room` (its "
    "title or settings changed, or it was deleted), `status`, `presence`, `history`, "
    "`error`, `pong`, `sent`. Close codes: 1008 (not reading), 1013 (busy: try again "
    "later), 4001 (bad key), 4003 (frozen key or foreign origin), 4004 (no such room, or "
    "another account's private one), 4008 (too many rooms), 4029 (too many sockets).")


#: ``edge.chat.protocol.ROOM_NAME`` (not imported: it would bring the chat's machinery here;
#: tests/web/test_openapi.py checks they agree).
_ROOM_NAME = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


_PARAMS: Json = _object({
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 8192},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "seed": {"type": "integer", "minimum": 0}}, description="Sampling settings of its replies")


def _conversation_schemas() -> Json:
    return {
        "Conversation": _object({
            "name": _STRING, "title": _STRING, "private": _BOOLEAN,
            "mine": {"type": "boolean", "description": "The caller's account made it"},
            "model": {"type": ["string", "null"]}, "system_prompt": _STRING,
            "params": _PARAMS, "pinned": _BOOLEAN, "last_message_at": _TIME,
            "created_at": _TIME, "deleted_at": _TIME,
            "match": {"type": ["string", "null"],
                      "description": "With `q`: the text around the newest hit"}},
            "name", "title", "private", "pinned"),
        "Share": _object({
            "token": _STRING, "url": {"type": "string", "format": "uri"}, "title": _STRING,
            "created_at": _TIME, "messages": {"type": "integer",
                                              "description": "Messages in the snapshot"}},
            "token", "url"),
    }


def _conversation_paths() -> Json:
    name = _path_parameter("name", {"type": "string", "pattern": _ROOM_NAME},
                           "The conversation's room name")
    conversation = _answer("The conversation", _schema("Conversation"))
    path = "/api/conversations/{name}"
    return {
        "/api/conversations": {"get": _operation(
            "listConversations", "The caller's conversations: own rooms, joined public ones",
            "chat", {"200": _answer("Pinned first, then the newest", _list_of(
                _schema("Conversation"))), **_errors(400, 401, 403)},
            parameters=[_query("q", {"type": "string", "maxLength": 200},
                               "Only those whose title or messages hold this"),
                        _query("deleted", {"type": "string", "enum": ["1", "true"]},
                               "The deleted ones instead (restorable for a while)")],
            security=_KEY_OR_SESSION)},
        path: {
            "get": _operation("getConversation", "A conversation", "chat", {
                "200": conversation, **_errors(401, 403, 404)}, parameters=[name],
                security=_KEY_OR_SESSION),
            "patch": _operation(
                "updateConversation", "Rename, pin, or change its model or settings", "chat",
                {"200": conversation, **_errors(400, 401, 403, 404)}, parameters=[name],
                body=_object({"title": {"type": "string", "minLength": 1, "maxLength": 200},
                              "pinned": _BOOLEAN, "model": _STRING,
                              "system_prompt": {"type": "string", "maxLength": 4000},
                              "params": _PARAMS}),
                security=_KEY_OR_SESSION,
                description="Anyone who may read it pins it (for themselves); only the "
                            "account that made it changes its title, model and settings."),
            "delete": _operation(
                "deleteConversation", "Delete a private conversation, or leave a public room",
                "chat", {"200": _answer("Deleted (restorable) or left", _object({
                    "name": _STRING, "deleted": _BOOLEAN, "restorable": _BOOLEAN,
                    "purged_after_days": {"type": ["integer", "null"]}}, "name", "deleted")),
                    **_errors(401, 403, 404)}, parameters=[name], security=_KEY_OR_SESSION),
        },
        path + "/restore": {"post": _operation(
            "restoreConversation", "Bring a deleted conversation back", "chat",
            {"200": conversation, **_errors(401, 403, 404)}, parameters=[name],
            security=_KEY_OR_SESSION)},
        path + "/export": {"get": _operation(
            "exportConversation", "Download it as Markdown or JSON", "chat",
            {"200": {"description": "The file (Content-Disposition: attachment)",
                     "headers": {"x-request-id": _ref("headers", "RequestId")},
                     "content": {"text/markdown": {"schema": _STRING},
                                 "application/json": {"schema": {"type": "object"}}}},
             **_errors(400, 401, 403, 404)},
            parameters=[name, _query("format", _enum(["markdown", "md", "json"]),
                                     "markdown (the default) or json (every alternative, "
                                     "tokens and cost)")],
            security=_KEY_OR_SESSION)},
        path + "/shares": {
            "get": _operation("listShares", "Its live share links", "chat", {
                "200": _answer("The links", _list_of(_schema("Share"))),
                **_errors(401, 403, 404)}, parameters=[name], security=_KEY_OR_SESSION),
            "post": _operation(
                "shareConversation", "A read-only link to a snapshot of it, as it is now",
                "chat", {"201": _answer("The link", _schema("Share")),
                         **_errors(400, 401, 403, 404)}, parameters=[name],
                security=_KEY_OR_SESSION,
                description="Anyone with the link reads the snapshot at /s/{token}, without "
                            "signing in; nothing said after it shows."),
        },
        "/api/shares/{token}": {"delete": _operation(
            "revokeShare", "End a share link, for everyone", "chat",
            {"200": _answer("Revoked", _object({"token": _STRING, "revoked": _BOOLEAN},
                                               "token", "revoked")),
             **_errors(401, 403, 404)},
            parameters=[_path_parameter("token", _STRING, "The link's token")],
            security=_KEY_OR_SESSION)},
    }


def _chat_paths() -> Json:
    room_name = {"type": "string", "pattern": _ROOM_NAME}
    room = _object({"name": _STRING, "private": _BOOLEAN, "model": {"type": ["string", "null"]},
                    "title": _STRING}, "name", "private")
    return {
        **_conversation_paths(),
        "/ws/chat/{room}": {"get": _operation(
            "chatSocket", "A chat room over WebSocket", "chat",
            {"101": {"description": "Switching to the WebSocket protocol"}},
            parameters=[_path_parameter("room", room_name, "The room's name")],
            security=[{}, {"session": []}], description=_SOCKET)},
        "/api/rooms": {
            "get": _operation(
                "listRooms", "Public rooms, and the caller's private ones", "chat",
                {"200": _answer("The rooms", _object({"data": {"type": "array",
                                                               "items": room}}, "data")),
                 **_errors(401, 403)}, security=_KEY_OR_SESSION),
            "post": _operation(
                "createRoom", "Make a room, named or (private) unguessable", "chat",
                {"200": _answer("It existed already", room),
                 "201": _answer("Made", room), **_errors(400, 401, 403)},
                body=_object({
                    "name": room_name,
                    "private": _BOOLEAN, "model": {"type": "string",
                                                   "description": "Who answers in it"},
                    "system_prompt": {"type": "string", "maxLength": 4000},
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "params": _PARAMS}),
                body_required=False, security=_KEY_OR_SESSION),
        },
    }


# -- admin --------------------------------------------------------------------------------
_LAUNCH: Json = _object({
    "instance_types": {"type": "array", "items": _STRING,
                       "description": "In order of preference; a capacity refusal tries the next"},
    "subnets": {"type": "array", "items": _STRING}, "image_id": _STRING,
    "launch_template": _STRING, "security_group_ids": {"type": "array", "items": _STRING},
    "key_name": _STRING, "disk_gb": _INTEGER, "region": _STRING})
#: A model's scaling policy (docs/fleet.md).
_POLICY: Json = {
    "min_nodes": _INTEGER, "max_nodes": _INTEGER, "target_load": _NUMBER,
    "load_metric": {"enum": ["in_flight", "waiting"]}, "scale_out_after": _INTEGER,
    "scale_in_after": _INTEGER, "idle_ttl": {"type": ["integer", "null"]},
    "node_slots": {"type": ["integer", "null"]}, "spot": _BOOLEAN,
    "on_demand_floor": _INTEGER, "launch": _LAUNCH}


def _price(name: str) -> Json:
    """A model's price as the admin API shows it: USD per 1M tokens, and its micro-dollars."""
    return {name: {"type": "string", "description": "USD per 1M tokens, six decimals",
                   "examples": ["0.500000"]},
            f"{name}_micros": {"type": "integer",
                               "description": "The same price in micro-dollars per 1M tokens"}}


#: A model's catalogue fields, as the admin API takes them.
_CATALOGUE: Json = {
    "served_name": {"type": "string", "minLength": 1, "maxLength": 256,
                    "description": "The name its vLLM nodes serve it under"},
    "input_price": {**_USD_IN, "description": "USD per 1M prompt tokens (at most 1,000,000)"},
    "output_price": {**_USD_IN, "description": "USD per 1M completion tokens (at most 1,000,000)"},
    "context_length": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
    "kind": _enum(ModelKind), "enabled": _BOOLEAN}


def _admin_paths() -> Json:
    return {**_admin_fleet_paths(), **_admin_catalog_paths(), **_admin_account_paths(),
            **_admin_key_paths(), **_admin_ledger_paths(), **_admin_record_paths(),
            **_admin_overview_paths()}


def _admin_ledger_paths() -> Json:
    reference = {"type": "string", "maxLength": 200}
    return {"/admin/ledger": {"get": _admin(
        "adminListLedger", "The ledger's rows, newest first",
        {"200": _answer("A page of rows", _list_of(
            _schema("LedgerRow"), has_more=_BOOLEAN,
            next_before={"type": ["integer", "null"],
                         "description": "`before` for the next (older) page"}))}, 400,
        parameters=[
            _query("reference", reference, "Only the row of this reference"),
            _query("reference_prefix", reference, "Only rows whose reference starts so "
                   "(`checkout:cs_…`, `refund:`, `usage:`); not with `reference`"),
            _query("account", _ID, "Only this account's rows"),
            _query("kind", _enum(LedgerKind), "Only rows of this kind"),
            _query("before", _ID, "Only rows older than this row's id (the cursor)"),
            _limit(500, 100)])}}


def _admin(op_id: str, summary: str, responses: Json, *statuses: int, **more: Any) -> Json:
    """An operation of the admin API: its token, and its refusals."""
    return _operation(op_id, summary, "admin", {**responses, **_errors(401, 403, *statuses)},
                      security=_ADMIN, **more)


def _admin_fleet_paths() -> Json:
    node_id = _path_parameter("node_id", _ID, "The node's id")
    action = _path_parameter("action", _enum(ACTIONS), "What to do with it")
    model_name = _path_parameter("name", _STRING, "The model's public name")
    return {
        "/admin/nodes": {
            "get": _admin("adminListNodes", "Every node",
                          {"200": _answer("The nodes", _object({"data": {
                              "type": "array", "items": _schema("Node")}}, "data"))}),
            "post": _admin("adminLaunchNodes", "Launch EC2 nodes of a model",
                           {"202": _answer("Enqueued for the workers", _schema("Enqueued"))},
                           400, body=_schema("NodeLaunch")),
        },
        "/admin/nodes/{node_id}/{action}": {"post": _admin(
            "adminNodeAction", "Boot, stop, reboot, terminate or drain a node",
            {"202": _answer("Enqueued for the workers", _schema("Enqueued"))}, 404,
            parameters=[node_id, action])},
        "/admin/models/{name}/policy": {
            "get": _admin("adminGetScalingPolicy", "A model's scaling policy and what the "
                          "scaler last did", {"200": _answer("The policy",
                                                             _schema("ScalingPolicy"))}, 404,
                          parameters=[model_name]),
            "patch": _admin("adminChangeScalingPolicy", "Change the settings the body names "
                            "(launch is replaced whole)",
                            {"200": _answer("The policy", _schema("ScalingPolicy"))}, 400, 404,
                            parameters=[model_name], body=_schema("ScalingPolicyChange")),
        },
        "/admin/fleet/events": {"post": _admin(
            "adminFleetEvent", "An EC2 event as EventBridge delivers it: a spot interruption "
            "notice or rebalance recommendation drains the node and launches its replacement",
            {"202": _answer("Enqueued: the node is replaced", _schema("Enqueued")),
             "200": _answer("Not an interruption, or no node runs the instance", _object({
                 "handled": _BOOLEAN, "reason": _STRING}, "handled"))}, 400,
            body=_object({"detail-type": _STRING, "source": _STRING, "detail": _object({
                "instance-id": _STRING, "instance-action": _STRING})}, "detail-type"))},
        "/admin/jobs": {"get": _admin(
            "adminListJobs", "Every job, newest first (without results)",
            {"200": _answer("The jobs", _object({"data": {"type": "array", "items": {
                "allOf": [_schema("Job"), _object({
                    "key_id": _INTEGER, "account": _INTEGER,
                    "node_id": {"type": ["integer", "null"],
                                "description": "The node that ran it last"}})]}}},
                "data"))}, 400,
            parameters=[_query("status", _enum(JobStatus), "Only jobs in this status"),
                        _query("account", _ID, "Only the jobs of this account's keys"),
                        _query("model", {"type": "string", "maxLength": 128},
                               "Only this model's jobs"),
                        _limit(500, 100)])},
        "/admin/payments": {"get": _admin(
            "adminListPayments", "Every payment, newest first",
            {"200": _answer("The payments", _list_of(_schema("Payment")))}, 400,
            parameters=[_query("status", _enum(PaymentStatus), "Only payments in this status"),
                        _query("account_id", _ID, "Only this account's"), _limit(500, 100)])},
        "/admin/payments/events": {"get": _admin(
            "adminListPaymentEvents", "Stripe events received and what they did",
            {"200": _answer("The events, newest first",
                            _list_of(_schema("PaymentEvent")))}, 400,
            parameters=[_query("type", {"type": "string", "maxLength": 100},
                               "Only events of this type, like charge.refunded"),
                        _query("ignored", {"enum": ["true", "false"]},
                               "true: only the events the portal ignored; false: the others"),
                        _limit(500, 100)],
            description="A delivery that failed is not recorded: Stripe delivers it again "
                        "(`portal_webhooks_total{outcome=\"failed\"}` counts it).")},
        "/admin/payments/{payment}": {"get": _admin(
            "adminGetPayment", "A payment's whole story: the payment, its ledger rows, "
            "refunds, disputes and Stripe events",
            {"200": _answer("The payment and its story", _schema("PaymentStory"))}, 404,
            parameters=[_path_parameter("payment", _STRING, "The payment's id (`payment_id`) "
                                                            "or its Checkout Session's")])},
    }


def _admin_catalog_paths() -> Json:
    name = _path_parameter("name", _STRING, "The model's public name; it may hold `/`")
    return {
        "/admin/models": {
            "get": _admin("adminListModels", "Every model, disabled ones too, with its prices, "
                          "policy and nodes by state",
                          {"200": _answer("The models, by name",
                                          _list_of(_schema("AdminModel")))}),
            "post": _admin("adminAddModel", "Add a model, or bring the one of that name to "
                           "the body (as `portal models add`)",
                           {"201": _answer("Added", _schema("AdminModel")),
                            "200": _answer("Updated, or already so (`outcome`)",
                                           _schema("AdminModel"))}, 400,
                           body=_schema("AdminModelCreate")),
        },
        "/admin/models/{name}": {
            "get": _admin("adminGetModel", "A model, its prices, policy and nodes by state",
                          {"200": _answer("The model", _schema("AdminModel"))}, 404,
                          parameters=[name]),
            "patch": _admin("adminUpdateModel", "Change a model's prices, context, kind or "
                            "state (the fields given); every worker's /v1/models shows it "
                            "within a second",
                            {"200": _answer("The model (`outcome`: updated or unchanged)",
                                            _schema("AdminModel"))}, 400, 404,
                            parameters=[name], body=_schema("AdminModelChange")),
        },
    }


def _admin_account_paths() -> Json:
    account_id = _ref("parameters", "AccountId")
    freeze = _object({"note": {"type": "string", "minLength": 1, "maxLength": 500,
                               "description": "Why, kept in the audit log"}})
    return {
        "/admin/accounts": {"get": _admin(
            "adminListAccounts", "Accounts, by id",
            {"200": _answer("The accounts", _list_of(_schema("Account")))}, 400,
            parameters=[_query("q", {"type": "string", "maxLength": 128},
                               "Part of a name, an account id or a key prefix"),
                        _limit(500, 100)])},
        "/admin/accounts/{account_id}": {"get": _admin(
            "adminGetAccount", "An account, its live balance and its keys",
            {"200": _answer("The account", _schema("AccountDetail"))}, 404,
            parameters=[account_id])},
        "/admin/accounts/{account_id}/credit": {"post": _admin(
            "adminCreditAccount", "Credit an account: a top-up ledger row with the "
            "operator's note (once per reference)",
            {"200": _answer("Credited, or a repeat of a reference already applied",
                            _schema("AccountAdjustment"))}, 400, 404, 503,
            parameters=[account_id], body=_schema("AccountAdjustmentRequest"))},
        "/admin/accounts/{account_id}/debit": {"post": _admin(
            "adminDebitAccount", "Debit an account: an adjustment ledger row with the "
            "operator's note (once per reference), never below zero",
            {"200": _answer("Debited (`applied` now, `deferred` from open calls when they "
                            "settle, `shortfall` the rest), or a repeat of a reference",
                            _schema("AccountAdjustment"))}, 400, 404, 503,
            parameters=[account_id], body=_schema("AccountAdjustmentRequest"))},
        "/admin/accounts/{account_id}/freeze": {"post": _admin(
            "adminFreezeAccount", "Freeze an account: every one of its keys is refused (403)",
            {"200": _answer("The account", _schema("AccountDetail"))}, 400, 404,
            parameters=[account_id], body=freeze, body_required=False)},
        "/admin/accounts/{account_id}/unfreeze": {"post": _admin(
            "adminUnfreezeAccount", "Unfreeze an account (one a dispute froze too)",
            {"200": _answer("The account", _schema("AccountDetail"))}, 400, 404,
            parameters=[account_id], body=freeze, body_required=False)},
    }


def _admin_key_paths() -> Json:
    key_id = _ref("parameters", "KeyId")
    secret = {"200": _answer("The key and its new secret (shown once)",
                             _schema("KeyWithSecret"))}
    return {
        "/admin/keys": {"post": _admin(
            "adminCreateKey", "Make a key, in a new account or a given one",
            {"201": _answer("The key and its secret (shown once)", _schema("KeyWithSecret"))},
            400, 404, body=_schema("KeyCreate"))},
        "/admin/keys/{key_id}": {
            "get": _admin("adminGetKey", "A key",
                          {"200": _answer("The key", _schema("Key"))}, 404,
                          parameters=[key_id]),
            "patch": _admin("adminUpdateKey", "Change a key's settings (those given)",
                            {"200": _answer("The key", _schema("Key"))}, 400, 404,
                            parameters=[key_id], body=_schema("KeySettings")),
        },
        "/admin/keys/{key_id}/rotate": {"post": _admin(
            "adminRotateKey", "Give a key a new secret", secret, 400, 404,
            parameters=[key_id], body_required=False, body=_object({"grace": {
                "type": "number", "minimum": 0, "default": 0,
                "description": "Seconds the old secret keeps working"}}))},
        "/admin/keys/{key_id}/revoke": {"post": _admin(
            "adminRevokeKey", "Revoke a key (its account keeps the credit)",
            {"200": _answer("The key", _schema("Key"))}, 404, parameters=[key_id])},
    }


def _admin_record_paths() -> Json:
    return {
        "/admin/contact": {"get": _admin(
            "adminListContactMessages", "Messages from the contact page, newest first, and "
            "whether each was mailed", {"200": _answer("The messages", _list_of(
                _schema("ContactMessage")))}, 400, parameters=[_limit(500, 100)])},
        "/admin/audit": {"get": _admin(
            "adminListAudit", "The audit log: what operators changed, newest first "
            "(append-only)", {"200": _answer("The entries", _list_of(_schema("AuditEntry")))},
            400, parameters=[
                _query("target", {"type": "string", "maxLength": 200},
                       "Only this target, like node:3, key:7 or model:llama"),
                _query("action", {"type": "string", "maxLength": 64},
                       "Only this action, like key.revoke or model.policy"),
                _limit(500, 100)])},
    }


def _admin_overview_paths() -> Json:
    return {"/admin/overview": {"get": _admin(
        "adminOverview", "Revenue, top-ups, GPU cost and margin per model, requests, tokens "
        "and errors for today, 7 and 30 UTC days and per day; the credit customers hold and "
        "what is reserved now", {"200": _answer("The overview", _schema("Overview"))})}}


def _overview_schemas() -> Json:
    tokens = {"requests": _INTEGER, "prompt_tokens": _INTEGER, "completion_tokens": _INTEGER}
    window = _schema("OverviewWindow")
    return {
        "Overview": _object({
            "object": {"const": "overview"}, "at": _TIME,
            "windows": _object({"today": window, "7d": window, "30d": window},
                               "today", "7d", "30d"),
            **_money("liability"), **_money("reserved", nullable=True),
            "open_reservations": {"type": ["integer", "null"],
                                  "description": "null, like reserved: Redis was not read"},
            "days": {"type": "array", "description": "The last 30 UTC days, oldest first",
                     "items": _object({"day": {"type": "string", "format": "date"},
                                       **_money("revenue"), **_money("topups"),
                                       **_money("gpu_cost"), "requests": _INTEGER})},
        }, "object", "at", "windows", "liability", "days",
            description="`liability`: the sum of the accounts' balances; `reserved`: what "
                        "open calls hold of it now"),
        "OverviewWindow": _object({
            "start": _TIME, "end": _TIME, **_money("revenue"), **_money("topups"),
            **_money("refunds"), **_money("adjustments"), **_money("gpu_cost"),
            **_money("margin"), **tokens,
            "errors": _object({"client": _INTEGER, "server": _INTEGER}, "client", "server",
                              description="Requests that ended 4xx (499: cancelled) and 5xx"),
            "models": {"type": "array", "description": "The highest revenue first",
                       "items": _object({"model": _STRING, **_money("revenue"),
                                         **_money("gpu_cost"), **_money("margin"), **tokens})},
        }, "start", "end", "revenue", "gpu_cost", "margin", "models",
            description="`revenue`: usage charged; `gpu_cost`: node-hours × hourly cost; "
                        "`refunds`: given back, positive"),
    }


def _admin_schemas() -> Json:
    return {
        **_overview_schemas(),
        "ContactMessage": _object({
            "id": _INTEGER, "name": _STRING, "email": _STRING, "message": _STRING,
            "client_ip": _STRING, "created_at": _TIME,
            "mailed_at": {**_TIME, "description": "When it was mailed (null: not mailed)"},
            "mail_error": {"type": "string", "description": "Why mailing failed (empty: "
                                                            "it did not)"},
        }, "id", "name", "email", "message", "created_at"),
        "AuditEntry": _object({
            "id": _INTEGER,
            "actor": {"type": "string", "examples": ["admin-api", "cli", "console:alice"]},
            "action": {"type": "string", "examples": ["node.boot", "key.revoke"]},
            "target": {"type": "string", "examples": ["node:3", "model:llama"]},
            "before": {"description": "The target before (null: it did not exist)"},
            "after": {"description": "The target after (null: it is gone)"},
            "created_at": _TIME,
        }, "id", "actor", "action", "target", "created_at"),
        "AccountDetail": {"allOf": [_schema("Account"), _object({
            **_money("reserved"), **_money("owed"),
            "open_disputes": {"type": "integer", "description": "Its payments in dispute"},
            "keys": {"type": "array", "items": _schema("Key")}})],
            "description": "`reserved`: what its open calls hold now; `owed`: refunded "
                           "credit still to collect from them"},
        "AccountAdjustmentRequest": _object({
            "usd": {**_USD_IN, "description": "USD, more than 0 and at most 1,000,000"},
            "note": {"type": "string", "minLength": 1, "maxLength": 500,
                     "description": "Why; kept on the ledger row and in the audit log"},
            "reference": {"type": "string", "minLength": 1, "maxLength": 200,
                          "description": "Unique forever: the same one applies once "
                                         "(default: a new one)"}}, "usd", "note"),
        "AccountAdjustment": {"allOf": [_schema("AccountDetail"), _object({
            "account": _INTEGER, **_money("applied"), "duplicate": _BOOLEAN,
            **_money("deferred"), **_money("shortfall")}, "account", "applied", "duplicate",
            description="`applied`: the change now (negative for a debit); of a debit, "
                        "`deferred` is taken from what open calls release when they "
                        "settle and `shortfall` is what nothing covers")]},
        "LedgerRow": _object({
            "id": _INTEGER, "account": _INTEGER, "kind": _enum(LedgerKind),
            **_money("amount"), "reference": _STRING, "note": _STRING, "created_at": _TIME,
        }, "id", "account", "kind", "amount", "reference",
            description="A change of a balance; `amount` is negative for what was taken"),
        "PaymentEvent": _object({"id": _STRING, "type": _STRING, "outcome": _STRING,
                                 "received_at": _TIME}, "id", "type", "outcome"),
        "PaymentStory": {"allOf": [_schema("Payment"), _object({
            "ledger": {"type": "array", "items": _schema("LedgerRow"),
                       "description": "Its credit, refunds taken back and given back, a "
                                      "lost dispute, oldest first"},
            "refunds": {"type": "array", "items": _object({
                "id": _STRING, **_money("debited"), **_money("given_back")}, "id")},
            "disputes": {"type": "array", "items": _object({
                "id": _STRING, **_money("debited")}, "id"),
                "description": "The disputes it lost"},
            "events": {"type": "array", "items": {"allOf": [_schema("PaymentEvent"), _object({
                "matched_by": {"enum": ["session", "refund", "dispute", "account"],
                               "description": "What of the payment the outcome names (only "
                                              "its account: it may be another payment's)"},
            })]}, "description": "The Stripe events that name it, newest first"},
        }, "ledger", "refunds", "disputes", "events")]},
        "AdminModel": _object({
            "name": _STRING, "served_name": _STRING, "kind": _enum(ModelKind),
            **_price("input_price"), **_price("output_price"), "context_length": _INTEGER,
            "enabled": _BOOLEAN, "created_at": _TIME, "policy": _schema("ScalingPolicy"),
            "nodes": {"type": "object", "additionalProperties": _INTEGER,
                      "description": "How many of its nodes are in each state (`unhealthy`: "
                                     "running but failing its health checks)"},
            "outcome": {"enum": ["created", "updated", "unchanged"],
                        "description": "What a POST or PATCH did"},
        }, "name", "served_name", "kind", "input_price", "output_price", "enabled"),
        "AdminModelChange": _object(dict(_CATALOGUE), description="Only the fields given "
                                    "change; the scaling policy has its own route"),
        "AdminModelCreate": _object({
            "name": {"type": "string", "minLength": 1, "maxLength": 128},
            **_CATALOGUE,
            "context_length": {**_CATALOGUE["context_length"], "default": 8192},
            "served_name": {**_CATALOGUE["served_name"], "description": "Default: the name"},
            "enabled": {"type": "boolean", "default": True},
            "idle_ttl": {"type": ["integer", "null"], "minimum": 0,
                         "description": "Seconds idle before its nodes stop (0: never)"},
            "min_nodes": {"type": "integer", "minimum": 0,
                          "description": "Nodes kept running however idle (at most "
                                         "max_nodes)"},
        }, "name", "input_price", "output_price"),
        "KeyWithSecret": {"allOf": [_schema("Key"), _object({"key": {
            "type": "string", "description": "The secret; it is never shown again"}},
            "key")]},
        "KeySettings": _object({
            "name": _STRING, "scope": _enum(KeyScope),
            "models": {**_NAMES, "description": "The models it may call (null: all)"},
            "routes": {**_ROUTE_NAMES, "description": "The routes it may call (null: all)"},
            "rpm": _INTEGER, "tpm": _INTEGER,
            "cap": {"type": ["string", "number", "null"],
                    "description": "USD per window (null: no cap)"},
            "cap_reset": _enum(CapReset), "expires_at": _TIME,
        }, description="Only the fields given change"),
        "KeyCreate": {"allOf": [_schema("KeySettings"), _object({
            "account": {"type": "integer", "description": "Default: a new account"},
            "credit": {**_USD_IN, "description": "A new account's opening credit, USD"},
        }, "name")]},
        "Node": _object({
            "id": _INTEGER, "model": _STRING, "state": _enum(NodeState),
            "healthy": _BOOLEAN, "url": _STRING, "instance_id": {"type": ["string", "null"]},
            "region": _STRING, "instance_type": _STRING, "static": _BOOLEAN,
            "private_ip": {"type": ["string", "null"]},
            "public_ip": {"type": ["string", "null"]}, "queue_depth": _INTEGER,
            "running_requests": _INTEGER, "last_used_at": _TIME, "last_health_at": _TIME,
            "uptime_seconds": _INTEGER, "hourly_cost": _STRING, "spot": _BOOLEAN,
            "note": {"type": "string", "description": "Why it is in its state: what EC2 "
                     "refused before it was launched, an interruption"},
            "slots": {"type": ["integer", "null"],
                      "description": "Its batch size, learnt from its metrics"},
        }, "id", "model", "state"),
        "NodeLaunch": _object({
            "model": _STRING, "instance_type": _STRING,
            "image_id": {"type": "string", "description": "This or launch_template"},
            "launch_template": _STRING,
            "count": {"type": "integer", "minimum": 1, "maximum": 20, "default": 1},
            "region": _STRING, "subnet_id": _STRING, "key_name": _STRING,
            "security_group_ids": {"type": "array", "items": _STRING},
            "spot": {"type": "boolean", "default": False,
                     "description": "A spot instance (on-demand when EC2 has no spot capacity)"},
        }, "model", "instance_type"),
        "ScalingPolicy": _object({"model": _STRING, **_POLICY,
                                  "scaling_status": _STRING}, "model"),
        "ScalingPolicyChange": _object(dict(_POLICY)),
        "Enqueued": _object({"enqueued": _STRING, "node": _INTEGER, "message_id": _STRING},
                            "enqueued"),
    }


# -- operations ---------------------------------------------------------------------------
def _operations_paths() -> Json:
    return {
        "/healthz": {"get": _operation(
            "healthz", "Liveness", "operations",
            {"200": _answer("Alive", _object({"status": {"const": "ok"}}, "status"))},
            security=_PUBLIC)},
        "/readyz": {"get": _operation(
            "readyz", "Readiness: Redis, the database and the hot store", "operations",
            {"200": _answer("Ready", _schema("Readiness")),
             "503": _answer("Not ready: `checks` says what failed", _schema("Readiness"))},
            security=_PUBLIC)},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics of this worker", "operations",
            {"200": _answer("The text exposition format", {"type": "string"},
                            media="text/plain")}, security=_PUBLIC)},
        "/openapi.json": {"get": _operation(
            "openapi", "This document", "operations",
            {"200": _answer("The OpenAPI 3.1 document", {"type": "object"})},
            security=_PUBLIC)},
    }


def _operations_schemas() -> Json:
    return {"Readiness": _object({
        "status": {"enum": ["ready", "not ready"]},
        "checks": {"type": "object", "additionalProperties": _STRING,
                   "description": "`ok`, or what failed, per dependency"}}, "status", "checks")}
