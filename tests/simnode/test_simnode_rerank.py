"""/rerank and /score of embed (bi-encoder) and rerank (cross-encoder) nodes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simnode.tokenizer import PAIR_OVERHEAD, count_text
from tests.simnode.conftest import EMBED_MODEL, MAX_MODEL_LEN, RERANK_MODEL

QUERY = "red apples in the orchard"
DOCUMENTS = ["a cloud over the quiet river", "red apples grow in the orchard", "green apples"]


def _pair_tokens(query: str, documents: list[str]) -> int:
    """What a cross-encoder counts: each (query, document) pair, with its 3 specials."""
    return sum(count_text(query) + count_text(d) + PAIR_OVERHEAD for d in documents)


def _bi_tokens(queries: list[str], documents: list[str]) -> int:
    """What a bi-encoder counts: each text once, with its BOS."""
    return sum(count_text(t) + 1 for t in (*queries, *documents))


def _error(response: httpx.Response, status: int, err_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (err_type, status)
    return error


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
async def test_cross_encoder_rerank_has_vllms_shape(
    rerank_client: httpx.AsyncClient, path: str
) -> None:
    response = await rerank_client.post(path, json={"model": RERANK_MODEL, "query": QUERY,
                                                    "documents": DOCUMENTS})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "model", "usage", "results"]
    assert body["id"].startswith("score-") and body["model"] == RERANK_MODEL
    tokens = _pair_tokens(QUERY, DOCUMENTS)
    assert tokens == (5 + 6 + 3) + (5 + 6 + 3) + (5 + 2 + 3)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    results = body["results"]
    assert [list(r) for r in results] == [["index", "document", "relevance_score"]] * 3
    assert [r["index"] for r in results] == [1, 2, 0]  # sorted by relevance, best first
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert results[0]["document"] == {"text": DOCUMENTS[1], "multi_modal": None}


async def test_bi_encoder_rerank_scores_by_cosine_and_counts_texts_once(
    embed_client: httpx.AsyncClient,
) -> None:
    body = (await embed_client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS,
                                                     "top_n": 2})).json()
    assert body["model"] == EMBED_MODEL
    tokens = _bi_tokens([QUERY], DOCUMENTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert [r["index"] for r in body["results"]] == [1, 2]  # top_n keeps the best two
    assert -1 <= body["results"][1]["relevance_score"] < body["results"][0]["relevance_score"]


async def test_top_n_zero_or_above_returns_everything(rerank_client: httpx.AsyncClient) -> None:
    for top_n in (0, 10):
        body = (await rerank_client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS,
                                                          "top_n": top_n})).json()
        assert len(body["results"]) == 3


async def test_rerank_ignores_return_documents_like_vllm(rerank_client: httpx.AsyncClient) -> None:
    body = (await rerank_client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS,
                                                      "return_documents": False})).json()
    assert all(r["document"]["text"] in DOCUMENTS for r in body["results"])


@pytest.mark.parametrize(
    ("fields", "pairs"),
    [
        ({"text_1": QUERY, "text_2": DOCUMENTS}, [(QUERY, d) for d in DOCUMENTS]),
        ({"queries": QUERY, "documents": DOCUMENTS[0]}, [(QUERY, DOCUMENTS[0])]),
        ({"queries": [QUERY, "green"], "items": DOCUMENTS[:2]},
         [(QUERY, DOCUMENTS[0]), ("green", DOCUMENTS[1])]),
        ({"data_1": [QUERY], "data_2": DOCUMENTS[1:]}, [(QUERY, d) for d in DOCUMENTS[1:]]),
    ],
)
async def test_score_takes_vllms_field_names(
    rerank_client: httpx.AsyncClient, fields: dict[str, Any], pairs: list[tuple[str, str]]
) -> None:
    for path in ("/score", "/v1/score"):
        response = await rerank_client.post(path, json={"model": RERANK_MODEL, **fields})
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["id", "object", "created", "model", "data", "usage"]
        assert body["id"].startswith("score-") and body["object"] == "list"
        assert [d["index"] for d in body["data"]] == list(range(len(pairs)))
        assert all(d["object"] == "score" and 0 < d["score"] < 1 for d in body["data"])
        tokens = sum(count_text(q) + count_text(d) + PAIR_OVERHEAD for q, d in pairs)
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens,
                                 "completion_tokens": 0, "prompt_tokens_details": None,
                                 "completion_tokens_details": None}


async def test_score_of_related_pairs_is_higher(rerank_client: httpx.AsyncClient) -> None:
    body = (await rerank_client.post("/score", json={"text_1": QUERY,
                                                     "text_2": DOCUMENTS})).json()
    unrelated, related, partial = (d["score"] for d in body["data"])
    assert related > partial > unrelated
    same = await rerank_client.post("/score", json={"text_1": QUERY, "text_2": DOCUMENTS})
    assert [d["score"] for d in same.json()["data"]] == [unrelated, related, partial]


async def test_bi_encoder_score_counts_each_query_of_n_to_n(
    embed_client: httpx.AsyncClient,
) -> None:
    queries, documents = ["one two", "three"], ["four", "five six seven"]
    body = (await embed_client.post("/score", json={"queries": queries,
                                                    "documents": documents})).json()
    assert body["usage"]["prompt_tokens"] == _bi_tokens(queries, documents) == 3 + 2 + 2 + 4
    assert len(body["data"]) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text_1": ["a", "b"], "text_2": ["c", "d", "e"]},
         "Input lengths must be either 1:1, 1:N or N:N"),
        ({"text_1": [], "text_2": ["c"]}, "At least one text element must be given"),
        ({"text_1": "a", "text_2": []}, "At least one text_pair element must be given"),
        ({"text_1": "a", "text_2": {"content": [{"type": "text", "text": "b"}]}},
         "MultiModalParam is not supported for SimnodeForSequenceClassification"),
        ({"text_1": "a", "text_2": "b", "max_tokens_per_doc": MAX_MODEL_LEN},
         f"max_tokens_per_doc ({MAX_MODEL_LEN}) must be less than max_model_len "
         f"({MAX_MODEL_LEN})."),
    ],
)
async def test_bad_score_inputs_are_400(
    rerank_client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    error = _error(await rerank_client.post("/score", json=body), 400, "BadRequestError")
    assert error["message"] == message


async def test_rerank_refuses_empty_documents_and_text_objects(
    rerank_client: httpx.AsyncClient,
) -> None:
    empty = await rerank_client.post("/rerank", json={"query": "q", "documents": []})
    assert _error(empty, 400, "BadRequestError")["message"] == (
        "At least one text_pair element must be given")
    objects = await rerank_client.post("/rerank", json={"query": "q",
                                                         "documents": [{"text": "d"}]})
    assert _error(objects, 400, "Bad Request")["param"] == "body.documents.0.content"
    negative = await rerank_client.post("/rerank", json={"query": "q", "documents": ["d"],
                                                          "top_n": -1})
    assert _error(negative, 400, "Bad Request")["param"] == "body.top_n"
    missing = await rerank_client.post("/score", json={"query": "q"})
    assert _error(missing, 400, "Bad Request")["message"].startswith("4 validation errors:")


async def test_a_pair_longer_than_the_context_is_400(rerank_client: httpx.AsyncClient) -> None:
    half = " ".join(["word"] * (MAX_MODEL_LEN // 2))
    error = _error(await rerank_client.post("/rerank", json={"query": half, "documents": [half]}),
                   400, "BadRequestError")
    assert error["param"] == "input_tokens"
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in error["message"]
    clipped = await rerank_client.post("/rerank", json={
        "query": half, "documents": [half], "truncate_prompt_tokens": 20})
    assert clipped.json()["usage"]["prompt_tokens"] == 20


async def test_max_tokens_per_doc_clips_documents(rerank_client: httpx.AsyncClient) -> None:
    body = (await rerank_client.post("/rerank", json={
        "query": "q", "documents": ["one two three four"], "max_tokens_per_doc": 2})).json()
    assert body["usage"]["prompt_tokens"] == 1 + 2 + PAIR_OVERHEAD
    assert body["results"][0]["document"]["text"] == "one two three four"  # echoed whole


async def test_unknown_model_is_404(rerank_client: httpx.AsyncClient) -> None:
    response = await rerank_client.post("/rerank", json={"model": "x", "query": "q",
                                                         "documents": ["d"]})
    assert _error(response, 404, "NotFoundError")["message"] == "The model `x` does not exist."


async def test_faults_and_metrics_apply_to_rerank(rerank_client: httpx.AsyncClient) -> None:
    await rerank_client.post("/sim/faults", json={"fail_status": 429, "fail_count": 1})
    refused = await rerank_client.post("/v2/rerank", json={"query": "q", "documents": ["d"]})
    assert _error(refused, 429, "TooManyRequestsError")["message"] == "Too Many Requests"

    def success(text: str) -> float:
        line = next(x for x in text.splitlines()
                    if x.startswith('vllm:request_success_total{finished_reason="stop"'))
        return float(line.rsplit(" ", 1)[1])

    before = success((await rerank_client.get("/metrics")).text)
    assert (await rerank_client.post("/rerank", json={"query": "q",
                                                      "documents": DOCUMENTS})).is_success
    after = success((await rerank_client.get("/metrics")).text)
    assert after - before == len(DOCUMENTS)  # a cross-encoder runs one request per pair
