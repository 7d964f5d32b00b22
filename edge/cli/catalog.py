"""``portal models …`` and ``portal nodes …``: what is offered, and where it runs.

``add`` is idempotent: it creates, updates or leaves the row alone and says
which (``created``/``updated``/``unchanged``), so that provisioning playbooks can
run it on every converge and report changes truthfully; ``set`` changes only the
fields it is given. Both go through :mod:`edge.fleet.catalogue`, as the admin API
does. Every change appends a row to the audit log (actor ``cli``).
"""

from __future__ import annotations

import argparse
import json

from edge import audit
from edge.admin import node_snapshot
from edge.billing.money import format_usd
from edge.cli.runtime import CommandContext, fail, print_table, run_command, usd_argument
from edge.db.models import LLM, ModelKind, Node, NodeState
from edge.fleet import catalogue
from edge.fleet.nodes import learn_contexts, probe_many
from edge.fleet.policies import change_policy
from edge.fleet.scaling import LOAD_METRICS, policy_view

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="models offered to users").add_subparsers(
        dest="models_command", metavar="ACTION", required=True)
    add = models.add_parser("add", help="add or update a model")
    add.add_argument("name", help="public name clients ask for")
    add.add_argument("--served-name", help="name vLLM serves it under (default: NAME)")
    add.add_argument("--input-price", required=True, type=usd_argument,
                     help="USD per 1M prompt tokens")
    add.add_argument("--output-price", required=True, type=usd_argument,
                     help="USD per 1M completion tokens")
    add.add_argument("--context", type=int, default=None,
                     help="context length in tokens (default 8192)")
    add.add_argument("--kind", choices=[k.value for k in ModelKind], default=None,
                     help="what its nodes serve: generate (chat, completions, responses, "
                          "messages; the default for a new model), embed (embeddings) or "
                          "rerank (score and rerank); embed and rerank are charged per input "
                          "token at the input price")
    add.add_argument("--idle-ttl", type=int, help="seconds idle before its nodes stop (0: never)")
    add.add_argument("--min-nodes", "--min-warm", dest="min_nodes", type=int,
                     help="nodes kept running however idle")
    add.add_argument("--disabled", action="store_true", help="add it hidden and refused")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=lambda a: run_command(lambda c: add_model(c, a)))
    change = models.add_parser(
        "set", help="change a model's prices, context, kind or state (only those given)")
    change.add_argument("name")
    change.add_argument("--served-name", help="name vLLM serves it under")
    change.add_argument("--input-price", type=usd_argument, help="USD per 1M prompt tokens")
    change.add_argument("--output-price", type=usd_argument,
                        help="USD per 1M completion tokens")
    change.add_argument("--context", type=int, help="context length in tokens")
    change.add_argument("--kind", choices=[k.value for k in ModelKind])
    state = change.add_mutually_exclusive_group()
    state.add_argument("--enabled", dest="enabled", action="store_true", default=None,
                       help="offer it: listed and served")
    state.add_argument("--disabled", dest="enabled", action="store_false",
                       help="hide it and refuse its calls")
    change.add_argument("--json", action="store_true")
    change.set_defaults(func=lambda a: run_command(lambda c: set_model(c, a)))
    policy = models.add_parser(
        "policy", help="show or change how a model's nodes scale with its load",
        description="Change the settings given, show the whole policy. The scaler adds a "
                    "node when the load per node stays over --target-load for "
                    "--scale-out-after seconds, and drains one when the load fits one node "
                    "fewer for --scale-in-after seconds or the model idles past its TTL.")
    policy.add_argument("name")
    policy.add_argument("--min-nodes", type=int, help="nodes kept running however idle")
    policy.add_argument("--max-nodes", type=int, help="nodes the scaler may run at once")
    policy.add_argument("--target-load", type=float, help="load per node to keep under")
    policy.add_argument("--load-metric", choices=LOAD_METRICS,
                        help="in_flight: calls open on a node; waiting: calls in its queue")
    policy.add_argument("--scale-out-after", type=int, metavar="SECONDS")
    policy.add_argument("--scale-in-after", type=int, metavar="SECONDS")
    policy.add_argument("--idle-ttl", type=int, metavar="SECONDS",
                        help="seconds without a request before the nodes above "
                             "--min-nodes stop (0: never)")
    policy.add_argument("--node-slots", type=int,
                        help="calls a node takes at once (0: learn it from the nodes)")
    market = policy.add_mutually_exclusive_group()
    market.add_argument("--spot", dest="spot", action="store_true", default=None,
                        help="launch spot nodes above the on-demand floor")
    market.add_argument("--on-demand", dest="spot", action="store_false",
                        help="launch on-demand nodes only")
    policy.add_argument("--on-demand-floor", type=int, help="nodes that stay on-demand")
    policy.add_argument("--instance-type", action="append", default=None,
                        help="instance type to launch, in order of preference (repeat)")
    policy.add_argument("--subnet", action="append", default=None,
                        help="subnet to launch in, in order of preference (repeat)")
    policy.add_argument("--image-id")
    policy.add_argument("--launch-template")
    policy.add_argument("--security-group-id", action="append", default=None)
    policy.add_argument("--key-name")
    policy.add_argument("--disk-gb", type=int)
    policy.add_argument("--region")
    policy.add_argument("--json", action="store_true")
    policy.set_defaults(func=lambda a: run_command(lambda c: scaling_policy(c, a)))
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

    for action, text in NODE_ACTIONS.items():
        command = nodes.add_parser(action, help=text)
        command.add_argument("node_id", type=int)
        command.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                             help="wait until the node gets there")
        command.set_defaults(func=lambda a, action=action: run_command(
            lambda c: node_action(c, a, action)))
    launch = nodes.add_parser("launch", help="run new EC2 instances for a model")
    launch.add_argument("--model", required=True)
    launch.add_argument("--instance-type", required=True)
    launch.add_argument("--image-id", default="")
    launch.add_argument("--launch-template", default="")
    launch.add_argument("--region", default="")
    launch.add_argument("--subnet-id", default="")
    launch.add_argument("--security-group-id", action="append", default=[])
    launch.add_argument("--key-name", default="")
    launch.add_argument("--disk-gb", type=int, default=0)
    launch.add_argument("--count", type=int, default=1)
    launch.add_argument("--spot", action="store_true",
                        help="a spot instance (on-demand if EC2 has no spot capacity)")
    launch.set_defaults(func=lambda a: run_command(lambda c: launch_nodes(c, a)))
    sync = nodes.add_parser("sync", help="bring node rows in line with EC2 now")
    sync.set_defaults(func=lambda a: run_command(lambda c: enqueue_only(c, "sync_nodes")))
    health = nodes.add_parser("health", help="check the health of running nodes now")
    health.set_defaults(func=lambda a: run_command(lambda c: enqueue_only(c, "check_health")))


