"""``portal models …`` and ``portal nodes …``: what is offered, and where it runs.

``add`` is idempotent: it creates, updates or leaves the row alone and says
which (``created``/``updated``/``unchanged``), so that provisioning playbooks can
run it on every converge and report changes truthfully.
"""

from __future__ import annotations

import argparse
import json

from edge.cli.runtime import CommandContext, fail, print_table, run_command
from edge.db.models import LLM, Node, NodeState
from edge.money import format_usd, parse_usd

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="models offered to users").add_subparsers(
        dest="models_command", metavar="ACTION", required=True)
    add = models.add_parser("add", help="add or update a model")
    add.add_argument("name", help="public name clients ask for")
    add.add_argument("--served-name", help="name vLLM serves it under (default: NAME)")
    add.add_argument("--input-price", required=True, type=_usd,
                     help="USD per 1M prompt tokens")
    add.add_argument("--output-price", required=True, type=_usd,
                     help="USD per 1M completion tokens")
    add.add_argument("--context", type=int, default=8192, help="context length in tokens")
    add.add_argument("--idle-ttl", type=int, help="seconds idle before its nodes stop (0: never)")
    add.add_argument("--min-warm", type=int, help="nodes kept running however idle")
    add.add_argument("--disabled", action="store_true", help="add it hidden and refused")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=lambda a: run_command(lambda c: add_model(c, a)))
    listing = models.add_parser("list", help="list models")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_models(c, a)))

    nodes = commands.add_parser("nodes", help="GPU nodes").add_subparsers(
        dest="nodes_command", metavar="ACTION", required=True)
    add = nodes.add_parser("add", help="register a node (a static URL or an EC2 instance)")
    add.add_argument("--model", required=True, help="public name of the model it serves")
    add.add_argument("--url", required=True, help="base URL of its vLLM server")
    add.add_argument("--instance-id", help="EC2 instance id, if it is one")
    add.add_argument("--region", default="")
    add.add_argument("--instance-type", default="")
    add.add_argument("--state", choices=[s.value for s in NodeState], default=None,
                     help="initial state (default: running for a static URL, stopped for EC2)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=lambda a: run_command(lambda c: add_node(c, a)))
    listing = nodes.add_parser("list", help="list nodes")
    listing.add_argument("--model", help="only this model's")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=lambda a: run_command(lambda c: list_nodes(c, a)))
    remove = nodes.add_parser("remove", help="forget a node (does not touch the instance)")
    remove.add_argument("node_id", type=int)
    remove.set_defaults(func=lambda a: run_command(lambda c: remove_node(c, a)))


def _usd(text: str) -> int:
    try:
        micros = parse_usd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if micros < 0:
        raise argparse.ArgumentTypeError("a price cannot be negative")
    return micros


async def add_model(ctx: CommandContext, args: argparse.Namespace) -> int:
    wanted = {
        "served_name": args.served_name or args.name,
        "input_price": args.input_price,
        "output_price": args.output_price,
        "context_length": args.context,
        "enabled": not args.disabled,
    }
    if args.idle_ttl is not None:
        wanted["idle_ttl"] = args.idle_ttl
    if args.min_warm is not None:
        wanted["min_warm"] = args.min_warm
    row = await LLM.get_or_none(name=args.name)
    if row is None:
        row = await LLM.create(name=args.name, **wanted)
        outcome = "created"
    elif any(getattr(row, field) != value for field, value in wanted.items()):
        await row.update_from_dict(wanted).save()
        outcome = "updated"
    else:
        outcome = "unchanged"
    if outcome != "unchanged":
        await ctx.publish("models")
    _report(args, outcome, f"model {row.name}", {"id": row.id, "name": row.name})
    return 0


async def list_models(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [{
        "id": m.id, "name": m.name, "served_name": m.served_name,
        "input_usd_per_1m": format_usd(m.input_price),
        "output_usd_per_1m": format_usd(m.output_price),
        "context": m.context_length, "enabled": m.enabled,
        "idle_ttl": m.idle_ttl, "min_warm": m.min_warm,
    } for m in await LLM.all().order_by("name")]
    print_table(rows, ["id", "name", "served_name", "input_usd_per_1m", "output_usd_per_1m",
                       "context", "enabled"], as_json=args.json)
    return 0


async def add_node(ctx: CommandContext, args: argparse.Namespace) -> int:
    model = await LLM.get_or_none(name=args.model)
    if model is None:
        raise fail(f"no model named {args.model!r}; add it with `portal models add`")
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise fail("--url must start with http:// or https://")
    if args.instance_id:
        row = await Node.get_or_none(instance_id=args.instance_id)
    else:
        row = await Node.get_or_none(url=url, instance_id=None)
    state = NodeState(args.state) if args.state else (
        NodeState.STOPPED if args.instance_id else NodeState.RUNNING)
    wanted = {"model_id": model.id, "url": url, "region": args.region,
              "instance_type": args.instance_type}
    if row is None:
        row = await Node.create(instance_id=args.instance_id or None, state=state, **wanted)
        outcome = "created"
    elif any(getattr(row, f) != v for f, v in wanted.items() if v or f == "url") or (
            args.state and row.state != state):
        row.update_from_dict({f: v for f, v in wanted.items() if v or f == "url"})
        if args.state:
            row.state = state
        await row.save()
        outcome = "updated"
    else:
        outcome = "unchanged"
    if outcome != "unchanged":
        await ctx.publish("nodes")
    _report(args, outcome, f"node {row.id} ({url})", {"id": row.id, "url": url})
    return 0


async def list_nodes(ctx: CommandContext, args: argparse.Namespace) -> int:
    query = Node.all().prefetch_related("model").order_by("id")
    if args.model:
        query = query.filter(model__name=args.model)
    rows = [{
        "id": n.id, "model": n.model.name, "url": n.url, "instance_id": n.instance_id or "",
        "state": str(n.state), "healthy": n.healthy, "region": n.region,
        "instance_type": n.instance_type,
        "last_used_at": n.last_used_at.isoformat() if n.last_used_at else "",
    } for n in await query]
    print_table(rows, ["id", "model", "url", "instance_id", "state", "healthy"],
                as_json=args.json)
    return 0


async def remove_node(ctx: CommandContext, args: argparse.Namespace) -> int:
    deleted = await Node.filter(id=args.node_id).delete()
    if not deleted:
        raise fail(f"no node {args.node_id}")
    await ctx.publish("nodes")
    print(f"node {args.node_id} removed")
    return 0


def _report(args: argparse.Namespace, outcome: str, what: str, data: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps({**data, "outcome": outcome}))
    else:
        print(f"{what}: {outcome}")
