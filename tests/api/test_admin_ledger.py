"""``GET /admin/ledger``: the ledger's rows newest first, by reference (exact or prefix),
account and kind, page after page, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.billing import credits
from edge.db.models import ApiKey
from tests.chat.test_conversations_postgres import migrated_postgres  # noqa: F401 (a fixture)
from tests.support.inprocess import InProcessPortal, open_portal
from tests.support.services import postgres_database

TOKEN = "ledger-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for a copy of the SQLite template, else a copy of the migrated PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_database(template=request.getfixturevalue("migrated_postgres")) as url:
        yield url


@pytest.fixture
async def portal(database: str | None, tmp_path: Path, redis_url: str, sqlite_template: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InProcessPortal]:
    # No bookkeeper runs beside the in-process portal: a credit drains the stream itself.
    monkeypatch.setattr(credits, "BOOKKEEPER_GRACE", 0.0)
    where = {"template": sqlite_template} if database is None else \
        {"database_url": database, "migrated": True}
    async with open_portal(tmp_path, redis_url, admin_token=TOKEN, **where) as made:
        yield made


async def adjust(portal: InProcessPortal, account: int, action: str, usd: str,
                 reference: str) -> None:
    answer = await portal.client.post(f"/admin/accounts/{account}/{action}", headers=ADMIN,
                                      json={"usd": usd, "note": f"{action} {usd}",
                                            "reference": reference})
    assert answer.status_code == 200, answer.text


async def rows(portal: InProcessPortal, **query: str) -> list[dict]:
    answer = await portal.client.get("/admin/ledger", params=query, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    data: list[dict] = answer.json()["data"]
    return data


async def test_rows_are_found_by_reference_account_and_kind(portal: InProcessPortal) -> None:
    first_key, _ = await portal.create_key("5")
    second_key, _ = await portal.create_key("1")
    first = (await ApiKey.get(id=first_key)).account_id
    second = (await ApiKey.get(id=second_key)).account_id
    await adjust(portal, first, "credit", "2", "wire-1")
    await adjust(portal, second, "credit", "3", "wire-2")
    await adjust(portal, first, "debit", "0.5", "wire_fee")
    await adjust(portal, first, "credit", "1", "50%off")

    newest = await rows(portal)
    assert [(r["account"], r["kind"], r["amount"], r["amount_micros"], r["note"])
            for r in newest[:4]] == [
        (first, "topup", "1.000000", 1_000_000, "credit 1"),
        (first, "adjustment", "-0.500000", -500_000, "debit 0.5"),
        (second, "topup", "3.000000", 3_000_000, "credit 3"),
        (first, "topup", "2.000000", 2_000_000, "credit 2")]
    assert [r["reference"] for r in newest[4:]] == [
        f"opening:{(await ApiKey.get(id=second_key)).prefix}",
        f"opening:{(await ApiKey.get(id=first_key)).prefix}"]
    assert [r["id"] for r in newest] == sorted((r["id"] for r in newest), reverse=True)
    assert all(r["created_at"] for r in newest)

    assert [r["reference"] for r in await rows(portal, reference="wire-1")] == ["wire-1"]
    assert await rows(portal, reference="wire") == []  # exact
    # A prefix is a prefix: "_" and "%" are themselves, not LIKE's wildcards.
    assert [r["reference"] for r in await rows(portal, reference_prefix="wire-")] == [
        "wire-2", "wire-1"]
    assert [r["reference"] for r in await rows(portal, reference_prefix="wire_")] == [
        "wire_fee"]
    assert [r["reference"] for r in await rows(portal, reference_prefix="50%")] == ["50%off"]
    assert [r["reference"] for r in await rows(portal, reference_prefix="5%")] == []
    assert [r["amount_micros"] for r in await rows(portal, account=str(second))] == [
        3_000_000, 1_000_000]
    assert [r["reference"] for r in await rows(portal, account=str(first),
                                               kind="adjustment")] == ["wire_fee"]


async def test_pages_go_back_in_time_without_gaps(portal: InProcessPortal) -> None:
    key_id, _ = await portal.create_key("1")
    account = (await ApiKey.get(id=key_id)).account_id
    for number in range(5):
        await adjust(portal, account, "credit", "1", f"page-{number}")
    everything = [r["id"] for r in await rows(portal)]
    seen: list[int] = []
    query = {"limit": "2"}
    while True:
        answer = (await portal.client.get("/admin/ledger", params=query, headers=ADMIN)).json()
        seen += [r["id"] for r in answer["data"]]
        if not answer["has_more"]:
            assert answer["next_before"] is None
            break
        assert answer["next_before"] == answer["data"][-1]["id"]
        query = {"limit": "2", "before": str(answer["next_before"])}
    assert seen == everything and len(seen) == 6


@pytest.mark.parametrize(("query", "param"), [
    ({"kind": "gift"}, "kind"),
    ({"account": "x"}, "account"),
    ({"account": "-1"}, "account"),
    ({"account": "99999999999999999999"}, "account"),
    ({"before": "0"}, "before"),
    ({"before": "1.5"}, "before"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"reference": "r" * 201}, "reference"),
    ({"reference_prefix": "bad\x00byte"}, "reference_prefix"),
    ({"reference": "a", "reference_prefix": "a"}, "reference_prefix"),
])
async def test_bad_filters_are_refused(portal: InProcessPortal, query: dict,
                                       param: str) -> None:
    refused = await portal.client.get("/admin/ledger", params=query, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param


async def test_the_token_is_required(portal: InProcessPortal) -> None:
    await portal.create_key("1")
    assert (await portal.client.get("/admin/ledger")).status_code == 401
    wrong = await portal.client.get("/admin/ledger", headers={"authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert len(await rows(portal)) == 1
