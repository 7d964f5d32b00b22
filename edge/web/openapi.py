"""The OpenAPI 3.1 description of the public API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Invalid API key", 402: "Insufficient credit",
            403: "The key is frozen (a payment dispute)",
            404: "Not found", 413: "Body too large", 429: "Rate limited (Retry-After)",
            502: "The GPU node failed", 503: "Model warming up (Retry-After)"}
    return {str(s): {"description": text[s],
                     "content": {"application/json": {"schema": _ERROR}}} for s in statuses}


def openapi_document(base_url: str) -> dict[str, Any]:
    completion_errors = _errors(400, 401, 402, 404, 413, 429, 502, 503)
    chat_body = {"type": "object", "required": ["model", "messages"], "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role"], "properties": {
                "role": {"type": "string"},
                "content": {"type": ["string", "array", "null"]}}}},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"}, "top_p": {"type": "number"},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {
            "include_usage": {"type": "boolean"}}},
    }, "additionalProperties": True}
    completion_body = {"type": "object", "required": ["model", "prompt"], "properties": {
        "model": {"type": "string"},
        "prompt": {"type": ["string", "array"]},
        "max_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
    }, "additionalProperties": True}
    answer = {"description": "The answer (JSON), or a text/event-stream when stream is true",
              "headers": {"x-request-id": {"schema": {"type": "string"}},
                          "x-portal-cost-usd": {"schema": {"type": "string"}}},
              "content": {"application/json": {"schema": {"type": "object"}},
                          "text/event-stream": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Inference Portal API", "version": "1",
                 "description": "OpenAI-compatible inference, billed per token."},
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]}}}}}},
        },
        "paths": {
            "/v1/chat/completions": {"post": {
                "summary": "Chat completion", "operationId": "createChatCompletion",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": chat_body}}},
                "responses": {"200": answer, **completion_errors}}},
            "/v1/completions": {"post": {
                "summary": "Text completion", "operationId": "createCompletion",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": completion_body}}},
                "responses": {"200": answer, **completion_errors}}},
            "/v1/models": {"get": {
                "summary": "Models with prices and node state", "operationId": "listModels",
                "security": [],
                "responses": {"200": {"description": "The models", "content": {
                    "application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/key": {"get": {
                "summary": "The caller's balance, spend and limits", "operationId": "getKey",
                "responses": {"200": {"description": "The key", "content": {
                    "application/json": {"schema": {"type": "object"}}}}, **_errors(401)}}},
            "/v1/jobs": {"post": {
                "summary": "Queue a completion; answered when a node of the model is up",
                "operationId": "createJob",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"allOf": [chat_body, {"type": "object", "properties": {
                        "endpoint": {"enum": ["chat", "completions"]},
                        "deadline": {"type": "integer", "minimum": 1}}}]}}}},
                "responses": {"202": {"description": "Queued", "content": {
                    "application/json": {"schema": {"type": "object"}}}},
                    **_errors(400, 401, 402, 404, 429)}}},
            "/v1/jobs/{id}": {"get": {
                "summary": "A job's status and answer", "operationId": "getJob",
                "parameters": [
                    {"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "wait", "in": "query", "required": False,
                     "schema": {"type": "number", "minimum": 0, "maximum": 60}}],
                "responses": {"200": {"description": "The job", "content": {
                    "application/json": {"schema": {"type": "object"}}}},
                    **_errors(400, 401, 404)}}},
            "/v1/key/payments": {"get": {
                "summary": "The caller's Stripe payments", "operationId": "listPayments",
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
                "responses": {"200": _object("The payments, newest first"),
                              **_errors(400, 401)}}},
            "/api/topup": {"post": {
                "summary": "Start a Stripe Checkout top-up; answers the payment page's URL",
                "operationId": "createTopup",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "object", "required": ["amount"], "properties": {
                        "amount": {"type": ["string", "number"],
                                   "description": "USD, within the configured bounds"}}}}}},
                "responses": {"200": _object("The Checkout Session: its id and url"),
                              **_errors(400, 401, 403, 429, 503)}}},
            "/api/payments/config": {"get": {
                "summary": "Whether payments are on, with the top-up bounds",
                "operationId": "getPaymentsConfig", "security": [],
                "responses": {"200": _object("The configuration")}}},
        },
    }


def _object(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"type": "object"}}}}
