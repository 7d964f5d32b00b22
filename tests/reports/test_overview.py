"""The operator's overview (``edge/reports``, ``GET /admin/overview``): exact figures from
known usage rows, ledger rows and node runs, on SQLite and PostgreSQL; node runs opened and
closed by the saves of nodes (``edge/fleet/nodes.py``); the route behind the admin token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError

from edge.billing.money import parse_usd, token_cost
from edge.db.models import (
    LLM,
    Account,
    ApiKey,
    LedgerEntry,
    LedgerKind,
    Node,
    NodeRun,
    NodeState,
    UsageRecord,
)
from edge.fleet.nodes import reconcile_runs, track_run, update_node
from edge.reports.overview import DayFigures, ModelFigures, overview
from edge.store.hotstore import HotStore
from tests.support.inprocess import InProcessPortal, NodeDouble
from tests.support.portal import PortalServer
from tests.support.services import sql_query

#: The moment the overview is taken: noon UTC on the last of the 30 days, 2 to 31 March.
NOW = datetime(2026, 3, 31, 12, tzinfo=UTC)

TOKEN = "overview-admin-token"


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    """A moment in March 2026, UTC (day 0 is the last of February)."""
    return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour,
                                                         minutes=minute, seconds=second,
                                                         microseconds=micro)


async def usage(key: ApiKey, model: str, when: datetime, cost: int, prompt: int = 0,
                completion: int = 0, status: int = 200) -> None:
    row = await UsageRecord.create(
        request_id=f"req-{model}-{when.timestamp()}", account_id=key.account_id, key=key,
        model=model, cost=cost, prompt_tokens=prompt, completion_tokens=completion,
        status=status)
    await UsageRecord.filter(id=row.id).update(created_at=when)  # auto_now_add otherwise


async def entry(account: Account, kind: LedgerKind, amount: int, when: datetime) -> None:
    row = await LedgerEntry.create(account=account, kind=kind, amount=amount,
                                   reference=f"{kind}:{when.timestamp()}")
    await LedgerEntry.filter(id=row.id).update(created_at=when)


async def run(node_id: int, model: LLM, hourly_cost: int, started: datetime,
              ended: datetime | None) -> NodeRun:
    return await NodeRun.create(node_id=node_id, model_id=model.id, hourly_cost=hourly_cost,
                                started_at=started, ended_at=ended,
                                open_node_id=node_id if ended is None else None)


async def test_figures_of_known_usage_ledger_and_node_runs(database: str,
                                                           store: HotStore) -> None:
    alpha = await LLM.create(name="alpha", served_name="alpha", input_price=1, output_price=1)
    beta = await LLM.create(name="beta", served_name="beta", input_price=1, output_price=1)
    rich = await Account.create(name="rich", balance=7_000_000)
    await Account.create(name="poor", balance=3_500_000)
    key = await ApiKey.create(account=rich, name="k", prefix="sk-ip-ov", key_hash="h" * 64,
                              rpm=60, tpm=60_000)

    # Usage: today (31 March, until noon), within 7 days, within 30, and just outside.
    await usage(key, "alpha", at(31, 10), 1_000, 100, 50)
    await usage(key, "alpha", at(31, 11), 250, 10, 5, status=499)  # cancelled, charged
    await usage(key, "beta", at(31, 9), 0, 20, status=503)
    await usage(key, "alpha", at(28, 15), 2_000, 200, 100)
    await usage(key, "beta", at(26, 8), 4_000, 300, 300)
    await usage(key, "beta", at(26, 9), 30, 40, 3, status=502)
    await usage(key, "alpha", at(10, 12), 8_000, 800, 400)
    await usage(key, "alpha", at(2), 16_000, 1_600, 800)  # the first moment of the 30 days
    await usage(key, "alpha", at(1, 23, 59, 59, 999_999), 100_000, 1, 1)  # before them
    await usage(key, "alpha", NOW, 32_000, 1, 1)  # the windows end before now

    await entry(rich, LedgerKind.TOPUP, 5_000_000, at(31, 8))
    await entry(rich, LedgerKind.TOPUP, 2_000_000, at(27, 8))
    await entry(rich, LedgerKind.TOPUP, 1_000_000, at(5, 8))
    await entry(rich, LedgerKind.TOPUP, 9_000_000, at(1, 12))  # before the 30 days
    await entry(rich, LedgerKind.REFUND, -500_000, at(29, 8))
    await entry(rich, LedgerKind.ADJUSTMENT, -100_000, at(31, 9))
    await entry(rich, LedgerKind.USAGE, -1_000, at(31, 10))  # usage is revenue, not here

    # Node runs: 3.60 USD an hour (1,000 µ$ a second) for alpha's node, 1.20 for beta's.
    first = await Node.create(model=alpha, state=NodeState.STOPPED, hourly_cost=3_600_000)
    second = await Node.create(model=beta, state=NodeState.RUNNING, hourly_cost=1_200_000)
    assert await NodeRun.filter(node_id=first.id).count() == 0  # a stopped node is not billed
    await NodeRun.filter(open_node_id=second.id).update(started_at=at(31, 10, 30))  # open
    await run(first.id, alpha, 3_600_000, at(31, 6), at(31, 8))  # 2 h today
    await run(first.id, alpha, 3_600_000, at(30, 23), at(31, 1))  # 1 h on each day
    await run(first.id, alpha, 3_600_000, at(1, 23), at(2, 1))  # 1 h of it in the 30 days
    await run(first.id, alpha, 3_600_000, at(0), at(1, 10))  # before them
    await run(second.id, beta, 1_000_000, at(20), at(20, 0, 0, 1))  # 277.8 µ$: 278
    gone = await run(999, alpha, 3_600_000, at(31, 11), None)  # its node was removed

    figures = await overview(NOW, store=None)

    today, week, month = figures.windows
    assert (today.name, today.start, today.end) == ("today", at(31), NOW)
    assert (week.name, week.start, month.name, month.start) == ("7d", at(25), "30d", at(2))
    # Revenue and GPU cost: 2 + 1 + 1 h of alpha's node, its removed node's hour until
    # now, and beta's node from 10:30 until now.
    assert (today.revenue, today.gpu_cost, today.margin) == (1_250, 16_200_000, -16_198_750)
    assert today.models == (ModelFigures("alpha", 1_250, 14_400_000, 2, 110, 55),
                            ModelFigures("beta", 0, 1_800_000, 1, 20, 0))
    assert (today.requests, today.prompt_tokens, today.completion_tokens) == (3, 130, 55)
    assert (today.client_errors, today.server_errors) == (1, 1)
    assert (today.topups, today.refunds, today.adjustments) == (5_000_000, 0, -100_000)

    assert (week.revenue, week.gpu_cost, week.requests) == (7_280, 19_800_000, 6)
    assert week.models == (ModelFigures("beta", 4_030, 1_800_000, 3, 360, 303),
                           ModelFigures("alpha", 3_250, 18_000_000, 3, 310, 155))
    assert (week.prompt_tokens, week.completion_tokens) == (670, 458)
    assert (week.client_errors, week.server_errors) == (1, 2)
    assert (week.topups, week.refunds, week.adjustments) == (7_000_000, 500_000, -100_000)

    assert (month.revenue, month.gpu_cost, month.margin) == (31_280, 23_400_278, -23_368_998)
    assert month.models == (ModelFigures("alpha", 27_250, 21_600_000, 5, 2_710, 1_355),
                            ModelFigures("beta", 4_030, 1_800_278, 3, 360, 303))
    assert (month.requests, month.prompt_tokens, month.completion_tokens) == (8, 3_070, 1_658)
    assert (month.client_errors, month.server_errors) == (1, 2)
    assert (month.topups, month.refunds, month.adjustments) == (8_000_000, 500_000, -100_000)

    assert figures.liability == 10_500_000
    assert (figures.reserved, figures.open_reservations) == (None, None)  # Redis not asked
    busy = {2: DayFigures(at(2).date(), 16_000, 0, 3_600_000, 1),
            5: DayFigures(at(5).date(), 0, 1_000_000, 0, 0),
            10: DayFigures(at(10).date(), 8_000, 0, 0, 1),
            20: DayFigures(at(20).date(), 0, 0, 278, 0),
            26: DayFigures(at(26).date(), 4_030, 0, 0, 2),
            27: DayFigures(at(27).date(), 0, 2_000_000, 0, 0),
            28: DayFigures(at(28).date(), 2_000, 0, 0, 1),
            30: DayFigures(at(30).date(), 0, 0, 3_600_000, 0),
            31: DayFigures(at(31).date(), 1_250, 5_000_000, 16_200_000, 3)}
    assert figures.days == tuple(busy.get(day, DayFigures(at(day).date(), 0, 0, 0, 0))
                                 for day in range(2, 32))
    # The run of the removed node was closed at the overview's moment; beta's stays open.
    await gone.refresh_from_db()
    assert (gone.ended_at, gone.open_node_id) == (NOW, None)
    assert await NodeRun.filter(open_node_id__not_isnull=True).values_list(
        "node_id", flat=True) == [second.id]

    # What open calls hold in Redis: two reservations; a third settled between the reads.
    for request_id, amount in (("r1", 1_500), ("r2", 2_500), ("r3", None)):
        await store.client.zadd(store.open_reservations, {request_id: 1})
        if amount is not None:
            await store.client.hset(store.reservation(request_id), "amount", amount)
    held = await overview(NOW, store=store)
    assert (held.reserved, held.open_reservations) == (4_000, 2)
    assert held.windows == figures.windows  # the same figures the second time


async def test_runs_follow_the_nodes_saves(database: str) -> None:
    model = await LLM.create(name="m", served_name="m", input_price=1, output_price=1)
    # Added as running (`portal nodes add` of a static node): billed from then on.
    node = await Node.create(model=model, url="http://n", state=NodeState.RUNNING,
                             instance_type="g5.xlarge", hourly_cost=1_006_000)
    (opened,) = await NodeRun.all()
    assert (opened.node_id, opened.model_id, opened.instance_type, opened.spot,
            opened.hourly_cost, opened.started_at, opened.ended_at, opened.open_node_id) == (
        node.id, model.id, "g5.xlarge", False, 1_006_000, node.created_at, None, node.id)

    assert await update_node(node, None, state=NodeState.DRAINING)  # still billed: same run
    assert await update_node(node, None, healthy=False)  # nothing of a run
    assert await NodeRun.all().values_list("id", "ended_at") == [(opened.id, None)]

    assert await update_node(node, None, state=NodeState.STOPPING)
    stopped_at = node.state_changed_at
    assert await update_node(node, None, state=NodeState.STOPPED)
    assert await update_node(node, None, state=NodeState.PENDING)  # EC2 bills no pending
    assert await NodeRun.all().values_list("id", "ended_at", "open_node_id") == [
        (opened.id, stopped_at, None)]

    assert await update_node(node, None, state=NodeState.RUNNING)
    running_at = node.state_changed_at
    assert await update_node(node, None, hourly_cost=1_212_000, spot=True)  # a new price
    _stopped, second, third = await NodeRun.all().order_by("id")
    assert (second.started_at, second.hourly_cost, second.spot) == (running_at, 1_006_000,
                                                                    False)
    assert second.ended_at is not None and second.ended_at == third.started_at
    assert (third.hourly_cost, third.spot, third.ended_at, third.open_node_id) == (
        1_212_000, True, None, node.id)

    # Never two open runs of one node, however often or by whom it is tracked.
    await track_run(node, datetime.now(UTC))
    with pytest.raises(IntegrityError):
        await NodeRun.create(node_id=node.id, model_id=model.id, hourly_cost=1,
                             started_at=datetime.now(UTC), open_node_id=node.id)
    assert await NodeRun.filter(open_node_id=node.id).values_list("id", flat=True) == [third.id]


async def test_reconcile_closes_what_bulk_changes_left_open(database: str) -> None:
    model = await LLM.create(name="m", served_name="m", input_price=1, output_price=1)
    stamped = await Node.create(model=model, url="http://a", state=NodeState.RUNNING)
    unstamped = await Node.create(model=model, url="http://b", state=NodeState.RUNNING)
    removed = await Node.create(model=model, url="http://c", state=NodeState.RUNNING)
    missing = await Node.create(model=model, url="http://d", state=NodeState.STOPPED)
    started = datetime(2026, 3, 31, 8, tzinfo=UTC)
    await NodeRun.all().update(started_at=started)
    left = datetime(2026, 3, 31, 9, tzinfo=UTC)
    # Bulk updates and deletes send no signal: the runs are still open.
    await Node.filter(id=stamped.id).update(state=NodeState.STOPPED, state_changed_at=left)
    await Node.filter(id=unstamped.id).update(state=NodeState.TERMINATED)
    await Node.filter(id=removed.id).delete()
    await Node.filter(id=missing.id).update(state=NodeState.RUNNING)
    assert await NodeRun.filter(open_node_id__not_isnull=True).count() == 3

    assert await reconcile_runs(NOW) == 3
    runs = {r.node_id: (r.started_at, r.ended_at, r.open_node_id)
            for r in await NodeRun.all()}
    assert runs == {stamped.id: (started, left, None),  # when its state was stamped
                    unstamped.id: (started, NOW, None),  # not stamped: now
                    removed.id: (started, NOW, None),
                    missing.id: (NOW, None, missing.id)}  # billed, with no run: from now
    assert await reconcile_runs(NOW) == 0


@pytest.mark.portal_settings(admin_token=TOKEN)
async def test_route_needs_the_admin_token_and_shows_usd(
        inprocess_portal: InProcessPortal,
        node_doubles: Callable[..., Awaitable[NodeDouble]]) -> None:
    portal = inprocess_portal
    await portal.add_model("m1", served_name="sim-m1", input_price="0.50", output_price="1.50")
    node_id = await portal.add_node("m1", await node_doubles("sim-m1", reply_tokens=4))
    key_id, secret = await portal.create_key("10")  # an opening credit: a top-up row
    assert (await portal.chat(secret, "m1", max_tokens=4)).status_code == 200
    await portal.wait_settled()
    (row,) = await portal.usage(key_id)
    cost = token_cost(row["prompt_tokens"], row["completion_tokens"], parse_usd("0.50"),
                      parse_usd("1.50"))
    assert row["cost"] == cost > 0
    # One closed hour of the node at 2.50 USD an hour, ended a minute ago.
    ended = datetime.now(UTC) - timedelta(minutes=1)
    await NodeRun.create(node_id=node_id, model_id=(await LLM.get(name="m1")).id,
                         hourly_cost=2_500_000, started_at=ended - timedelta(hours=1),
                         ended_at=ended)

    for headers in ({}, {"authorization": "Bearer wrong"}):
        refused = await portal.client.get("/admin/overview", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_admin_token"
    shown = await portal.client.get("/admin/overview",
                                    headers={"authorization": f"Bearer {TOKEN}"})
    assert shown.status_code == 200, shown.text
    body: dict[str, Any] = shown.json()
    assert (body["object"], list(body["windows"]), len(body["days"])) == (
        "overview", ["today", "7d", "30d"], 30)
    month = body["windows"]["30d"]
    # Its GPU cost is that hour's: the node was added running at an hourly cost of 0.
    assert {k: month[k] for k in ("revenue_micros", "topups", "topups_micros", "gpu_cost",
                                  "gpu_cost_micros", "margin_micros", "requests",
                                  "prompt_tokens", "completion_tokens", "errors")} == {
        "revenue_micros": cost, "topups": "10.000000", "topups_micros": 10_000_000,
        "gpu_cost": "2.500000", "gpu_cost_micros": 2_500_000,
        "margin_micros": cost - 2_500_000, "requests": 1,
        "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
        "errors": {"client": 0, "server": 0}}
    assert month["models"] == [{
        "model": "m1", "revenue": f"{cost / 1e6:.6f}", "revenue_micros": cost,
        "gpu_cost": "2.500000", "gpu_cost_micros": 2_500_000,
        "margin": f"{(cost - 2_500_000) / 1e6:.6f}", "margin_micros": cost - 2_500_000,
        "requests": 1, "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"]}]
    assert (body["liability"], body["liability_micros"]) == (f"{(10_000_000 - cost) / 1e6:.6f}",
                                                             10_000_000 - cost)
    assert (body["reserved_micros"], body["open_reservations"]) == (0, 0)


def test_cli_records_a_run_and_prints_the_overview(tmp_path: Path, redis_url: str) -> None:
    from dramatiq_actors.fleet import hourly_price

    portal = PortalServer(tmp_path, redis_url)
    portal.cli("migrate")
    portal.add_model("m")
    node_id = portal.cli_json("nodes", "add", "--model", "m", "--url", "http://10.0.0.1:8000",
                              "--instance-type", "g5.xlarge")["id"]
    database = f"sqlite://{tmp_path / 'data' / 'portal.sqlite3'}"
    price = hourly_price("g5.xlarge")
    assert price > 0
    # `portal nodes add` of a static node: billed from when it was added, at its price.
    assert sql_query(database, "SELECT r.node_id, r.hourly_cost, r.started_at = n.created_at, "
                     "r.ended_at, r.open_node_id FROM node_runs r JOIN nodes n ON "
                     "n.id = r.node_id") == [(node_id, price, 1, None, node_id)]
    portal.create_key("10")
    portal.cli("nodes", "remove", str(node_id))  # a bulk delete: its run is still open

    shown = portal.cli_json("overview")
    ((started, ended),) = sql_query(database, "SELECT started_at, ended_at FROM node_runs")
    assert ended is not None  # closed by the overview, which counted it until then
    ran = datetime.fromisoformat(ended) - datetime.fromisoformat(started)
    cost = (ran // timedelta(microseconds=1) * price + 1_800_000_000) // 3_600_000_000
    month = shown["windows"]["30d"]
    assert (month["gpu_cost_micros"], month["topups_micros"], month["revenue_micros"],
            shown["liability_micros"], shown["reserved_micros"]) == (
        cost, 10_000_000, 0, 10_000_000, 0)
    assert [m["model"] for m in month["models"]] == ["m"]

    text = portal.cli("overview").stdout
    assert "30d" in text and "customers hold 10.000000; reserved now: 0.000000 in 0 open " \
                              "calls" in text