async def add_model(ctx: CommandContext, args: argparse.Namespace) -> int:
    given = {"served_name": args.served_name, "input_price": args.input_price,
             "output_price": args.output_price, "context_length": args.context,
             "kind": args.kind, "enabled": not args.disabled}
    for field in ("idle_ttl", "min_nodes"):
        if getattr(args, field) is not None:
            given[field] = getattr(args, field)
    try:
        row, outcome = await catalogue.add_model(args.name, given,
                                                 default_idle_ttl=ctx.settings.idle_ttl,
                                                 publish=ctx.publish, actor=audit.CLI)
    except catalogue.CatalogueError as exc:
        raise fail(exc.message) from None
    _report(args, outcome, f"model {row.name}", {"id": row.id, "name": row.name})
    return 0


async def set_model(ctx: CommandContext, args: argparse.Namespace) -> int:
    llm = await LLM.get_or_none(name=args.name)
    if llm is None:
        raise fail(f"no model named {args.name!r}; add it with `portal models add`")
    changes = {field: value for field, value in (
        ("served_name", args.served_name), ("input_price", args.input_price),
        ("output_price", args.output_price), ("context_length", args.context),
        ("kind", args.kind), ("enabled", args.enabled)) if value is not None}
    try:
        changed = await catalogue.update_model(llm, changes, publish=ctx.publish,
                                               actor=audit.CLI)
    except catalogue.CatalogueError as exc:
        raise fail(exc.message) from None
    _report(args, "updated" if changed else "unchanged", f"model {llm.name}",
            {"id": llm.id, "name": llm.name, "served_name": llm.served_name,
             "input_usd_per_1m": format_usd(llm.input_price),
             "output_usd_per_1m": format_usd(llm.output_price),
             "context": llm.context_length, "kind": str(llm.kind), "enabled": llm.enabled})
    return 0


