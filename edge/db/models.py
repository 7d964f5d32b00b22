"""SQL tables (Tortoise ORM). SQL is the durable record; Redis holds the hot copies.

Money columns are integer micro-dollars; prices are micro-dollars per 1M tokens.
Descriptions become SQL comments: Tortoise's SQLite schema editor splits on
semicolons and breaks on quotes, so they use neither.
The ledger and the audit log are append-only: code inserts rows and never updates or
deletes them (the audit log's model refuses to).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NoReturn

from tortoise import fields
from tortoise.manager import Manager
from tortoise.models import Model
from tortoise.queryset import QuerySet

__all__ = ["LLM", "MAX_ID", "Account", "ApiKey", "AppendOnly", "AuditEntry", "CapReset",
           "ContactMessage", "KeyScope", "LedgerEntry", "LedgerKind", "ModelKind", "Node",
           "NodeRun", "NodeState", "UsageRecord"]

# Each foreign key is annotated with its relation type, and its ``<name>_id``
# column (which Tortoise adds at run time) is declared beside it for the type checker.

#: The largest id a row can have (a signed 64-bit integer in SQLite and PostgreSQL).
MAX_ID = 2**63 - 1


class NodeState(StrEnum):
    """Life of a GPU node; only ``running`` nodes receive requests."""

    STOPPED = "stopped"
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    DRAINING = "draining"
    TERMINATED = "terminated"


class LedgerKind(StrEnum):
    """Why a balance changed."""

    TOPUP = "topup"
    USAGE = "usage"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class ModelKind(StrEnum):
    """What a model's nodes serve: vLLM runs one model per node, of one kind."""

    GENERATE = "generate"  # chat, completions, responses, messages
    EMBED = "embed"  # embeddings (and score and rerank by cosine similarity)
    RERANK = "rerank"  # a cross-encoder: score and rerank


