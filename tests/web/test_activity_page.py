"""The activity page in a real browser (Chromium): the SVG chart, the totals, the rows and
the CSV, each compared with what ``/v1/usage`` says for the same days.

Screenshots of the page are saved for a person to look at, in the suite's artefacts
directory (``PORTAL_TEST_ARTIFACTS``, by default ``build/test-artifacts``).
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.support.deployment import Deployment
from tests.web.test_key_management import (  # noqa: F401  (the two-model portal fixture)
    ARTIFACTS,
    ask,
    bearer,
    sign_in,
    two_models,
)


def usage(deployment: Deployment, secret: str, path: str = "/v1/usage",
          **params: Any) -> httpx.Response:
    answer = httpx.get(deployment.url + path, headers=bearer(secret), params=params,
                       timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def wait_for_rows(deployment: Deployment, secret: str, count: int, **params: Any) -> None:
    """Wait until the ledger writer has put ``count`` requests in SQL (the API reads SQL)."""
    deadline = time.monotonic() + 15
    while usage(deployment, secret, group_by="model", **params).json()["totals"][
            "requests"] < count:
        assert time.monotonic() < deadline, "usage did not reach SQL"
        time.sleep(0.1)


def chart_series(page: Any) -> list[list[Any]]:
    """The chart's series: ``[model, {cost, requests, bars, drawn}]``, as the SVG says."""
    return page.eval_on_selector_all("#spend-chart svg.plot g.series", """gs => gs.map(g => [
        g.dataset.model, {cost: Number(g.dataset.costMicros), requests: Number(g.dataset.requests),
                          bars: g.querySelectorAll('rect').length,
                          drawn: Array.from(g.querySelectorAll('rect'))
                                      .reduce((sum, r) => sum + r.getBBox().height, 0)}])""")


def test_activity_chart_totals_rows_and_csv_match_the_api(chromium, two_models: Deployment,  # noqa: F811
                                                         tmp_path: Path) -> None:
    from playwright.sync_api import expect

    manager_id, manager = two_models.key("5")
    (account_id,), = two_models.sql("SELECT account_id FROM api_keys WHERE id=?", manager_id)
    second = two_models.portal.cli_json("keys", "create", "--name", "<b>bold</b> & co",
                                        "--account", str(account_id))
    # 52 calls with the manage key (alpha, beta), 3 with the API key: rows for two pages.
    for n in range(52):
        assert ask(two_models, manager, "beta" if n % 4 == 0 else "alpha").status_code == 200
    for model in ("beta", "alpha", "beta"):
        assert ask(two_models, second["key"], model).status_code == 200
    wait_for_rows(two_models, manager, 55)

    page = sign_in(chromium, two_models, manager)
    page.goto(two_models.url + "/account/activity")
    start = page.get_attribute("#filters", "data-start")
    end = page.get_attribute("#filters", "data-end")
    by_model = usage(two_models, manager, group_by="model", start=start, end=end).json()
    api = {g["model"]: g for g in by_model["data"]}
    assert set(api) == {"alpha", "beta"} and by_model["totals"]["requests"] == 55

    # The chart: an SVG, one series per model, its sums those of the API.
    svg = page.locator("#spend-chart svg.plot")
    expect(svg).to_be_visible()
    assert int(svg.get_attribute("data-days")) == 30
    series = chart_series(page)
    assert sorted(model for model, _ in series) == ["alpha", "beta"]
    for model, drawn in series:
        assert drawn["cost"] == api[model]["cost_micros"], model
        assert drawn["requests"] == api[model]["requests"], model
        assert drawn["bars"] >= 1 and drawn["drawn"] > 0, model
    assert int(svg.get_attribute("data-total-cost-micros")) == \
        by_model["totals"]["cost_micros"]
    colours = page.eval_on_selector_all("#spend-chart svg.plot g.series",
                                        "gs => gs.map(g => g.getAttribute('fill'))")
    assert len(set(colours)) == 2  # told apart
    expect(page.locator("#chart-legend li[data-model]")).to_have_count(2)
    expect(page.locator("#chart-legend li[data-model=beta]")).to_contain_text(
        f"${api['beta']['cost']}")
    assert page.locator("#spend-chart svg.plot text.tick").count() >= 4  # labelled axes

    # The totals, as shown and as the page's figures, equal the API's.
    totals = page.locator("#totals")
    assert int(totals.get_attribute("data-requests")) == by_model["totals"]["requests"]
    assert int(totals.get_attribute("data-cost-micros")) == by_model["totals"]["cost_micros"]
    tokens = by_model["totals"]["prompt_tokens"] + by_model["totals"]["completion_tokens"]
    expect(totals).to_contain_text(f"{tokens:,}")
    expect(totals).to_contain_text(f"${by_model['totals']['cost']}")
    expect(page.locator("#by-model tfoot")).to_contain_text(f"${by_model['totals']['cost']}")

    # The rows: the newest 50, then "older →" to the rest; together, the API's rows.
    listed = usage(two_models, manager, start=start, end=end, limit=1000).json()["data"]
    shown = page.eval_on_selector_all("#usage-rows tbody tr",
                                      "rows => rows.map(r => r.dataset.requestId)")
    assert len(shown) == 50
    page.click("#older")
    expect(page.locator("#newest")).to_be_visible()
    shown += page.eval_on_selector_all("#usage-rows tbody tr",
                                       "rows => rows.map(r => r.dataset.requestId)")
    assert shown == [row["request_id"] for row in listed]
    assert page.locator("#older").count() == 0

    # Filtered by the API key and by a model: the filters offer the account's keys only,
    # name them as text, and the figures follow.
    page.goto(two_models.url + "/account/activity")
    options = page.eval_on_selector_all("#filters select[name=key] option",
                                        "os => os.map(o => [o.value, o.textContent])")
    assert [value for value, _ in options] == ["", str(manager_id), str(second["id"])]
    assert "<b>bold</b> & co" in options[2][1]
    assert page.locator("#filters b").count() == 0
    models = page.eval_on_selector_all("#filters select[name=model] option",
                                       "os => os.map(o => o.value)")
    assert models == ["", "alpha", "beta"]
    page.select_option("#filters select[name=key]", str(second["id"]))
    page.select_option("#filters select[name=model]", "beta")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/account/activity?*")
    narrow = usage(two_models, manager, group_by="model", start=start, end=end,
                   key_id=second["id"], model="beta").json()
    assert narrow["totals"]["requests"] == 2
    assert [model for model, _ in chart_series(page)] == ["beta"]
    assert int(page.get_attribute("#totals", "data-cost-micros")) == \
        narrow["totals"]["cost_micros"]
    assert page.locator("#usage-rows tbody tr").count() == 2
    expect(page.locator("#usage-rows tbody tr").first).to_contain_text("<b>bold</b> & co")

    # The CSV download (session, same filters) is the API's export, line for line.
    with page.expect_download() as download:
        page.click("#csv-link")
    got = Path(download.value.path()).read_text()
    export = usage(two_models, manager, "/v1/usage/export", start=start, end=end,
                   key_id=second["id"], model="beta").text
    assert list(csv.reader(io.StringIO(got))) == list(csv.reader(io.StringIO(export)))
    assert len(list(csv.reader(io.StringIO(got)))) == 3  # the header and two rows
    everything = page.context.request.get(two_models.url + "/account/activity.csv")
    assert everything.status == 200
    assert everything.headers["content-type"].startswith("text/csv")
    whole = usage(two_models, manager, "/v1/usage/export", start=start, end=end).text
    assert list(csv.reader(io.StringIO(everything.text()))) == \
        list(csv.reader(io.StringIO(whole)))

    # A signed-out visitor gets neither.
    anonymous = httpx.get(two_models.url + "/account/activity.csv", follow_redirects=False)
    assert anonymous.status_code == 302 and anonymous.headers["location"] == "/login"

    # For a person to look at: the whole account's page.
    page.goto(two_models.url + "/account/activity")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "activity-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == []
    page.context.close()


