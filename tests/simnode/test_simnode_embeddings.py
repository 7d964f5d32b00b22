"""/v1/embeddings of an embed node: shapes, the OpenAI SDK, determinism, errors, faults."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from simnode.testing import SimnodeProcess, start_simnode
from simnode.tokenizer import VOCAB_SIZE, completion_prompt_ids, completion_prompt_tokens
from tests.simnode.conftest import EMBED_ARGS, EMBED_MODEL, MAX_MODEL_LEN

DIM = 384


@pytest.fixture
async def sdk(embed_node: SimnodeProcess, embed_client: httpx.AsyncClient) -> AsyncIterator[Any]:
    """The official OpenAI SDK pointed at the embed node, without retries."""
    import openai

    client = openai.AsyncOpenAI(base_url=embed_node.url + "/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


async def _embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": EMBED_MODEL, **body})


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (_norm(a) * _norm(b))


def _error(response: httpx.Response, status: int, err_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["message", "type", "param", "code"]
    assert (body["error"]["type"], body["error"]["code"]) == (err_type, status)
    return body["error"]


async def test_embedding_answer_has_vllms_shape_and_usage(embed_client: httpx.AsyncClient) -> None:
    response = await _embed(embed_client, input=["Hello, world!", "Hi"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id", "object", "created", "model", "data", "usage"]
    assert body["id"].startswith("embd-") and len(body["id"]) == len("embd-") + 32
    assert (body["object"], body["model"]) == ("list", EMBED_MODEL)
    assert [list(item) for item in body["data"]] == [["index", "object", "embedding"]] * 2
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "embedding"),
                                                                 (1, "embedding")]
    tokens = completion_prompt_tokens("Hello, world!") + completion_prompt_tokens("Hi")
    assert tokens == 5 + 2
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7, "completion_tokens": 0,
                             "prompt_tokens_details": None, "completion_tokens_details": None}
    for item in body["data"]:
        assert len(item["embedding"]) == DIM
        assert abs(_norm(item["embedding"]) - 1.0) < 1e-5
    assert b", " not in response.content and b": " not in response.content


async def test_openai_sdk_reads_float_and_base64_alike(sdk: Any) -> None:
    texts = ["the quick river", "the quiet stone"]
    floats = await sdk.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    decoded = await sdk.embeddings.create(model=EMBED_MODEL, input=texts)  # SDK asks base64
    raw = await sdk.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="base64")
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 8
    for f, d, r in zip(floats.data, decoded.data, raw.data, strict=True):
        assert len(f.embedding) == len(d.embedding) == DIM
        unpacked = struct.unpack(f"<{DIM}f", base64.b64decode(r.embedding))
        assert d.embedding == pytest.approx(f.embedding, abs=1e-7)
        assert list(unpacked) == pytest.approx(f.embedding, abs=1e-7)


def test_embeddings_are_deterministic_across_processes(embed_node: SimnodeProcess) -> None:
    body = {"input": "same text, same vector"}
    first = httpx.post(embed_node.url + "/v1/embeddings", json=body).json()
    with start_simnode(*EMBED_ARGS) as other:
        second = httpx.post(other.url + "/v1/embeddings", json=body).json()
    assert first["data"][0]["embedding"] == second["data"][0]["embedding"]


async def test_shared_words_are_more_similar_than_unrelated_text(
    embed_client: httpx.AsyncClient,
) -> None:
    texts = ["red apples grow on trees", "green apples grow on trees", "a quiet harbour at dusk"]
    body = (await _embed(embed_client, input=texts)).json()
    apples, green, harbour = (d["embedding"] for d in body["data"])
    assert _cos(apples, green) > 0.6
    assert abs(_cos(apples, harbour)) < 0.3


async def test_token_id_inputs_count_their_ids(embed_client: httpx.AsyncClient) -> None:
    ids = completion_prompt_ids("the quick river")
    one = (await _embed(embed_client, input=ids)).json()
    many = (await _embed(embed_client, input=[ids, ids[:2]])).json()
    text = (await _embed(embed_client, input="the quick river")).json()
    assert one["usage"]["prompt_tokens"] == len(ids) == 4
    assert many["usage"]["prompt_tokens"] == 4 + 2
    assert one["data"][0]["embedding"] == text["data"][0]["embedding"]
    assert len(many["data"]) == 2


async def test_dimensions_truncate_and_renormalise(embed_client: httpx.AsyncClient) -> None:
    full = (await _embed(embed_client, input="matryoshka doll")).json()["data"][0]["embedding"]
    short = (await _embed(embed_client, input="matryoshka doll", dimensions=16)).json()
    vector = short["data"][0]["embedding"]
    assert len(vector) == 16
    assert abs(_norm(vector) - 1.0) < 1e-5
    scale = _norm(full[:16])
    assert vector == pytest.approx([x / scale for x in full[:16]], abs=1e-6)


@pytest.mark.parametrize("dimensions", [0, DIM + 1, -3])
async def test_dimensions_out_of_range_are_400(
    embed_client: httpx.AsyncClient, dimensions: int
) -> None:
    error = _error(await _embed(embed_client, input="x", dimensions=dimensions), 400,
                   "BadRequestError")
    assert error["message"] == (f"Model '{EMBED_MODEL}' only supports dimensions in range "
                                f"[1, {DIM}], got {dimensions}.")
    assert error["param"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": []}, "You must pass at least one prompt"),
        ({"input": "", "add_special_tokens": False}, "The decoder prompt cannot be empty"),
        ({"input": [[]]}, "The decoder prompt cannot be empty"),
        ({"input": [5, VOCAB_SIZE]}, f"Token id {VOCAB_SIZE} is out of vocabulary"),
        ({"input": [[5, -1]]}, "Token id -1 is out of vocabulary"),
        ({"input": "x", "encoding_format": "bytes"},
         "simnode serves encoding_format float and base64 (parameter=encoding_format, "
         "value=bytes)"),
    ],
)
async def test_bad_inputs_are_refused_like_vllm(
    embed_client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    error = _error(await _embed(embed_client, **body), 400, "BadRequestError")
    assert error["message"] == message


async def test_an_empty_string_is_just_its_bos_token(embed_client: httpx.AsyncClient) -> None:
    body = (await _embed(embed_client, input="")).json()
    assert body["usage"]["prompt_tokens"] == 1
    assert abs(_norm(body["data"][0]["embedding"]) - 1.0) < 1e-5


@pytest.mark.parametrize("value", [["a", 1], [[1], "a"], 5, None, [1.5]])
async def test_inputs_of_mixed_or_wrong_types_fail_validation(
    embed_client: httpx.AsyncClient, value: Any
) -> None:
    body = {"input": value} if value is not None else {}
    error = _error(await _embed(embed_client, **body), 400, "Bad Request")
    assert "validation error" in error["message"]
    assert error["param"].startswith("body.EmbeddingCompletionRequest.input")


async def test_inputs_longer_than_the_context_are_400(embed_client: httpx.AsyncClient) -> None:
    fits = " ".join(["word"] * (MAX_MODEL_LEN - 1))  # + BOS fills the window exactly
    assert (await _embed(embed_client, input=fits)).status_code == 200
    error = _error(await _embed(embed_client, input=["ok", fits + " more"]), 400,
                   "BadRequestError")
    assert error["message"] == (
        f"This model's maximum context length is {MAX_MODEL_LEN} tokens. However, your prompt "
        f"contains at least {MAX_MODEL_LEN + 1} input tokens, which exceeds this limit even "
        "without any output tokens. Please reduce the length of the input prompt. "
        f"(parameter=input_tokens, value={MAX_MODEL_LEN + 1})"
    )
    assert error["param"] == "input_tokens"
    ids = [100] * (MAX_MODEL_LEN + 5)
    error = _error(await _embed(embed_client, input=ids), 400, "BadRequestError")
    assert f"your prompt contains {MAX_MODEL_LEN + 5} input tokens" in error["message"]


async def test_truncate_prompt_tokens_keeps_the_first_tokens(
    embed_client: httpx.AsyncClient,
) -> None:
    long = " ".join(["word"] * 500)
    body = (await _embed(embed_client, input=long, truncate_prompt_tokens=10)).json()
    assert body["usage"]["prompt_tokens"] == 10
    error = _error(await _embed(embed_client, input="x", truncate_prompt_tokens=MAX_MODEL_LEN + 1),
                   400, "BadRequestError")
    assert error["message"].startswith("truncate_prompt_tokens value is greater than")


async def test_unknown_model_is_404_without_param(embed_client: httpx.AsyncClient) -> None:
    response = await embed_client.post("/v1/embeddings", json={"model": "other", "input": "x"})
    error = _error(response, 404, "NotFoundError")
    assert error == {"message": "The model `other` does not exist.", "type": "NotFoundError",
                     "param": None, "code": 404}


async def test_removed_normalize_parameter_is_named(embed_client: httpx.AsyncClient) -> None:
    error = _error(await _embed(embed_client, input="x", normalize=True), 400, "BadRequestError")
    assert error["param"] == "normalize"
    assert "use `use_activation` instead" in error["message"]


async def test_request_id_header_names_the_answer(embed_client: httpx.AsyncClient) -> None:
    response = await embed_client.post("/v1/embeddings", json={"input": "x"},
                                       headers={"X-Request-Id": "abc"})
    assert response.json()["id"] == "embd-abc"


async def test_faults_apply_to_embeddings(embed_client: httpx.AsyncClient) -> None:
    await embed_client.post("/sim/faults", json={"fail_status": 503, "fail_count": 1})
    refused = await _embed(embed_client, input="x")
    assert _error(refused, 503, "ServiceUnavailableError")["message"] == "Service Unavailable"
    assert (await _embed(embed_client, input="x")).status_code == 200
    await embed_client.post("/sim/faults", json={"hang": True})
    with pytest.raises(httpx.ReadTimeout):
        await _embed(embed_client, input="x", timeout=0.4)
    await embed_client.post("/sim/faults", json={"hang": False, "ttft": 0.3, "fail_after": 0})
    started = time.monotonic()
    assert (await _embed(embed_client, input="x")).status_code == 200  # nothing is generated
    assert time.monotonic() - started >= 0.3


async def test_metrics_count_each_input(embed_client: httpx.AsyncClient) -> None:
    def counters(text: str) -> tuple[float, float]:
        prompt = stop = 0.0
        for line in text.splitlines():
            if line.startswith("vllm:prompt_tokens_total{"):
                prompt = float(line.rsplit(" ", 1)[1])
            if line.startswith('vllm:request_success_total{finished_reason="stop"'):
                stop = float(line.rsplit(" ", 1)[1])
        return prompt, stop

    before = counters((await embed_client.get("/metrics")).text)
    await _embed(embed_client, input=["one two", "three"])
    after = counters((await embed_client.get("/metrics")).text)
    assert (after[0] - before[0], after[1] - before[1]) == (3 + 2, 2)