class LLM(Model):
    """A model offered to users, with its prices."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=128, unique=True, description="public name clients ask for")
    served_name = fields.CharField(max_length=256, description="name vLLM serves it under")
    input_price = fields.BigIntField(description="micro-dollars per 1M prompt tokens")
    output_price = fields.BigIntField(description="micro-dollars per 1M completion tokens")
    context_length = fields.IntField(default=8192)
    kind = fields.CharEnumField(ModelKind, max_length=16, default=ModelKind.GENERATE,
                                description="what its nodes serve: generate, embed or rerank")
    enabled = fields.BooleanField(default=True)
    idle_ttl = fields.IntField(
        null=True, description="seconds idle before its nodes stop (null: the default, 0: never)")
    boot_seconds = fields.FloatField(null=True, description="measured time a node takes to boot")
    # The scaling policy (edge.fleet.scaling.Policy reads these).
    min_nodes = fields.IntField(default=0, description="running nodes kept however idle")
    max_nodes = fields.IntField(default=1, db_default=1,
                                description="nodes the scaler may run at once")
    target_load = fields.FloatField(
        default=8.0, db_default=8.0,
        description="load per node above which the scaler adds one and below which it removes")
    load_metric = fields.CharField(
        max_length=16, default="in_flight", db_default="in_flight",
        description="what load counts: in_flight (calls open on it) or waiting (in its queue)")
    scale_out_after = fields.IntField(default=30, db_default=30,
                                      description="seconds load must stay above target")
    scale_in_after = fields.IntField(default=300, db_default=300,
                                     description="seconds load must stay below target")
    node_slots = fields.IntField(
        null=True, description="calls a node takes at once (null: learnt, or the default)")
    spot = fields.BooleanField(default=False, db_default=False,
                               description="nodes above the on-demand floor are spot")
    on_demand_floor = fields.IntField(default=0, db_default=0,
                                      description="nodes that stay on-demand")
    launch: fields.JSONField[dict[str, Any] | None] = fields.JSONField(
        null=True, description="how to launch a node: instance types and subnets in order "
                               "of preference, image or template, groups, key, disk, region")
    scaling_status = fields.CharField(max_length=500, default="", db_default="",
                                      description="what the scaler last did or could not do")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "llm_models"


class Node(Model):
    """One vLLM server for one model: an EC2 instance or a static URL."""

    id = fields.IntField(primary_key=True)
    model: fields.ForeignKeyRelation[LLM] = fields.ForeignKeyField(
        "portal.LLM", related_name="nodes", on_delete=fields.CASCADE)
    model_id: int
    url = fields.CharField(max_length=512, default="")
    instance_id = fields.CharField(max_length=64, null=True, unique=True)
    region = fields.CharField(max_length=32, default="")
    instance_type = fields.CharField(max_length=64, default="")
    state = fields.CharEnumField(NodeState, max_length=16, default=NodeState.RUNNING)
    healthy = fields.BooleanField(default=True)
    private_ip = fields.CharField(max_length=64, default="")
    public_ip = fields.CharField(max_length=64, default="")
    queue_depth = fields.IntField(default=0, description="vllm:num_requests_waiting, last read")
    # Columns added after the first release carry a database default, so that
    # adding them to a table with rows works (SQLite and PostgreSQL need one).
    running_requests = fields.IntField(default=0, db_default=0,
                                       description="vllm:num_requests_running, last read")
    health_failures = fields.IntField(default=0, db_default=0,
                                      description="failed health checks in a row")
    hourly_cost = fields.BigIntField(default=0, db_default=0,
                                     description="micro-dollars per hour it runs")
    boot_requested_at = fields.DatetimeField(null=True, description="when a boot was asked")
    spot = fields.BooleanField(default=False, db_default=False,
                               description="a spot instance (EC2 may take it back)")
    learned_slots = fields.IntField(
        null=True, description="calls it ran at once when a queue formed (its batch size)")
    note = fields.CharField(max_length=500, default="", db_default="",
                            description="why it is in its state (capacity, interruption)")
    last_used_at = fields.DatetimeField(null=True)
    last_health_at = fields.DatetimeField(null=True)
    state_changed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "nodes"

    @property
    def static(self) -> bool:
        """A static node has no EC2 instance behind it; the portal never boots or stops it."""
        return not self.instance_id


class NodeRun(Model):
    """A stretch of time a node was billed for, at the hourly cost it had then.

    What GPU cost is summed from (``edge.reports``). ``edge.fleet.nodes`` opens a run when a
    node is saved in a state EC2 bills and closes it when the node leaves it (or changes
    model, instance type, spot or hourly cost: the next run has the new ones). The ids are
    plain columns, not foreign keys: the history outlives a removed node or model.
    """

    id = fields.BigIntField(primary_key=True)
    node_id = fields.IntField(db_index=True)
    model_id = fields.IntField(description="the model the node served")
    instance_type = fields.CharField(max_length=64, default="")
    spot = fields.BooleanField(default=False)
    hourly_cost = fields.BigIntField(description="micro-dollars per hour, as the node had it")
    started_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True, description="null while it runs")
    open_node_id = fields.IntField(
        null=True, unique=True,
        description="the node id while the run is open, null once closed (one open run per node)")

    class Meta:
        table = "node_runs"


class KeyScope(StrEnum):
    """What a key may do besides calling the API and chatting."""

    #: Signs in to the pages, makes and revokes the account's keys, tops up.
    MANAGE = "manage"
    #: Calls the API and chats, nothing else.
    API = "api"


class CapReset(StrEnum):
    """When a key's credit cap starts again from zero (UTC; a week starts on Monday)."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    NEVER = "never"


class Account(Model):
    """A customer, who owns the balance, the ledger, payments and usage, and holds keys.

    Accounts migrated from the portal where a key was the wallet kept that key's id,
    so the hot store's balances (``$ns:bal:<id>``) stayed valid across the upgrade.
    """

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=128)
    balance = fields.BigIntField(default=0,
                                 description="micro-dollars, always the sum of its ledger")
    spent = fields.BigIntField(default=0, description="micro-dollars charged for usage")
    owed = fields.BigIntField(default=0,
                              description="refunded micro-dollars still to collect from "
                                          "credit that open reservations hold")
    frozen = fields.BooleanField(default=False, description="set by a payment dispute")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "accounts"