def test_a_month_of_history_is_drawn_day_by_day(chromium, two_models: Deployment) -> None:  # noqa: F811
    """Usage the ledger writer recorded over the past weeks (written here straight into
    SQL, back-dated, for an account of its own): a bar a day, only the page's days."""
    from playwright.sync_api import expect

    key_id, secret = two_models.key("5")
    (account_id,), = two_models.sql("SELECT account_id FROM api_keys WHERE id=?", key_id)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    inside: dict[str, int] = {"alpha": 0, "beta": 0}
    pairs = 0
    for back in range(31):  # 30 days on the page, and one before them
        day = today - timedelta(days=back)
        for model, cost in (("alpha", 40_000 + (back * 7919) % 90_000),
                            ("beta", (back * 3571) % 120_000 if back % 3 else 0)):
            if not cost:
                continue
            two_models.sql(
                "INSERT INTO usage_log (request_id, key_id, account_id, model, node_id, "
                "endpoint, prompt_tokens, completion_tokens, cost, latency_ms, status, "
                "streamed, cancelled, created_at, counted_by) "
                "VALUES (?, ?, ?, ?, NULL, 'chat', 100, 50, ?, 120, 200, 0, 0, ?, 'node')",
                f"req_history_{account_id}_{model}_{back}", key_id, account_id, model, cost,
                day.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"))
            if back < 30:
                inside[model] += cost
                pairs += 1

    page = sign_in(chromium, two_models, secret)
    page.goto(two_models.url + "/account/activity")
    start = page.get_attribute("#filters", "data-start")
    end = page.get_attribute("#filters", "data-end")
    api = usage(two_models, secret, group_by="model", start=start, end=end).json()
    assert {g["model"]: g["cost_micros"] for g in api["data"]} == inside  # the 31st is out
    series = dict(chart_series(page))
    assert {model: drawn["cost"] for model, drawn in series.items()} == inside
    assert sum(drawn["bars"] for drawn in series.values()) == pairs
    assert int(page.get_attribute("#totals", "data-cost-micros")) == sum(inside.values())
    expect(page.locator("#spend-chart")).to_contain_text(f"{(today - timedelta(days=29)):%b %d}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1100, "height": 900})
    page.locator("#spend-chart").screenshot(path=str(ARTIFACTS / "activity-chart-month.png"))
    page.screenshot(path=str(ARTIFACTS / "activity-page-month.png"), full_page=True)
    assert page.errors == []
    page.context.close()
