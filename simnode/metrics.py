"""Prometheus text for ``GET /metrics``, with vLLM's metric names, help texts and types."""

from __future__ import annotations

from simnode.prefix_cache import PrefixCache
from simnode.scheduler import Scheduler

__all__ = ["CONTENT_TYPE", "render_metrics"]

#: Content type of the Prometheus text exposition format, as prometheus_client sends it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value))


def render_metrics(scheduler: Scheduler, model: str, prefix_cache: PrefixCache) -> str:
    """Return the exposition text for the scheduler's and the prefix cache's state."""
    labels = f'model_name="{_label(model)}"'
    created = _number(scheduler.created)
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {_number(scheduler.running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {_number(scheduler.waiting)}",
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{labels}}} {_number(scheduler.prompt_tokens_total)}",
        f"vllm:prompt_tokens_created{{{labels}}} {created}",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{labels}}} {_number(scheduler.generation_tokens_total)}",
        f"vllm:generation_tokens_created{{{labels}}} {created}",
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
    ]
    for reason, count in sorted(scheduler.success_total.items()):
        reason_labels = f'finished_reason="{_label(reason)}",{labels}'
        lines.append(f"vllm:request_success_total{{{reason_labels}}} {_number(count)}")
        lines.append(f"vllm:request_success_created{{{reason_labels}}} {created}")
    lines += [
        "# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of "
        "queried tokens.",
        "# TYPE vllm:prefix_cache_queries_total counter",
        f"vllm:prefix_cache_queries_total{{{labels}}} {_number(prefix_cache.queries_total)}",
        f"vllm:prefix_cache_queries_created{{{labels}}} {created}",
        "# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached "
        "tokens.",
        "# TYPE vllm:prefix_cache_hits_total counter",
        f"vllm:prefix_cache_hits_total{{{labels}}} {_number(prefix_cache.hits_total)}",
        f"vllm:prefix_cache_hits_created{{{labels}}} {created}",
    ]
    return "\n".join(lines) + "\n"