async def list_models(ctx: CommandContext, args: argparse.Namespace) -> int:
    rows = [{
        "id": m.id, "name": m.name, "served_name": m.served_name,
        "input_usd_per_1m": format_usd(m.input_price),
        "output_usd_per_1m": format_usd(m.output_price),
        "context": m.context_length, "kind": str(m.kind), "enabled": m.enabled,
        "idle_ttl": m.idle_ttl, "min_nodes": m.min_nodes, "max_nodes": m.max_nodes,
        "scaling_status": m.scaling_status,
    } for m in await LLM.all().order_by("name")]
    print_table(rows, ["id", "name", "served_name", "input_usd_per_1m", "output_usd_per_1m",
                       "context", "kind", "enabled"], as_json=args.json)
    return 0


async def scaling_policy(ctx: CommandContext, args: argparse.Namespace) -> int:
    llm = await LLM.get_or_none(name=args.name)
    if llm is None:
        raise fail(f"no model named {args.name!r}")
    changes: dict[str, object] = {
        name: getattr(args, name) for name in (
            "min_nodes", "max_nodes", "target_load", "load_metric", "scale_out_after",
            "scale_in_after", "idle_ttl", "node_slots", "spot", "on_demand_floor")
        if getattr(args, name) is not None}
    if changes.get("node_slots") == 0:
        changes["node_slots"] = None
    launch = {name: value for name, value in (
        ("instance_types", args.instance_type), ("subnets", args.subnet),
        ("image_id", args.image_id), ("launch_template", args.launch_template),
        ("security_group_ids", args.security_group_id), ("key_name", args.key_name),
        ("disk_gb", args.disk_gb), ("region", args.region)) if value is not None}
    if launch:
        changes["launch"] = {**(llm.launch or {}), **launch}
    try:
        changed = await change_policy(llm, changes, default_idle_ttl=ctx.settings.idle_ttl,
                                      publish=ctx.publish, actor=audit.CLI)
    except ValueError as exc:
        raise fail(str(exc)) from None
    view = policy_view(llm)
    if args.json:
        print(json.dumps({**view, "outcome": "updated" if changed else "unchanged"}))
    else:
        for name, value in view.items():
            print(f"{name}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
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
    before = None if row is None else await node_snapshot(row)
    state = NodeState(args.state) if args.state else (
        NodeState.STOPPED if args.instance_id else NodeState.RUNNING)
    region = args.region or (ctx.settings.regions[0] if args.instance_id else "")
    wanted = {"model_id": model.id, "url": url, "region": region,
              "instance_type": args.instance_type}
    if row is None:
        from dramatiq_actors.fleet import hourly_price

        row = await Node.create(instance_id=args.instance_id or None, state=state,
                                healthy=state is NodeState.RUNNING and not args.instance_id,
                                hourly_cost=hourly_price(args.instance_type), **wanted)
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
    if row.static and row.state is NodeState.RUNNING:  # it takes requests at once
        probes = await probe_many([row], ctx.settings.node_api_key, timeout=3.0)
        if await learn_contexts([row], probes):
            await ctx.publish("models")
    if outcome != "unchanged":
        await ctx.publish("nodes")
        await ctx.audit("node.add" if before is None else "node.update", f"node:{row.id}",
                        before, await node_snapshot(row))
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
    node = await Node.get_or_none(id=args.node_id)
    before = None if node is None else await node_snapshot(node)
    deleted = await Node.filter(id=args.node_id).delete()
    if not deleted:
        raise fail(f"no node {args.node_id}")
    await ctx.publish("nodes")
    await ctx.audit("node.remove", f"node:{args.node_id}", before, None)
    print(f"node {args.node_id} removed")
    return 0


def _report(args: argparse.Namespace, outcome: str, what: str, data: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps({**data, "outcome": outcome}))
    else:
        print(f"{what}: {outcome}")


#: Node actions and what each one does.
NODE_ACTIONS = {
    "boot": "start a stopped node and wait until it serves",
    "stop": "stop a node (it leaves routing at once)",
    "reboot": "reboot a node's instance",
    "terminate": "terminate a node's instance for good",
    "drain": "take a node out of routing, let its requests finish, then stop it",
}
#: The state a node reaches when each action is done.
_ACTION_GOAL = {"boot": "running", "stop": "stopped", "reboot": "running",
                "terminate": "terminated", "drain": "stopped"}


def _enqueue(ctx: CommandContext, actor: str, *args: object, **kwargs: object) -> str:
    from edge.tasks import enqueue_now

    if ctx.store is None:
        raise fail("no Redis answers: start the portal (or set PORTAL_REDIS_URL) first")
    return enqueue_now(ctx.settings, actor, *args, **kwargs)


async def enqueue_only(ctx: CommandContext, actor: str) -> int:
    _enqueue(ctx, actor)
    print(f"{actor} enqueued")
    return 0


async def node_action(ctx: CommandContext, args: argparse.Namespace, action: str) -> int:
    import asyncio
    import time

    node = await Node.get_or_none(id=args.node_id)
    if node is None:
        raise fail(f"no node {args.node_id}")
    message = _enqueue(ctx, f"{action}_node", node.id)
    await ctx.audit(f"node.{action}", f"node:{node.id}", await node_snapshot(node),
                    {"enqueued": f"{action}_node", "message_id": message})
    print(f"{action} of node {node.id} enqueued")
    if not args.wait:
        return 0
    goal = _ACTION_GOAL[action]
    deadline = time.monotonic() + args.wait
    if action == "reboot":  # it is "running" before as after: first see it go down
        before = node.boot_requested_at
        while time.monotonic() < deadline:
            await node.refresh_from_db()
            if not node.healthy or node.boot_requested_at != before:
                break
            await asyncio.sleep(0.1)
    while time.monotonic() < deadline:
        await node.refresh_from_db()
        if str(node.state) == goal and (goal != "running" or node.healthy):
            print(f"node {node.id} is {goal}")
            return 0
        await asyncio.sleep(0.5)
    state = str(node.state)
    if state == "running" and not node.healthy:
        state = "running but not healthy"
    raise fail(f"node {node.id} is {state} after {args.wait:.0f}s, not {goal}"
               f"{' and healthy' if goal == 'running' else ''}")


async def launch_nodes(ctx: CommandContext, args: argparse.Namespace) -> int:
    if not await LLM.exists(name=args.model):
        raise fail(f"no model named {args.model!r}")
    if not (args.image_id or args.launch_template):
        raise fail("give --image-id or --launch-template")
    options = {"region": args.region, "image_id": args.image_id,
               "launch_template": args.launch_template, "subnet_id": args.subnet_id,
               "security_group_ids": args.security_group_id, "key_name": args.key_name,
               "disk_gb": args.disk_gb, "count": args.count, "spot": args.spot}
    message = _enqueue(ctx, "launch_node", args.model, args.instance_type, **options)
    await ctx.audit("node.launch", f"model:{args.model}", None,
                    {"instance_type": args.instance_type, **options, "message_id": message})
    market = " spot" if args.spot else ""
    print(f"launch of {args.count}{market} {args.instance_type} for {args.model} enqueued")
    return 0
