"""The console's models page: every model of the catalogue, disabled ones too, with its
served name, kind, prices (USD per 1M tokens), context, its nodes by state and its
scaling policy, as ``GET /admin/models`` shows them.

The actions are the admin API's: adding a model (``POST /admin/models``), changing its
catalogue fields (``PATCH /admin/models/<name>``) and its scaling policy
(``PATCH /admin/models/<name>/policy``); every worker's ``/v1/models`` shows a change
within a second.
"""

from __future__ import annotations

from sanic import HTTPResponse, Request

from edge.api.admin_catalog import model_view
from edge.console.common import bp, render
from edge.db.models import LLM, ModelKind
from edge.fleet.scaling import LOAD_METRICS, POLICY_FIELDS

__all__ = ["models_page"]

#: The labels of the policy's numeric settings (one not here is shown by its name).
POLICY_LABELS = {
    "min_nodes": "Min nodes", "max_nodes": "Max nodes", "target_load": "Target load per node",
    "scale_out_after": "Scale out after (s)", "scale_in_after": "Scale in after (s)",
    "node_slots": "Slots per node (empty: learnt)", "on_demand_floor": "On-demand floor",
    "idle_ttl": "Idle TTL (s; empty: default)",
}


@bp.get("/models")
async def models_page(request: Request) -> HTTPResponse:
    models = [model_view(request, llm) for llm in await LLM.all().order_by("name")]
    return await render(request, "console/models.html", section="models", models=models,
                        kinds=[str(kind) for kind in ModelKind], load_metrics=LOAD_METRICS,
                        policy_fields={name: POLICY_LABELS.get(name, name)
                                       for name in POLICY_FIELDS},
                        whole={name for name, (kind, _, _) in POLICY_FIELDS.items()
                               if kind is int})
