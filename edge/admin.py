"""``/admin``: the operator's API for nodes and jobs (bearer ``PORTAL_ADMIN_TOKEN``).

Node actions are enqueued for the workers and answered ``202`` at once; watch
``GET /admin/nodes`` (or the ``nodes`` events) for their effect. Every change appends
a row to the audit log (:func:`edge.audit.record`, actor ``admin-api``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sanic import Blueprint, Request
from sanic.response import json as json_response

from edge import audit
from edge.billing.money import format_usd
from edge.db.models import LLM, MAX_ID, JobStatus, Node
from edge.errors import InvalidAPIKey, InvalidRequest, NotFound, PermissionDenied
from edge.fleet import policies
from edge.fleet.scaling import policy_view
from edge.identity import console_sessions
from edge.identity.auth import same_secret
from edge.identity.csrf import form_csrf
from edge.identity.sessions import same_token
from edge.jobs import listing
from edge.jsonbody import json_object
from edge.tasks import enqueue

__all__ = ["CONSOLE", "admin_actor", "bp", "console_actor", "require_admin"]

bp = Blueprint("admin", url_prefix="/admin")

#: The audit log's actor for a change made from the console's pages.
CONSOLE = "console"

ACTIONS = ("boot", "stop", "reboot", "terminate", "drain")


#: Methods that change nothing: a console session may call them without a CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def require_admin(request: Request) -> None:
    """Refuse a request without the admin token or a console session (the admin
    blueprints' request middleware).

    A bearer token is the API's way in; the console's session cookie is the pages', and
    with it every state-changing call must echo the session's CSRF token in
    ``X-CSRF-Token`` (or a ``csrf`` form field), as a browser never adds that by itself.
    """
    token = request.app.ctx.portal.settings.admin_token
    if not token:
        raise PermissionDenied("The admin API is disabled: set PORTAL_ADMIN_TOKEN.")
    header = request.headers.get("authorization")
    if header is None and request.cookies.get(console_sessions.COOKIE):
        session = await request.app.ctx.portal.console_sessions.load(
            request.cookies.get(console_sessions.COOKIE), token)
        if session is None:
            raise InvalidAPIKey("The console session has ended; sign in again.",
                                code="invalid_admin_session")
        if request.method not in SAFE_METHODS and not same_token(form_csrf(request),
                                                                 session.csrf):
            raise PermissionDenied("The form has expired or did not come from the console; "
                                   "reload the page and try again.", code="csrf_failed")
        request.ctx.console_session = session
        request.ctx.admin_actor = console_actor(request)
        return
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not same_secret(given.strip(), token):
        raise InvalidAPIKey("A valid admin token is required.", code="invalid_admin_token")


def console_actor(request: Request) -> str:
    """The audit log's name for the operator at the console: ``console:<address>``."""
    return f"{CONSOLE}:{request.remote_addr or request.ip or 'unknown'}"


def admin_actor(request: Request) -> str:
    """Who the audit log names for this request: ``admin-api`` for the bearer token,
    ``console`` for the operator's signed-in console session."""
    actor: str = getattr(request.ctx, "admin_actor", audit.ADMIN_API)
    return actor


# Registered by a call, not as a decorator: Sanic's decorator is typed as returning
# a middleware, which would hide the function's own type from its other users.
bp.on_request(require_admin)


def node_entry(node: Node, model: str) -> dict:
    now = datetime.now(UTC)
    up = node.state_changed_at if str(node.state) in ("running", "draining") else None
    return {
        "id": node.id, "model": model, "state": str(node.state), "healthy": node.healthy,
        "url": node.url, "instance_id": node.instance_id, "region": node.region,
        "instance_type": node.instance_type, "static": node.static,
        "private_ip": node.private_ip, "public_ip": node.public_ip,
        "queue_depth": node.queue_depth, "running_requests": node.running_requests,
        "last_used_at": node.last_used_at.isoformat() if node.last_used_at else None,
        "last_health_at": node.last_health_at.isoformat() if node.last_health_at else None,
        "uptime_seconds": int((now - up).total_seconds()) if up else 0,
        "hourly_cost": format_usd(node.hourly_cost), "spot": node.spot, "note": node.note,
        "slots": node.learned_slots,
    }


async def node_snapshot(node: Node) -> dict:
    """A node as the audit log keeps it: as ``GET /admin/nodes`` shows it."""
    llm = await LLM.get_or_none(id=node.model_id)
    return node_entry(node, llm.name if llm else "")


@bp.get("/nodes")
async def list_nodes(request: Request):
    models = {m.id: m.name for m in await LLM.all()}
    nodes = await Node.all().order_by("id")
    return json_response({"data": [node_entry(n, models.get(n.model_id, "")) for n in nodes]})


@bp.post("/nodes")
async def launch(request: Request):
    body = json_object(request.body, empty_ok=True)
    model, instance_type = body.get("model"), body.get("instance_type")
    if not isinstance(model, str) or not await LLM.exists(name=model):
        raise InvalidRequest("'model' must name a model of the catalogue.", param="model")
    if not isinstance(instance_type, str) or not instance_type:
        raise InvalidRequest("'instance_type' is required.", param="instance_type")
    if not (body.get("image_id") or body.get("launch_template")):
        raise InvalidRequest("Give 'image_id' or 'launch_template'.", param="image_id")
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 20:
        raise InvalidRequest("'count' must be from 1 to 20.", param="count")
    options = {name: body[name] for name in ("region", "image_id", "launch_template",
                                             "subnet_id", "key_name")
               if isinstance(body.get(name), str)}
    groups = body.get("security_group_ids") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidRequest("'security_group_ids' must be a list of strings.",
                             param="security_group_ids")
    spot = body.get("spot", False)
    if not isinstance(spot, bool):
        raise InvalidRequest("'spot' must be true or false.", param="spot")
    message = await enqueue(request.app.ctx.portal.settings, "launch_node", model,
                            instance_type, security_group_ids=groups, count=count, spot=spot,
                            **options)
    await audit.record(admin_actor(request), "node.launch", f"model:{model}", None, {
        "instance_type": instance_type, "count": count, "spot": spot,
        "security_group_ids": groups, **options, "message_id": message})
    return json_response({"enqueued": "launch_node", "message_id": message}, status=202)


@bp.post("/nodes/<node_id:int>/<action:str>")
async def node_action(request: Request, node_id: int, action: str):
    if action not in ACTIONS:
        raise NotFound(f"Unknown action '{action}'; one of {', '.join(ACTIONS)}.")
    node = await Node.get_or_none(id=node_id) if 0 < node_id <= MAX_ID else None
    if node is None:
        raise NotFound(f"No node {node_id}.")
    message = await enqueue(request.app.ctx.portal.settings, f"{action}_node", node_id)
    await audit.record(admin_actor(request), f"node.{action}", f"node:{node_id}",
                       await node_snapshot(node), {"enqueued": f"{action}_node",
                                                   "message_id": message})
    return json_response({"enqueued": f"{action}_node", "node": node_id,
                          "message_id": message}, status=202)


@bp.get("/models/<name:path>/policy")
async def get_policy(request: Request, name: str):
    return json_response(policy_view(await _model(name)))


@bp.patch("/models/<name:path>/policy")
async def change_policy(request: Request, name: str):
    """Change the settings the body names (``launch`` is replaced whole)."""
    llm = await _model(name)
    portal = request.app.ctx.portal
    try:
        await policies.change_policy(llm, json_object(request.body),
                                     default_idle_ttl=portal.settings.idle_ttl,
                                     publish=portal.store.publish, actor=admin_actor(request))
    except ValueError as exc:
        raise InvalidRequest(f"{exc}.") from None
    return json_response(policy_view(llm))


async def _model(name: str) -> LLM:
    llm = await LLM.get_or_none(name=name)
    if llm is None:
        raise NotFound(f"No model '{name}'.")
    return llm


#: EventBridge's detail types that mean EC2 is taking an instance back (or soon may).
INTERRUPTIONS = {"EC2 Spot Instance Interruption Warning": "spot interruption notice",
                 "EC2 Instance Rebalance Recommendation": "rebalance recommendation"}


@bp.post("/fleet/events")
async def fleet_event(request: Request):
    """An EC2 event as EventBridge delivers it (an API destination pointed here):
    a spot interruption notice or a rebalance recommendation drains the node and
    launches its replacement. Other events are acknowledged and ignored."""
    event = json_object(request.body)
    detail = event.get("detail")
    reason = INTERRUPTIONS.get(str(event.get("detail-type", "")))
    if reason is None or not isinstance(detail, dict):
        return json_response({"handled": False, "reason": "not an interruption"})
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not instance_id:
        raise InvalidRequest("'detail.instance-id' is required.", param="detail.instance-id")
    node = await Node.get_or_none(instance_id=instance_id)
    if node is None:
        return json_response({"handled": False, "reason": f"no node runs {instance_id}"})
    message = await enqueue(request.app.ctx.portal.settings, "replace_node", node.id, reason)
    await audit.record(admin_actor(request), "node.replace", f"node:{node.id}",
                       await node_snapshot(node), {"reason": reason, "enqueued": "replace_node",
                                                   "message_id": message})
    return json_response({"handled": True, "node": node.id, "enqueued": "replace_node",
                          "message_id": message}, status=202)


@bp.get("/jobs")
async def list_jobs(request: Request):
    """Query: ``status``, ``account`` (an id: its keys' jobs), ``model``, ``limit`` (≤ 500);
    as :func:`edge.jobs.listing.list_jobs` finds them."""
    status = request.args.get("status")
    if status:
        statuses = [s.value for s in JobStatus]
        if status not in statuses:
            raise InvalidRequest(f"'status' must be one of {', '.join(statuses)}.",
                                 param="status")
    account = request.args.get("account")
    if account is not None and not (account.isascii() and account.isdigit()
                                    and len(account) < 20 and 0 < int(account) <= MAX_ID):
        raise InvalidRequest("'account' must be an account's id.", param="account")
    model = request.args.get("model")
    if model is not None and len(model) > 128:
        raise InvalidRequest("'model' is a model's name.", param="model")
    try:
        limit = min(500, max(1, int(request.args.get("limit", 100))))
    except ValueError:
        raise InvalidRequest("'limit' must be a number.", param="limit") from None
    data = await listing.list_jobs(status=JobStatus(status) if status else None,
                                   account=int(account) if account is not None else None,
                                   model=model, limit=limit)
    return json_response({"data": data})