class ApiKey(Model):
    """A key of an account. Only its HMAC is stored, the secret is shown once.

    A rotated key keeps its id, limits and history under a new secret; the old one
    (``previous_*``) still works until ``previous_until``.
    """

    id = fields.IntField(primary_key=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="keys", on_delete=fields.RESTRICT)
    account_id: int
    name = fields.CharField(max_length=128)
    prefix = fields.CharField(max_length=32, unique=True, description="public part, shown in lists")
    key_hash = fields.CharField(max_length=64, unique=True, description="HMAC-SHA256, hex")
    scope = fields.CharEnumField(KeyScope, max_length=8, default=KeyScope.API,
                                 db_default="manage", description="manage or api")
    models: fields.JSONField[list[str] | None] = fields.JSONField(
        null=True, description="model names it may call (null: all)")
    routes: fields.JSONField[list[str] | None] = fields.JSONField(
        null=True, description="routes it may call (null: all)")
    spent = fields.BigIntField(default=0, description="micro-dollars this key spent")
    cap = fields.BigIntField(null=True, description="micro-dollars it may spend per window")
    cap_reset = fields.CharEnumField(CapReset, max_length=8, default=CapReset.NEVER,
                                     db_default="never", description="when the cap starts again")
    rpm = fields.IntField(description="requests per minute")
    tpm = fields.IntField(description="tokens per minute")
    previous_prefix = fields.CharField(max_length=32, null=True, unique=True,
                                       description="prefix before the last rotation")
    previous_hash = fields.CharField(max_length=64, null=True,
                                     description="HMAC of the secret before the last rotation")
    previous_until = fields.DatetimeField(null=True, description="the old secret works until")
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_keys"


class LedgerEntry(Model):
    """An append-only change of the balance of an account, unique by ``reference``."""

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="ledger", on_delete=fields.RESTRICT)
    account_id: int
    kind = fields.CharEnumField(LedgerKind, max_length=16)
    amount = fields.BigIntField(description="micro-dollars, negative for charges")
    reference = fields.CharField(max_length=200, unique=True)
    note = fields.CharField(max_length=500, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "ledger"
        # The overview sums by time; the console and GET /admin/ledger page an account's.
        indexes = (("created_at",), ("account_id", "id"))


class UsageRecord(Model):
    """One served request, as billed."""

    id = fields.BigIntField(primary_key=True)
    request_id = fields.CharField(max_length=64, unique=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="usage", on_delete=fields.RESTRICT)
    account_id: int
    key: fields.ForeignKeyRelation[ApiKey] = fields.ForeignKeyField(
        "portal.ApiKey", related_name="usage", on_delete=fields.RESTRICT,
        description="the key that made the call")
    key_id: int
    model = fields.CharField(max_length=128)
    node_id = fields.IntField(null=True)
    endpoint = fields.CharField(max_length=32, default="chat")
    prompt_tokens = fields.IntField(default=0)
    completion_tokens = fields.IntField(default=0)
    cost = fields.BigIntField(default=0, description="micro-dollars charged")
    latency_ms = fields.IntField(default=0)
    status = fields.IntField(default=200)
    streamed = fields.BooleanField(default=False)
    cancelled = fields.BooleanField(default=False)
    counted_by = fields.CharField(
        max_length=8, default="node", db_default="node",
        description="who counted the tokens: node (its usage) or edge (the node sent none)")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "usage_log"
        # By key and account for their usage; by time alone for the operator's overview.
        indexes = (("key_id", "created_at"), ("account_id", "created_at"), ("created_at",))


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED)


