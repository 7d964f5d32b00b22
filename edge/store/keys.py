"""Every Redis key and channel of the portal, built in one place.

All of them live under the namespace ``$ns`` (``PORTAL_REDIS_NAMESPACE``), so that
one Redis can hold several portals, and tests each get their own::

  Money (the Lua scripts in ``edge/store/lua/`` name these in their headers)
    $ns:bal:<account_id>      live balance of an account, micro-dollars (string integer)
    $ns:rl:<key_id>           hash: an API key's rate-limit buckets (rq, tk, ts)
    $ns:cap:<key_id>          hash: an API key's credit cap window (w: its id, used:
                              micro-dollars charged and held in it)
    $ns:resv:<request_id>     hash: an open credit reservation (amount, tokens, created,
                              key, acct, cw, pin, pout, own, model, node, ep, st; pt, ct
                              as a stream delivers)
    $ns:resv:open             zset: open reservations by deadline, milliseconds (reaped
                              when stale)
    $ns:held:<account_id>     micro-dollars held by the account's open reservations
    $ns:owed:<account_id>     refund debt of an account, collected from what its
                              reservations release when they settle
    $ns:applied:<reference>   marker of a credit (or replayed settlement) already applied
    $ns:ledger                stream of balance changes waiting for SQL
                              (:mod:`edge.billing.entries`; consumer group ``ledger-writers``)
    $ns:gen                   generation ``<token>:<SQL's lone changes>:<run_id>``; none
                              while the namespace heals (:mod:`edge.billing.heal`)
    $ns:heal:lock             held by the process healing the namespace
    $ns:installation          identity of the database that claimed the namespace
                              (:mod:`edge.store.embedded`)
    $ns:hb:<owner>            heartbeat of a process holding reservations (short TTL);
                              its reservations are reaped once it is gone

  API keys and sessions
    $ns:key:<prefix>          hash: mirror of an API key's record (no secret)
    $ns:keys:mirrored         set once every key is mirrored: a miss then means "no such key"
    $ns:session:<digest>      hash: a web session (key, prefix, csrf), by the hex SHA-256
                              of its id
    $ns:signups:<address>:<hour>
                              keys made from a client address in an hour (unix hours)
    $ns:contacts:<address>:<hour>
                              contact messages sent from a client address in an hour
    $ns:console:<digest>      hash: an operator's console session (csrf, opened, token
                              fingerprint), by the hex SHA-256 of its id
    $ns:console-logins:<address>:<hour>
                              failed console sign-ins from a client address in an hour

  Chat
    $ns:room:<room>           pub/sub channel of a room's events
    $ns:room:<room>:who       hash: who is in a room (member id -> [name, unix seconds])
    $ns:keyrooms:<key_id>     hash: rooms an API key is in (room -> open sockets)

  Fleet and workers
    $ns:boot:<model>          a boot of the model was asked for (deduplicates boot requests)
    $ns:nodelock:<node_id>    one action at a time on a node (a redis-py lock)
    $ns:slots:<node_id>       zset: calls open on a node, over every worker (member: request
                              id, score: lease deadline in ms; renewed while open)
    $ns:affinity:<model_id>:<prefix>
                              the node that last served calls of a prefix, by its
                              affinity number (cache-affine routing; forgotten after
                              PORTAL_AFFINITY_TTL)
    $ns:waiting:<model>       zset: calls held in the edge for a free slot (member: request
                              id, score: when it gives up, ms)
    $ns:scale:<model>         hash: what the scaler's last decision left for the next
                              (edge.fleet.scaling.Memory: above_since, below_since,
                              acted_until, quiet, quiet_now)
    $ns:scalelock:<model>     one scaling decision at a time for a model
    $ns:dramatiq:*            Dramatiq's own broker keys (its namespace, :func:`dramatiq`)

  Pub/sub
    $ns:events                cache invalidations, short strings: ``key:<prefix>`` (a key
                              changed), ``keys`` (all keys), ``models`` and ``nodes`` (the
                              routing table), ``job:<id>`` (a job changed state)

Build every key with a function of this module (the hot store's methods call them);
``tests/store/test_keys.py`` fails on a key built by hand anywhere else. Given ``"*"``
for an id, a function gives the ``SCAN`` pattern of all such keys.
"""

from __future__ import annotations

__all__ = [
    "EVENT_KEYS",
    "EVENT_MODELS",
    "EVENT_NODES",
    "JOB_EVENT_PREFIX",
    "KEY_EVENT_PREFIX",
    "affinity",
    "applied",
    "balance",
    "boot_request",
    "cap",
    "chat_room",
    "chat_room_members",
    "console_logins",
    "console_session",
    "contacts",
    "dramatiq",
    "events",
    "generation",
    "heal_lock",
    "heartbeat",
    "held",
    "installation",
    "job_event",
    "key_event",
    "key_record",
    "key_rooms",
    "keys_mirrored",
    "ledger_stream",
    "limiter",
    "node_lock",
    "open_reservations",
    "owed",
    "reservation",
    "scale_lock",
    "scale_memory",
    "session",
    "signups",
    "slots",
    "waiting",
]

# -- money ----------------------------------------------------------------------------


def balance(ns: str, account_id: int | str) -> str:
    """Live balance of an account, micro-dollars."""
    return f"{ns}:bal:{account_id}"


def limiter(ns: str, key_id: int | str) -> str:
    """Rate-limit buckets of an API key."""
    return f"{ns}:rl:{key_id}"


def cap(ns: str, key_id: int | str) -> str:
    """An API key's credit cap window: what it charged and holds in it."""
    return f"{ns}:cap:{key_id}"


