"""``portal overview``: revenue, GPU cost, margin and usage for today, 7 and 30 UTC days, and
the credit customers hold, as the console's overview shows them (:mod:`edge.reports`)."""

from __future__ import annotations

import argparse
import json

from edge.api.admin_overview import overview_view
from edge.billing.money import format_usd
from edge.cli.runtime import CommandContext, print_table, run_command
from edge.reports.overview import overview

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "overview", help="revenue, GPU cost, margin and usage: today, 7 and 30 days")
    parser.add_argument("--json", action="store_true",
                        help="as GET /admin/overview answers, the chart's days included")
    parser.set_defaults(func=lambda a: run_command(lambda c: show(c, a)))


async def show(ctx: CommandContext, args: argparse.Namespace) -> int:
    figures = await overview(store=ctx.store)
    if args.json:
        print(json.dumps(overview_view(figures), indent=2))
        return 0
    print_table([{
        "window": w.name, "revenue": format_usd(w.revenue), "gpu_cost": format_usd(w.gpu_cost),
        "margin": format_usd(w.margin), "topups": format_usd(w.topups),
        "refunds": format_usd(w.refunds), "requests": w.requests,
        "tokens": w.prompt_tokens + w.completion_tokens,
        "errors_4xx": w.client_errors, "errors_5xx": w.server_errors,
    } for w in figures.windows], ["window", "revenue", "gpu_cost", "margin", "topups",
                                  "refunds", "requests", "tokens", "errors_4xx", "errors_5xx"])
    print()
    print_table([{"model (30 days)": m.model, "revenue": format_usd(m.revenue),
                  "gpu_cost": format_usd(m.gpu_cost), "margin": format_usd(m.margin),
                  "requests": m.requests}
                 for m in figures.window("30d").models],
                ["model (30 days)", "revenue", "gpu_cost", "margin", "requests"])
    reserved = "not read (no Redis)" if figures.reserved is None else \
        f"{format_usd(figures.reserved)} in {figures.open_reservations} open calls"
    print(f"\ncustomers hold {format_usd(figures.liability)}; reserved now: {reserved}")
    return 0