class Job(Model):
    """A queued inference request, answered when a node of its model is up."""

    id = fields.CharField(max_length=40, primary_key=True)
    key: fields.ForeignKeyRelation[ApiKey] = fields.ForeignKeyField(
        "portal.ApiKey", related_name="jobs", on_delete=fields.RESTRICT)
    key_id: int
    model = fields.CharField(max_length=128)
    endpoint = fields.CharField(max_length=32, default="chat")
    body: fields.JSONField[dict[str, Any]] = fields.JSONField()
    status = fields.CharEnumField(JobStatus, max_length=16, default=JobStatus.QUEUED)
    request_id = fields.CharField(max_length=64, unique=True, description="its credit reservation")
    result: fields.JSONField[dict[str, Any] | None] = fields.JSONField(null=True)
    error: fields.JSONField[dict[str, Any] | None] = fields.JSONField(null=True)
    prompt_tokens = fields.IntField(default=0)
    completion_tokens = fields.IntField(default=0)
    cost = fields.BigIntField(default=0, description="micro-dollars charged")
    settled = fields.BooleanField(default=False, description="its reservation is settled")
    attempts = fields.IntField(default=0)
    node_id = fields.IntField(null=True)
    lease_until = fields.DatetimeField(null=True, description="a worker owns it until then")
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    deadline_at = fields.DatetimeField()

    class Meta:
        table = "jobs"
        indexes = (("status", "created_at"), ("key_id", "created_at"))


class ChatRoom(Model):
    """A chat room where people and a model talk. Private rooms have unguessable names."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    private = fields.BooleanField(default=False)
    created_by: fields.ForeignKeyNullableRelation[ApiKey] = fields.ForeignKeyField(
        "portal.ApiKey", related_name="rooms", null=True, on_delete=fields.SET_NULL)
    created_by_id: int | None
    account: fields.ForeignKeyNullableRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="rooms", null=True, on_delete=fields.SET_NULL,
        description="the account whose conversation it is (the only reader of a private room)")
    account_id: int | None
    title = fields.CharField(max_length=200, default="", db_default="",
                             description="shown in the sidebar, made from the first message")
    model = fields.CharField(max_length=128, default="", description="model it talks with")
    system_prompt = fields.TextField(default="")
    params: dict | None = fields.JSONField(null=True, description="sampling settings of its "
                                           "replies (temperature, max_tokens and so on)")
    last_message_at = fields.DatetimeField(null=True, description="orders the sidebar")
    deleted_at = fields.DatetimeField(null=True, description="soft-deleted then and purged later")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "chat_rooms"


class ChatMembership(Model):
    """A room in the sidebar of an account: its own private rooms and the public ones it joined."""

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="memberships", on_delete=fields.CASCADE)
    account_id: int
    room: fields.ForeignKeyRelation[ChatRoom] = fields.ForeignKeyField(
        "portal.ChatRoom", related_name="memberships", on_delete=fields.CASCADE)
    room_id: int
    pinned = fields.BooleanField(default=False, db_default=False)
    joined_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "chat_memberships"
        unique_together = (("account", "room"),)


class ChatShare(Model):
    """A read-only link to a snapshot of a conversation: what it held when shared, no more."""

    id = fields.IntField(primary_key=True)
    token = fields.CharField(max_length=64, unique=True, description="the secret part of the link")
    room: fields.ForeignKeyRelation[ChatRoom] = fields.ForeignKeyField(
        "portal.ChatRoom", related_name="shares", on_delete=fields.CASCADE)
    room_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="shares", on_delete=fields.CASCADE)
    account_id: int
    title = fields.CharField(max_length=200, default="")
    snapshot: dict = fields.JSONField(description="the messages of the conversation when shared")
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "chat_shares"


class ChatMessage(Model):
    """A message in a room, from a person or a model (a reply is charged to its asker)."""

    id = fields.BigIntField(primary_key=True, description="clients resume after the last id")
    room: fields.ForeignKeyRelation[ChatRoom] = fields.ForeignKeyField(
        "portal.ChatRoom", related_name="messages", on_delete=fields.CASCADE)
    room_id: int
    role = fields.CharField(max_length=16, description="user or assistant")
    author = fields.CharField(max_length=64, description="display name")
    key: fields.ForeignKeyNullableRelation[ApiKey] = fields.ForeignKeyField(
        "portal.ApiKey", related_name="chat_messages", null=True, on_delete=fields.SET_NULL,
        description="sender, or payer")
    key_id: int | None
    content = fields.TextField(default="")
    model = fields.CharField(max_length=128, default="")
    reply_to = fields.BigIntField(null=True, description="the message a reply answers")
    request_id = fields.CharField(max_length=64, null=True, description="its billed request")
    status = fields.CharField(max_length=16, default="done",
                              description="done, streaming, stopped or failed")
    variant_of = fields.BigIntField(null=True, description="the first of its alternatives "
                                    "(a regenerated reply, an edited question)")
    current = fields.BooleanField(default=True, db_default=True,
                                  description="the alternative shown and sent to the model")
    prompt_tokens = fields.IntField(default=0)
    completion_tokens = fields.IntField(default=0)
    cost = fields.BigIntField(default=0, description="micro-dollars charged")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "chat_messages"
        indexes = (("room_id", "id"),)


class PaymentStatus(StrEnum):
    CREATED = "created"
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    DISPUTED = "disputed"


class Payment(Model):
    """A Stripe Checkout payment for an account, and what became of it."""

    id = fields.IntField(primary_key=True)
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portal.Account", related_name="payments", on_delete=fields.RESTRICT)
    account_id: int
    session_id = fields.CharField(max_length=255, unique=True, description="Checkout Session")
    payment_intent = fields.CharField(max_length=255, null=True, db_index=True)
    charge_id = fields.CharField(max_length=255, null=True, db_index=True)
    amount = fields.BigIntField(description="micro-dollars asked at checkout")
    paid = fields.BigIntField(default=0, description="micro-dollars Stripe says were paid")
    refunded = fields.BigIntField(default=0, description="micro-dollars refunded")
    currency = fields.CharField(max_length=8, default="usd")
    status = fields.CharEnumField(PaymentStatus, max_length=24, default=PaymentStatus.CREATED)
    checkout_url = fields.CharField(max_length=1000, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "payments"
        indexes = (("account_id", "created_at"),)


class WebhookEvent(Model):
    """A Stripe event received, by its id: the record that it was handled."""

    id = fields.CharField(max_length=255, primary_key=True, description="Stripe event id")
    type = fields.CharField(max_length=100)
    outcome = fields.CharField(max_length=200, default="")
    received_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "webhook_events"


class Installation(Model):
    """This database's identity, which the Redis namespace it uses is claimed for.

    Two databases must never share the balances held in one Redis namespace (a
    second checkout, a fresh SQLite file beside an old Redis).
    """

    id = fields.IntField(primary_key=True, generated=False, description="always 1")
    identity = fields.CharField(max_length=36, unique=True)
    sql_only_changes = fields.IntField(
        default=0, db_default=0,
        description="balance changes made while no Redis answered: a hot store healed "
                    "before the last of them is stale")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "installation"


class ContactMessage(Model):
    """A message from the contact page: stored first, then mailed, so none is lost."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=100)
    email = fields.CharField(max_length=254)
    message = fields.TextField()
    client_ip = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    mailed_at = fields.DatetimeField(null=True, description="when the operator was mailed")
    mail_error = fields.CharField(max_length=500, default="",
                                  description="why mailing failed, empty when it did not")

    class Meta:
        table = "contact_messages"


