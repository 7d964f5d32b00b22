"""The series the portal and vLLM export, and the series a PromQL expression reads.

The portal's names come from ``edge.metrics`` itself: every metric it declares (by its
type, the sample names prometheus_client renders: a counter's ``_total``, a histogram's
``_bucket``, ``_count`` and ``_sum``) and every gauge of a scrape's readings
(:class:`edge.metrics.ReadingsCollector`). Not this test process's own ``process_*``
series: ``portal serve`` (multiprocess mode) does not export them. vLLM's come from a
running simnode's ``/metrics`` (vLLM's own names), after one request so that its
per-reason counters exist.
"""

from __future__ import annotations

import re

import httpx
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from edge import metrics
from simnode.testing import start_simnode

__all__ = ["PROMETHEUS_SERIES", "portal_series", "promql_series", "vllm_series"]

#: What Prometheus itself adds to every scrape, and may be queried like the rest.
PROMETHEUS_SERIES = frozenset({"up"})

#: The sample names prometheus_client renders for a metric of each type.
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
             "histogram": ("_bucket", "_count", "_sum", "_created"),
             "summary": ("", "_count", "_sum", "_created")}

#: Words of PromQL that are not series: operators, modifiers, aggregations' clauses.
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right",
                       "and", "or", "unless", "bool", "offset", "atop", "inf", "nan"})


def _names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text)
            for sample in family.samples}


def portal_series() -> set[str]:
    """Every sample name ``/metrics`` of a portal can show."""
    names: set[str] = set()
    for attribute in metrics.__all__:
        metric = getattr(metrics, attribute)
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    every_reading = metrics.Readings(
        models=["m"], nodes=[metrics.NodeReading(node="1", model="m", state="running",
                                                 healthy=True, queue_depth=0)],
        redis_up=True, database_up=True, hot_store_ready=True, ledger_backlog=0,
        ledger_backlog_age=0.0, reservations_open=0, reservations_overdue=0.0,
        jobs={"queued": 0}, jobs_oldest_queued_age=0.0, balances=0)
    for family in metrics.ReadingsCollector(every_reading).collect():
        names.update(sample.name for sample in family.samples)
    return names


def vllm_series() -> set[str]:
    """The sample names a (simulated) vLLM node's ``/metrics`` shows."""
    with start_simnode("--model", "series-check") as node:
        httpx.post(node.url + "/v1/completions", timeout=10,
                   json={"model": "series-check", "prompt": "hi", "max_tokens": 2})
        text = httpx.get(node.url + "/metrics", timeout=10).text
    return _names(text)


def promql_series(expression: str) -> set[str]:
    """The series names an expression reads (a small lexer, enough for our rules).

    Strings, label matchers ``{...}``, ranges and subqueries ``[...]``, the label lists
    of ``by``/``without``/``on``/``ignoring``/``group_*`` and numbers are dropped; what is
    left and is not a function call or a keyword is a series name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expression)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ",
                  text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana's variables ($__rate_interval, ...)
    found = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        found.add(name)
    return found