def reservation(ns: str, request_id: str) -> str:
    """An open credit reservation (``"*"`` also matches :func:`open_reservations`)."""
    return f"{ns}:resv:{request_id}"


def open_reservations(ns: str) -> str:
    """Open reservations by deadline (milliseconds)."""
    return f"{ns}:resv:open"


def held(ns: str, account_id: int | str) -> str:
    """Micro-dollars held by an account's open reservations."""
    return f"{ns}:held:{account_id}"


def owed(ns: str, account_id: int | str) -> str:
    """Refund debt of an account, micro-dollars."""
    return f"{ns}:owed:{account_id}"


def applied(ns: str, reference: str) -> str:
    """Marker of a credit (or a replayed settlement) already applied."""
    return f"{ns}:applied:{reference}"


def ledger_stream(ns: str) -> str:
    """Stream of balance changes waiting to be written to SQL."""
    return f"{ns}:ledger"


def generation(ns: str) -> str:
    """The hot store's generation (absent while it heals)."""
    return f"{ns}:gen"


def heal_lock(ns: str) -> str:
    """Held by the process healing the namespace."""
    return f"{ns}:heal:lock"


def installation(ns: str) -> str:
    """Identity of the database that claimed the namespace."""
    return f"{ns}:installation"


def heartbeat(ns: str, owner: str) -> str:
    """Heartbeat of a process that holds reservations."""
    return f"{ns}:hb:{owner}"


# -- API keys and sessions ---------------------------------------------------------------


def key_record(ns: str, prefix: str) -> str:
    """Mirror of an API key's record (no secret)."""
    return f"{ns}:key:{prefix}"


def keys_mirrored(ns: str) -> str:
    """Set once every key is mirrored."""
    return f"{ns}:keys:mirrored"


def session(ns: str, digest: str) -> str:
    """A web session, by the hex SHA-256 of its id (never the id itself)."""
    return f"{ns}:session:{digest}"


def console_session(ns: str, digest: str) -> str:
    """An operator's console session, by the hex SHA-256 of its id."""
    return f"{ns}:console:{digest}"


def console_logins(ns: str, address: str, hour: int) -> str:
    """Failed console sign-ins from ``address`` in the unix hour ``hour``."""
    return f"{ns}:console-logins:{address}:{hour}"


def signups(ns: str, address: str, hour: int) -> str:
    """Keys made from ``address`` in the unix hour ``hour``."""
    return f"{ns}:signups:{address}:{hour}"


def contacts(ns: str, address: str, hour: int) -> str:
    """Contact messages sent from ``address`` in the unix hour ``hour``."""
    return f"{ns}:contacts:{address}:{hour}"


# -- chat --------------------------------------------------------------------------------


def chat_room(ns: str, room: str) -> str:
    """Pub/sub channel of a room's events (``chat_room(ns, "")`` is the prefix of all)."""
    return f"{ns}:room:{room}"


def chat_room_members(ns: str, room: str) -> str:
    """Who is in a room."""
    return f"{ns}:room:{room}:who"


def key_rooms(ns: str, key_id: int) -> str:
    """Rooms an API key is in, with their open sockets."""
    return f"{ns}:keyrooms:{key_id}"


# -- fleet and workers -------------------------------------------------------------------


def boot_request(ns: str, model: str) -> str:
    """Set while a boot of ``model`` is asked for: one request per boot, whoever asks."""
    return f"{ns}:boot:{model}"


def node_lock(ns: str, node_id: int) -> str:
    """One action at a time on a node."""
    return f"{ns}:nodelock:{node_id}"


def slots(ns: str, node_id: int | str) -> str:
    """The calls open on a node, with their leases (admission control)."""
    return f"{ns}:slots:{node_id}"


def affinity(ns: str, model_id: int | str, prefix: int | str) -> str:
    """The node that last served calls of a prefix of a model (``prefix``: its affinity)."""
    return f"{ns}:affinity:{model_id}:{prefix}"


def waiting(ns: str, model: str) -> str:
    """The calls of a model held in the edge for a free slot (a signal for the scaler)."""
    return f"{ns}:waiting:{model}"


def scale_memory(ns: str, model: str) -> str:
    """What the scaler's last decision on a model left for the next one."""
    return f"{ns}:scale:{model}"


def scale_lock(ns: str, model: str) -> str:
    """One scaling decision at a time for a model."""
    return f"{ns}:scalelock:{model}"


def dramatiq(ns: str) -> str:
    """The namespace Dramatiq's Redis broker puts its own keys under."""
    return f"{ns}:dramatiq"


# -- pub/sub -----------------------------------------------------------------------------


def events(ns: str) -> str:
    """Pub/sub channel of cache invalidations."""
    return f"{ns}:events"


#: Event: every API key changed (drop the whole key cache).
EVENT_KEYS = "keys"
#: Event: the models changed (reload the routing table).
EVENT_MODELS = "models"
#: Event: the nodes changed (reload the routing table).
EVENT_NODES = "nodes"


#: What every event about one API key starts with (:func:`key_event`).
KEY_EVENT_PREFIX = "key:"
#: What every event about one job starts with (:func:`job_event`).
JOB_EVENT_PREFIX = "job:"


def key_event(prefix: str) -> str:
    """Event: the API key ``prefix`` changed."""
    return f"{KEY_EVENT_PREFIX}{prefix}"


def job_event(job_id: str) -> str:
    """Event: the job ``job_id`` changed state (its waiters look again)."""
    return f"{JOB_EVENT_PREFIX}{job_id}"
