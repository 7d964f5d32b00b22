"""``/v1/usage``, ``/v1/usage/export`` and ``/v1/generations/<id>``, through the OpenAI SDK.

Real calls go through the in-process portal to node doubles; the ledger is drained, and
the rows are spread over a few UTC days. Then each key asks what it spent.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import openai
import pytest

from edge.api.usage import CSV_COLUMNS, UsageScope, parse_range, usage_groups, usage_rows
from edge.db.models import Account, ApiKey, LedgerEntry, UsageRecord
from edge.errors import InvalidRequest, NotFound
from edge.identity.accounts import KeySettings, create_key
from tests.support.inprocess import InProcessPortal, NodeDouble

#: Models offered (the name a client asks for → the name its node serves).
MODELS = {"m1": "sim-m1", "m2": "sim-m2", "=cmd": "sim-m3"}
#: How many days before now each row of the account goes, by its order of creation.
DAYS_AGO = (5, 5, 3, 3, 3, 1, 0, 0)


@dataclasses.dataclass
class Books:
    """One account with a manage and an API key, another account, and their calls."""

    portal: InProcessPortal
    manage: tuple[int, str]
    api: tuple[int, str]
    other: tuple[int, str]
    account_id: int
    rows: list[dict[str, Any]]  # the account's usage rows, newest (highest id) first
    other_rows: list[dict[str, Any]]

    def sdk(self, secret: str) -> Any:
        return openai.AsyncOpenAI(base_url=self.portal.url + "/v1", api_key=secret,
                                  max_retries=0)


async def _call(portal: InProcessPortal, secret: str, model: str, max_tokens: int) -> str:
    response = await portal.chat(secret, model, max_tokens=max_tokens)
    assert response.status_code == 200, response.text
    return response.headers.get("x-portal-request-id") or response.headers["x-request-id"]


@pytest.fixture
async def books(inprocess_portal: InProcessPortal,
                node_doubles: Callable[..., Awaitable[NodeDouble]]) -> Books:
    portal = inprocess_portal
    for name, served in MODELS.items():
        await portal.add_model(name, served_name=served)
        await portal.add_node(name, await node_doubles(served, reply_tokens=6))
    manage = await portal.create_key("10")
    account = await Account.get(id=(await ApiKey.get(id=manage[0])).account_id)
    made = await create_key(name="worker", pepper=portal.ctx.pepper,
                            rpm=portal.settings.default_rpm, tpm=portal.settings.default_tpm,
                            account=account, store=portal.ctx.store,
                            settings=KeySettings(scope="api"))
    api = (made.row.id, made.secret)
    other = await portal.create_key("10")
    calls = [(manage, "m1", 3), (api, "m1", 5), (manage, "m2", 2), (api, "m2", 6),
             (manage, "=cmd", 4), (api, "m1", 1), (manage, "m1", 6), (api, "m2", 2)]
    for (_id, secret), model, tokens in calls:
        await _call(portal, secret, model, tokens)
    await _call(portal, other[1], "m1", 4)
    await portal.drain_ledger()
    now = datetime.now(UTC)
    ids = await UsageRecord.filter(account_id=account.id).order_by("id").values_list(
        "id", flat=True)
    assert len(ids) == len(DAYS_AGO)
    for row_id, days in zip(ids, DAYS_AGO, strict=True):
        await UsageRecord.filter(id=row_id).update(created_at=now - timedelta(days=days))
    rows = await UsageRecord.filter(account_id=account.id).order_by("-id").values()
    other_rows = await UsageRecord.exclude(account_id=account.id).values()
    return Books(portal, manage, api, other, account.id, list(rows), list(other_rows))


@pytest.fixture
async def sdks(books: Books) -> AsyncIterator[dict[str, Any]]:
    """An SDK client per key: ``manage``, ``api`` and ``other`` (another account's)."""
    clients = {"manage": books.sdk(books.manage[1]), "api": books.sdk(books.api[1]),
               "other": books.sdk(books.other[1])}
    yield clients
    for client in clients.values():
        await client.close()


async def _get(sdk: Any, path: str, **params: Any) -> httpx.Response:
    response: httpx.Response = await sdk.get(path, cast_to=httpx.Response,
                                             options={"params": params})
    return response


async def _all_rows(sdk: Any, **params: Any) -> list[dict[str, Any]]:
    """Every row the caller sees, following the cursor (limit 1000 fits the tests')."""
    body = (await _get(sdk, "/usage", limit=1000, **params)).json()
    assert body["has_more"] is False
    return body["data"]


def _sums(rows: list[dict[str, Any]], by: Callable[[dict[str, Any]], Any]) -> dict[Any, tuple]:
    """(requests, prompt tokens, completion tokens, micro-dollars) per ``by`` of SQL rows."""
    sums: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        total = sums[by(row)]
        for i, value in enumerate((1, row["prompt_tokens"], row["completion_tokens"],
                                   row["cost"])):
            total[i] += value
    return {name: tuple(total) for name, total in sums.items()}


def _group_sums(groups: list[dict[str, Any]], name: str) -> dict[Any, tuple]:
    return {g[name]: (g["requests"], g["prompt_tokens"], g["completion_tokens"],
                      g["cost_micros"]) for g in groups}


# -- who sees what --------------------------------------------------------------------------
async def test_a_manage_key_sees_its_account_and_an_api_key_only_itself(
        books: Books, sdks: dict[str, Any]) -> None:
    everything = await _all_rows(sdks["manage"])
    own = await _all_rows(sdks["api"])

    assert [r["request_id"] for r in everything] == [r["request_id"] for r in books.rows]
    assert {r["key_id"] for r in everything} == {books.manage[0], books.api[0]}
    assert [r["request_id"] for r in own] == \
        [r["request_id"] for r in books.rows if r["key_id"] == books.api[0]]
    assert {r["key_id"] for r in own} == {books.api[0]}
    assert {r["request_id"] for r in books.other_rows}.isdisjoint(
        r["request_id"] for r in everything)
    only_api = await _all_rows(sdks["manage"], key_id=books.api[0])
    assert only_api == own
    only_m2 = await _all_rows(sdks["manage"], model="m2")
    assert [r["request_id"] for r in only_m2] == \
        [r["request_id"] for r in books.rows if r["model"] == "m2"]


async def test_a_row_says_what_the_request_was(books: Books, sdks: dict[str, Any]) -> None:
    [latest, *_] = await _all_rows(sdks["manage"])
    sql = books.rows[0]

    assert latest["request_id"] == sql["request_id"]
    assert (latest["model"], latest["key_id"], latest["node_id"], latest["endpoint"]) == \
        (sql["model"], sql["key_id"], sql["node_id"], "chat")
    assert latest["completion_tokens"] == 2 and latest["prompt_tokens"] > 0
    assert latest["cost_micros"] == sql["cost"] > 0
    assert latest["cost"] == f"{sql['cost'] / 1e6:.6f}"
    assert datetime.fromisoformat(latest["created_at"]) == sql["created_at"]
    assert (latest["status"], latest["streamed"], latest["cancelled"]) == (200, False, False)


# -- groups ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("group_by", "name", "of"), [
    ("day", "day", lambda row: row["created_at"].astimezone(UTC).date().isoformat()),
    ("model", "model", lambda row: row["model"]),
    ("key", "key_id", lambda row: row["key_id"]),
])
async def test_groups_sum_the_rows(books: Books, sdks: dict[str, Any], group_by: str,
                                   name: str, of: Callable[[dict[str, Any]], Any]) -> None:
    body = (await _get(sdks["manage"], "/usage", group_by=group_by)).json()

    assert body["object"] == "list" and body["group_by"] == group_by
    assert _group_sums(body["data"], name) == _sums(books.rows, of)
    values = [g[name] for g in body["data"]]
    assert values == sorted(values)
    [(requests, prompt, completion, cost)] = _sums(books.rows, lambda _row: "all").values()
    totals = body["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"],
            totals["cost_micros"]) == (requests, prompt, completion, cost)
    assert totals["cost"] == f"{cost / 1e6:.6f}"