class AppendOnly(RuntimeError):
    """Something tried to change or remove a row of an append-only table."""


class _AppendOnlyQuerySet(QuerySet[Any]):
    """Queries that read and insert, and refuse to update or delete."""

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnly(f"{self.model.__name__} rows are never updated")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnly(f"{self.model.__name__} rows are never deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnly(f"{self.model.__name__} rows are never updated")


class _AppendOnlyManager(Manager):
    def get_queryset(self) -> QuerySet[Any]:
        return _AppendOnlyQuerySet(self._model)


class AuditEntry(Model):
    """What an operator did, by whom, to what, before and after (append-only).

    :mod:`edge.audit` inserts rows; saving a loaded row or deleting one raises.
    """

    id = fields.BigIntField(primary_key=True)
    actor = fields.CharField(max_length=128, description="admin-api, cli or console:<who>")
    action = fields.CharField(max_length=64, db_index=True, description="what was done")
    target = fields.CharField(max_length=200, db_index=True, description="kind:id it was done to")
    before: fields.JSONField[Any] = fields.JSONField(null=True)
    after: fields.JSONField[Any] = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_log"
        manager = _AppendOnlyManager()

    async def save(self, *args: Any, **kwargs: Any) -> None:
        if self._saved_in_db:
            raise AppendOnly("audit rows are never updated")
        await super().save(*args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        raise AppendOnly("audit rows are never deleted")
