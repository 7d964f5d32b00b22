"""The console's overview page: the same figures as ``GET /admin/overview``, from real
calls, a real top-up and a node billed by the hour, and its chart."""

from __future__ import annotations

import re

import pytest

from edge.billing.credits import credit
from edge.billing.money import format_usd, parse_usd
from edge.db.models import LedgerKind, Node
from tests.console.test_console_auth import TOKEN, sign_in
from tests.support.inprocess import InProcessPortal, NodeDouble

ADMIN = {"authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.portal_settings(admin_token=TOKEN)


def cell(page: str, figure: str, window: str) -> str:
    row = re.search(rf'<tr data-figure="{figure}">(.*?)</tr>', page, re.S)
    assert row is not None, figure
    value = re.search(rf'data-window="{window}">([^<]*)<', row.group(1))
    assert value is not None, (figure, window)
    return value.group(1)


async def test_the_overview_shows_what_was_earned_spent_and_held(
        inprocess_portal: InProcessPortal, node_doubles) -> None:
    portal = inprocess_portal
    node: NodeDouble = await node_doubles("sim-m1", reply_tokens=5)
    await portal.add_model("m1", served_name="sim-m1")
    node_id = await portal.add_node("m1", node)
    row = await Node.get(id=node_id)
    row.hourly_cost = 3_600_000_000  # $3600 an hour: a micro-dollar a millisecond, visible
    await row.save()
    account, key = await portal.create_key("5")
    for _ in range(3):
        answer = await portal.chat(key, "m1")
        assert answer.status_code == 200, answer.text
    await portal.drain_ledger()
    await credit(account, 2_000_000, kind=LedgerKind.TOPUP, reference="wire:overview",
                 note="a wire", store=portal.ctx.store)

    await sign_in(portal)
    page = (await portal.client.get("/admin/console")).text
    figures = (await portal.client.get("/admin/overview", headers=ADMIN)).json()
    today = figures["windows"]["today"]
    assert today["requests"] == 3 and today["revenue_micros"] > 0
    assert today["topups_micros"] == 5_000_000 + 2_000_000  # opening credit and the wire
    for figure, field in (("revenue", "revenue"), ("topups", "topups")):
        for window in ("today", "7d", "30d"):
            shown = cell(page, figure, window)
            assert shown == "$" + format_usd(figures["windows"][window][f"{field}_micros"])
    assert cell(page, "requests", "30d") == "3"
    # The node is billed since it was added, up to each reading: the page read first.
    shown_cost = parse_usd(cell(page, "gpu_cost", "today").removeprefix("$"))
    assert 0 < shown_cost <= today["gpu_cost_micros"]
    assert f'<tr data-model="m1"><td>m1</td><td class="num">${today["revenue"]}' in page
    liability = re.search(r'id="liability">.*?\$([0-9.,]+)<', page, re.S)
    assert liability is not None and liability.group(1) == figures["liability"]
    chart = re.search(r'id="overview-chart".*?data-total-cost-micros="(\d+)"', page, re.S)
    assert chart is not None and int(chart.group(1)) == figures["windows"]["30d"][
        "revenue_micros"]
    assert "<script" not in page.split("</head>")[1]  # no inline script: the CSP allows none
