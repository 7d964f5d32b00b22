"""monitoring/grafana/portal.json: a Grafana dashboard whose every query reads only series
the portal (edge/metrics.py) or vLLM (simnode's /metrics) exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.monitoring.conftest import DASHBOARD
from tests.monitoring.series import promql_series


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every query: panels' targets and query variables."""
    found = [(f"panel {panel['id']} {panel['title']!r}", target["expr"])
             for panel in panels(dashboard()["panels"]) for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
            found.append((f"variable {variable['name']}", inner))
    return found


def test_dashboard_is_a_grafana_dashboard() -> None:
    data = dashboard()
    assert data["uid"] and data["title"] and data["schemaVersion"] >= 36
    ids = [panel["id"] for panel in panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(data["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_query_reads_exported_series(exported_series: frozenset[str]) -> None:
    seen = set()
    for where, expr in expressions():
        names = promql_series(expr)
        assert names, f"{where}: no series in {expr!r}"
        unknown = names - exported_series
        assert not unknown, f"{where} reads {unknown}, which nothing exports: {expr}"
        seen |= names
    # The dashboard shows the portal's gauges of a scrape and vLLM's queue.
    assert {"portal_nodes", "portal_ledger_backlog_age_seconds", "portal_jobs",
            "vllm:num_requests_waiting", "portal_webhooks_total"} <= seen


def test_the_series_check_catches_a_name_nothing_exports(
        exported_series: frozenset[str]) -> None:
    assert promql_series('sum(rate(portal_requests_totl{model=~"$model"}[5m]))') \
        - exported_series == {"portal_requests_totl"}
    assert promql_series("vllm:gpu_cache_usage_perc > 0.9") - exported_series \
        == {"vllm:gpu_cache_usage_perc"}
