"""The typed ``app.ctx`` of a simnode: its settings, faults, scheduler and prefix cache."""

from __future__ import annotations

import json
from types import SimpleNamespace

from sanic import Request, Sanic
from sanic.config import Config

from simnode.config import Faults, SimConfig
from simnode.prefix_cache import PrefixCache
from simnode.render import models_body
from simnode.scheduler import Scheduler

__all__ = ["SimContext", "SimRequest"]


class SimContext:
    """Everything the handlers share within one worker process."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = Faults(
            fail_after=config.fail_after,
            fail_status=config.fail_status,
            fail_count=config.fail_count,
            hang=config.hang,
            tokens_per_second=config.tokens_per_second,
            ttft=config.ttft,
        )
        self.scheduler = Scheduler(config.max_num_seqs)
        self.prefix_cache = PrefixCache(config.prefix_cache_blocks, config.block_size)
        #: Whether answers and streams carry usage (``--usage vllm``).
        self.reports_usage = config.usage == "vllm"
        #: The served model name as a JSON string, spliced into every answer.
        self.model_json = json.dumps(config.model)
        #: The ``GET /v1/models`` body, built once.
        self.models_body = models_body(config.model, config.max_model_len)


#: A request to a simnode: its ``request.app.ctx`` is the :class:`SimContext`.
SimRequest = Request[Sanic[Config, SimContext], SimpleNamespace]