async def test_day_groups_are_only_days_with_usage(books: Books, sdks: dict[str, Any]) -> None:
    body = (await _get(sdks["api"], "/usage", group_by="day")).json()
    own = [r for r in books.rows if r["key_id"] == books.api[0]]
    expected = sorted({r["created_at"].astimezone(UTC).date().isoformat() for r in own})

    assert len(expected) >= 2  # DAYS_AGO spreads the key's calls
    assert [g["day"] for g in body["data"]] == expected
    assert body["totals"]["requests"] == len(own) == 4  # the API key's own calls only


async def test_a_range_leaves_out_what_is_outside_it(books: Books,
                                                     sdks: dict[str, Any]) -> None:
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=3)).isoformat(), today.isoformat()

    rows = await _all_rows(sdks["manage"], start=start, end=end)

    assert sorted(r["request_id"] for r in rows) == sorted(
        r["request_id"] for r, days in zip(reversed(books.rows), DAYS_AGO, strict=True)
        if days in (1, 3))


# -- pages ----------------------------------------------------------------------------------
async def test_the_cursor_visits_every_row_once(books: Books, sdks: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        body = (await _get(sdks["manage"], "/usage", **params)).json()
        pages += 1
        assert len(body["data"]) <= 3
        seen += [r["request_id"] for r in body["data"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
        assert isinstance(cursor, str) and cursor

    assert pages == 3  # 8 rows: 3 + 3 + 2
    assert seen == [r["request_id"] for r in books.rows]


async def test_the_functions_page_like_the_route(books: Books) -> None:
    scope = UsageScope(account_id=books.account_id, key_id=None)
    start, end = parse_range(None, None)
    first, cursor = await usage_rows(scope, start=start, end=end, limit=5)
    rest, last = await usage_rows(scope, start=start, end=end, limit=5, cursor=cursor)

    assert cursor is not None and last is None
    assert [r["request_id"] for r in first + rest] == [r["request_id"] for r in books.rows]


# -- the export -----------------------------------------------------------------------------
async def test_the_csv_holds_the_json_rows(books: Books, sdks: dict[str, Any]) -> None:
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=10)).isoformat(), \
        (today + timedelta(days=1)).isoformat()
    rows = await _all_rows(sdks["manage"], start=start, end=end)

    response = await _get(sdks["manage"], "/usage/export", start=start, end=end)

    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == \
        f'attachment; filename="usage-{start}-{end}.csv"'
    header, *lines = list(csv.reader(io.StringIO(response.text)))
    assert tuple(header) == CSV_COLUMNS
    expected = [[str(v) for v in (
        r["request_id"], r["created_at"], r["key_id"], r["model"], r["node_id"],
        r["endpoint"], r["prompt_tokens"], r["completion_tokens"], r["cost"],
        r["cost_micros"], r["latency_ms"], r["status"], str(r["streamed"]).lower(),
        str(r["cancelled"]).lower())] for r in rows]
    for line in expected:  # what a spreadsheet would run as a formula is quoted
        line[3] = "'" + line[3] if line[3].startswith("=") else line[3]
    assert lines == expected
    assert "'=cmd" in [line[3] for line in lines]


async def test_an_api_keys_csv_is_its_own(books: Books, sdks: dict[str, Any]) -> None:
    response = await _get(sdks["api"], "/usage/export")

    _header, *lines = list(csv.reader(io.StringIO(response.text)))
    assert [line[0] for line in lines] == \
        [r["request_id"] for r in books.rows if r["key_id"] == books.api[0]]


# -- one request ----------------------------------------------------------------------------
async def test_a_generation_costs_what_the_ledger_charged(books: Books,
                                                          sdks: dict[str, Any]) -> None:
    portal = books.portal
    response = await portal.chat(books.api[1], "m2", max_tokens=3)
    request_id = response.headers.get("x-portal-request-id") or response.headers["x-request-id"]
    await portal.drain_ledger()
    charge = await LedgerEntry.get(reference=f"usage:{request_id}")

    for who in ("api", "manage"):
        body = (await _get(sdks[who], f"/generations/{request_id}")).json()
        data = body["data"]
        assert data["request_id"] == request_id
        assert data["cost_micros"] == -charge.amount > 0
        assert data["cost_micros"] == int(response.headers["x-portal-cost-micros"])
        assert (data["model"], data["key_id"], data["completion_tokens"]) == \
            ("m2", books.api[0], 3)
        assert data["counted_by"] in ("node", "edge")


async def test_what_is_not_the_callers_is_not_found(books: Books,
                                                     sdks: dict[str, Any]) -> None:
    theirs = books.other_rows[0]["request_id"]
    managers = next(r["request_id"] for r in books.rows if r["key_id"] == books.manage[0])
    refused = [
        (sdks["manage"], f"/generations/{theirs}", {}),
        (sdks["api"], f"/generations/{managers}", {}),  # same account, not its key
        (sdks["other"], f"/generations/{managers}", {}),
        (sdks["manage"], "/generations/no-such-request", {}),
        (sdks["manage"], "/generations/" + "x" * 300, {}),
        (sdks["manage"], "/generations/été\u2028", {}),
        (sdks["manage"], "/usage", {"key_id": books.other[0]}),
        (sdks["other"], "/usage", {"key_id": books.manage[0]}),
        (sdks["api"], "/usage", {"key_id": books.manage[0]}),
        (sdks["manage"], "/usage", {"key_id": 2**31 - 1}),
        (sdks["manage"], "/usage", {"key_id": books.other[0], "group_by": "model"}),
        (sdks["manage"], "/usage/export", {"key_id": books.other[0]}),
    ]
    for sdk, path, params in refused:
        with pytest.raises(openai.NotFoundError) as caught:
            await _get(sdk, path, **params)
        assert caught.value.code == "not_found", (path, params)
        assert caught.value.type == "invalid_request_error"


async def test_the_functions_refuse_a_key_of_another_account(books: Books) -> None:
    scope = UsageScope(account_id=books.account_id, key_id=None)
    start, end = parse_range(None, None)

    with pytest.raises(NotFound):
        await usage_groups(scope, start=start, end=end, group_by="day", key_id=books.other[0])
    groups, totals = await usage_groups(scope, start=start, end=end, group_by="key",
                                        key_id=books.api[0])
    assert [g["key_id"] for g in groups] == [books.api[0]] and totals["requests"] == 4


# -- bad values -----------------------------------------------------------------------------
def _cursor(text: str) -> str:
    """A cursor as the API writes one, around any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD = [
    ({"start": "yesterday"}, "start"),
    ({"start": "2024-02-30"}, "start"),
    ({"end": "2024-13-01"}, "end"),
    ({"end": "0001-01-01"}, "end"),
    ({"start": "9999-12-31T23:59:59-12:00"}, "start"),
    ({"start": "２０２４-０１-０１"}, "start"),
    ({"start": "2024-03-01", "end": "2024-03-01"}, "start"),
    ({"start": "2024-03-02", "end": "2024-03-01"}, "start"),
    ({"start": "2023-01-01", "end": "2024-01-03"}, "end"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "-5"}, "limit"),
    ({"limit": "1" * 40}, "limit"),
    ({"limit": "١٠"}, "limit"),
    ({"cursor": "garbage"}, "cursor"),
    ({"cursor": _cursor("u1:" + "9" * 23)}, "cursor"),
    ({"cursor": _cursor("u1:0")}, "cursor"),
    ({"cursor": _cursor("u2:5")}, "cursor"),
    ({"cursor": "é" * 10}, "cursor"),
    ({"group_by": "week"}, "group_by"),
    ({"key_id": "abc"}, "key_id"),
    ({"key_id": "9" * 30}, "key_id"),
    ({"model": "m1\x00"}, "model"),
    ({"model": "m" * 200}, "model"),
]


@pytest.fixture
async def manager(inprocess_portal: InProcessPortal) -> AsyncIterator[Any]:
    """The SDK with the manage key of a new account that made no call."""
    _id, secret = await inprocess_portal.create_key("1")
    sdk = openai.AsyncOpenAI(base_url=inprocess_portal.url + "/v1", api_key=secret,
                             max_retries=0)
    yield sdk
    await sdk.close()


@pytest.mark.parametrize(("params", "param"), BAD)
async def test_a_bad_value_is_a_400_naming_it(manager: Any, params: dict[str, str],
                                              param: str) -> None:
    paths = ["/usage"] if param in ("limit", "cursor", "group_by") else \
        ["/usage", "/usage/export"]
    for path in paths:
        with pytest.raises(openai.BadRequestError) as caught:
            await _get(manager, path, **params)
        assert caught.value.param == param, (path, caught.value.body)
        assert caught.value.type == "invalid_request_error"


async def test_a_year_is_the_longest_range(manager: Any) -> None:
    body = (await _get(manager, "/usage", start="2023-01-01",
                       end="2024-01-02")).json()  # 366 days
    assert (body["data"], body["has_more"], body["next_cursor"]) == ([], False, None)
    with pytest.raises(openai.BadRequestError) as caught:
        await _get(manager, "/usage", start="2023-01-01", end="2024-01-02T00:00:01")
    assert caught.value.param == "end"


def test_a_range_is_utc() -> None:
    assert parse_range("2024-03-01", "2024-03-02T12:30:00") == (
        datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, 12, 30, tzinfo=UTC))
    assert parse_range("2024-03-01T02:00:00+02:00", "2024-03-01T01:00:00Z")[0] == \
        datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
    start, end = parse_range(None, None, default_days=7)
    assert end - start == timedelta(days=7)
    assert abs(end - datetime.now(UTC)) < timedelta(seconds=5)
    assert parse_range(None, "2024-03-10") == (datetime(2024, 2, 9, tzinfo=UTC),
                                               datetime(2024, 3, 10, tzinfo=UTC))
    with pytest.raises(InvalidRequest) as caught:
        parse_range("2024-03-01", "2024-02-01")
    assert caught.value.param == "start"


# -- both databases -------------------------------------------------------------------------
async def test_days_are_utc_days_in_sql(database: str) -> None:
    """The day grouping is dialect SQL: the same UTC days on SQLite and PostgreSQL."""
    account = await Account.create(name="a", balance=0)
    key = await ApiKey.create(account=account, prefix="sk-ip-usage001", key_hash="0" * 64,
                              name="k", rpm=1, tpm=1)
    times = [datetime(2024, 3, 1, 23, 59, 59, 999999, tzinfo=UTC),
             datetime(2024, 3, 2, 0, 0, tzinfo=UTC),
             datetime(2024, 3, 2, 6, 30, tzinfo=timezone(timedelta(hours=5))),  # 01:30 UTC
             datetime(2024, 3, 4, 12, tzinfo=UTC)]
    for i, at in enumerate(times):
        row = await UsageRecord.create(request_id=f"r{i}", account=account, key=key,
                                       model="m", prompt_tokens=i, cost=10**12 + i)
        await UsageRecord.filter(id=row.id).update(created_at=at)
    scope = UsageScope(account_id=account.id, key_id=None)
    start, end = parse_range("2024-03-01", "2024-03-04")

    groups, totals = await usage_groups(scope, start=start, end=end, group_by="day")

    assert [(g["day"], g["requests"], g["cost_micros"]) for g in groups] == [
        ("2024-03-01", 1, 10**12), ("2024-03-02", 2, 2 * 10**12 + 3)]
    assert totals["prompt_tokens"] == 3



#: Raw URLs (bytes no SDK would send) and what they get: never a 500.
RAW = [
    ("/v1/usage?start=%ff", 400, "start"),
    ("/v1/usage?start=" + "1" * 5000, 400, "start"),
    ("/v1/usage?end=2024-01-01T25:00", 400, "end"),
    ("/v1/usage?cursor=%00", 400, "cursor"),
    ("/v1/usage?cursor=%ff", 400, "cursor"),
    ("/v1/usage?limit=%ef%bc%91", 400, "limit"),  # a full-width 1
    ("/v1/usage?group_by=%00", 400, "group_by"),
    ("/v1/usage?key_id=1e3", 400, "key_id"),
    ("/v1/usage?key_id=2147483648", 400, "key_id"),
    ("/v1/usage/export?start=%ff&model=%00", 400, "start"),
    ("/v1/usage/export?model=%00", 400, "model"),
    ("/v1/usage?model=%ed%a0%80", 200, None),  # undecodable: a name no model has
    ("/v1/generations/%ff", 404, "request_id"),
    ("/v1/generations/%00", 404, "request_id"),
    ("/v1/generations/%ed%a0%80", 404, "request_id"),
    ("/v1/generations/" + "a" * 5000, 404, "request_id"),
]


async def test_nothing_sent_is_a_500(inprocess_portal: InProcessPortal) -> None:
    _id, secret = await inprocess_portal.create_key("1")
    headers = {"authorization": f"Bearer {secret}"}
    for url, status, param in RAW:
        response = await inprocess_portal.client.get(url, headers=headers)
        assert response.status_code == status, (url[:80], response.text)
        body = response.json()
        if status == 200:
            assert body["data"] == []
        else:
            assert (body["error"]["type"], body["error"]["param"]) == \
                ("invalid_request_error", param), url[:80]
