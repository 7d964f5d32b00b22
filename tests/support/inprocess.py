"""The in-process layer: the real portal and simnode, served in the test's own event loop.

One test builds, in well under a second:

- an :class:`InProcessPortal`: ``edge.app.create_app(settings)`` served on a real socket by
  Sanic's own server in this loop, on a SQLite file of its own (copied from a database
  migrated once per session) and the real Redis under a namespace of its own, emptied after;
- one or more :class:`NodeDouble`: simnode's app (the double every suite uses) in the same
  loop, on a real socket, registered in the portal as ``running`` and ``healthy``. Its next
  calls can be scripted: ``node.script(Refuse(503), Answer())``.

A test talks HTTP to ``portal.client`` (an ``httpx.AsyncClient`` on ``portal.url``), reads the
money through :meth:`InProcessPortal.drain_ledger`, :meth:`InProcessPortal.usage` and
:meth:`InProcessPortal.assert_books_balance`, and what each node was asked in ``node.calls``.

What is not here: several worker processes, the bookkeeper process (:meth:`drain_ledger` runs
its writer on demand), Nginx, signals. The end-to-end suites keep those.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sanic import Sanic

from tests.support.node_double import (
    Answer,
    BreakAfter,
    Drop,
    NodeAction,
    NodeCall,
    NodeDouble,
    Pace,
    Refuse,
    Stall,
    start_node,
    stream_events,
)
from tests.support.serving import serve_app

# The node double's names are re-exported: a test imports everything from here.
__all__ = [
    "Answer",
    "BreakAfter",
    "Drop",
    "InProcessPortal",
    "NodeAction",
    "NodeCall",
    "NodeDouble",
    "Pace",
    "Refuse",
    "Stall",
    "inprocess_portal",
    "migrated_template",
    "node_doubles",
    "open_portal",
    "sqlite_template",
    "start_node",
    "stream_events",
]


# -- the portal ---------------------------------------------------------------------------
_TEMPLATES: dict[str, Path] = {}


async def migrated_template(directory: Path) -> Path:
    """A SQLite file with every migration applied, made once per session and copied per test."""
    from edge.db import migrate

    if "sqlite" not in _TEMPLATES:
        path = directory / "template.sqlite3"
        await migrate(f"sqlite://{path}")
        _TEMPLATES["sqlite"] = path
    return _TEMPLATES["sqlite"]


class InProcessPortal:
    """One portal worker in this loop: its app, settings, HTTP client and books.

    Built by :func:`open_portal`; ``portal.ctx`` is the worker's ``PortalContext``.
    """

    def __init__(self, app: Sanic, url: str) -> None:
        self.app = app
        self.url = url
        self.client = httpx.AsyncClient(base_url=url, timeout=30)
        self._writer: Any = None
        self._worker: Any = None

    @property
    def ctx(self) -> Any:
        return self.app.ctx.portal

    @property
    def settings(self) -> Any:
        return self.app.ctx.settings

    @property
    def database_url(self) -> str:
        return self.settings.effective_database_url

    # -- the catalogue ----------------------------------------------------------------
    async def add_model(self, name: str, *, served_name: str | None = None,
                        input_price: str = "0.50", output_price: str = "1.50",
                        context: int = 8192, kind: str = "generate") -> Any:
        """Offer a model (prices in USD per 1M tokens) of ``kind``; returns its row."""
        from edge.billing.money import parse_usd
        from edge.db.models import LLM, ModelKind

        row = await LLM.create(name=name, served_name=served_name or name,
                               input_price=parse_usd(input_price),
                               output_price=parse_usd(output_price), context_length=context,
                               kind=ModelKind(kind))
        await self.ctx.registry.reload()
        return row

    async def add_node(self, model: str, node: NodeDouble | str, *, state: str = "running",
                       healthy: bool = True) -> int:
        """Register a node (a double, or any URL) for ``model``; routed to at once."""
        from edge.db.models import LLM, Node, NodeState

        url = node.url if isinstance(node, NodeDouble) else node
        row = await Node.create(model_id=(await LLM.get(name=model)).id, url=url,
                                state=NodeState(state), healthy=healthy, instance_id=None,
                                region="", instance_type="")
        if isinstance(node, NodeDouble):
            node.id = row.id
        await self.ctx.registry.reload()
        return row.id

    async def create_key(self, credit: str = "10", **limits: Any) -> tuple[int, str]:
        """A key with ``credit`` USD (``rpm=``, ``tpm=``, ``expires_at=``); ``(id, secret)``."""
        from edge.billing.money import parse_usd
        from edge.identity.accounts import create_key

        created = await create_key(
            name="test", pepper=self.ctx.pepper, credit=parse_usd(credit),
            rpm=limits.pop("rpm", self.settings.default_rpm),
            tpm=limits.pop("tpm", self.settings.default_tpm), store=self.ctx.store, **limits)
        return created.row.id, created.secret

    # -- calls ----------------------------------------------------------------------------
    async def chat(self, key: str, model: str, *, stream: bool = False,
                   content: str = "Hello there.", **body: Any) -> httpx.Response:
        """``POST /v1/chat/completions`` (read whole, streaming or not)."""
        payload = {"model": model, "messages": [{"role": "user", "content": content}],
                   "stream": stream, **body}
        return await self.client.post("/v1/chat/completions", json=payload,
                                      headers={"authorization": f"Bearer {key}"})

    async def answer_job(self, job_id: str) -> str:
        """Answer a submitted job in this loop, as ``portal worker``'s ``run_job`` would.

        The worker's runtime is opened once (``open_runtime``, on this portal's database,
        Redis namespace and settings) and kept until the portal closes. The job's queue
        message stays in Redis: nothing consumes it. Returns the outcome
        :func:`dramatiq_actors.jobs.answer_job` reports (``done``, ``failed``, ``waiting``…).
        """
        from dramatiq_actors import runtime as worker_runtime
        from dramatiq_actors.jobs import answer_job

        if self._worker is None:
            self._worker = await _open_worker_runtime(self.settings)
        previous, worker_runtime._current = worker_runtime._current, self._worker
        try:
            return await answer_job(job_id)
        finally:
            worker_runtime._current = previous

    # -- the books ------------------------------------------------------------------------
    async def drain_ledger(self) -> int:
        """Write the ledger stream into SQL, as the bookkeeper does; returns entries written."""
        from edge.billing.ledger_writer import LedgerWriter

        if self._writer is None:
            self._writer = LedgerWriter(self.ctx.store, consumer="inprocess")
        total = 0
        while written := await self._writer.drain_once(claim_idle_ms=0):
            total += written
        return total

    async def sql(self, query: str, *params: Any) -> list[tuple]:
        """A query on the portal's database (``?`` placeholders), after the ledger is drained."""
        from tortoise import connections

        await self.drain_ledger()
        _count, rows = await connections.get("default").execute_query(query, list(params))
        return [tuple(row.values()) if hasattr(row, "values") else tuple(row) for row in rows]

    async def usage(self, key_id: int) -> list[dict[str, Any]]:
        """The key's usage rows, oldest first (the ledger drained first)."""
        from edge.db.models import UsageRecord

        await self.drain_ledger()
        rows = await UsageRecord.filter(key_id=key_id).order_by("id").values()
        return list(rows)

    async def live_balance(self, key_id: int) -> int:
        """The balance the hot path sees (Redis) of the key's account, in micro-dollars."""
        from edge.db.models import ApiKey

        return await self.ctx.billing.balance((await ApiKey.get(id=key_id)).account_id)

    async def assert_books_balance(self, key_id: int) -> int:
        """SQL's balance of the key's account = the sum of its ledger = the live balance,
        never negative."""
        from edge.db.models import Account, ApiKey, LedgerEntry

        await self.drain_ledger()
        account_id = (await ApiKey.get(id=key_id)).account_id
        balance = (await Account.get(id=account_id)).balance
        total = sum(await LedgerEntry.filter(account_id=account_id)
                    .values_list("amount", flat=True))
        assert balance == total, (balance, total)
        assert balance >= 0
        assert await self.live_balance(key_id) == balance
        return balance

    async def wait_settled(self, timeout: float = 5.0) -> None:
        """Wait until no reservation of this namespace is open (every call settled)."""
        store = self.ctx.store
        deadline = asyncio.get_running_loop().time() + timeout
        pattern = store.reservation("*")
        while [k async for k in store.client.scan_iter(pattern, count=1000)]:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("reservations still open")
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.upstream.aclose()
            await worker.store.close()


async def _open_worker_runtime(settings: Any) -> Any:
    """``dramatiq_actors.runtime.open_runtime`` on the database this process already opened."""
    import edge.db
    from dramatiq_actors import runtime as worker_runtime

    async def already_open(_url: str) -> None:
        return None

    previous = worker_runtime._current
    real, edge.db.open_database = edge.db.open_database, already_open
    try:
        return await worker_runtime.open_runtime(settings)
    finally:
        edge.db.open_database = real
        worker_runtime._current = previous


def _settings(root: Path, redis_url: str, database_url: str, **overrides: Any) -> Any:
    from edge.settings import Settings

    namespace = f"ip{uuid.uuid4().hex[:10]}"
    return Settings(data_dir=str(root / "data"), database_url=database_url, redis_url=redis_url,
                    redis_namespace=namespace, embedded_redis="never",
                    key_pepper="test-pepper-" + namespace, log_level="WARNING",
                    **overrides)


@asynccontextmanager
async def open_portal(root: Path, redis_url: str, *, template: Path | None = None,
                      database_url: str | None = None, migrated: bool = False,
                      **settings: Any) -> AsyncIterator[InProcessPortal]:
    """Serve a new portal worker in this loop; its Redis namespace is emptied after.

    Parameters:
      root: a directory of its own (the SQLite file, the spool).
      redis_url: the shared test Redis.
      template: a migrated SQLite file to copy (see :func:`migrated_template`).
      database_url: another database instead (a fresh PostgreSQL one), migrated here
        unless ``migrated`` (a copy of a migrated one).
      settings: :class:`edge.settings.Settings` fields (``upstream_timeout=1.0``…).
    """
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from edge.app import create_app
    from edge.db import migrate
    from edge.store.hotstore import connect_redis

    (root / "data").mkdir(parents=True, exist_ok=True)
    database = root / "data" / "portal.sqlite3"
    if database_url is not None:
        EXECUTOR_CACHE.clear()
        if not migrated:
            await migrate(database_url)
    elif template is not None:
        shutil.copyfile(template, database)
    else:
        await migrate(f"sqlite://{database}")
    config = _settings(root, redis_url, database_url or f"sqlite://{database}", **settings)
    app = create_app(config, name=f"portal-inprocess-{uuid.uuid4().hex[:10]}")
    portal: InProcessPortal | None = None
    try:
        async with serve_app(app) as url:
            portal = InProcessPortal(app, url)
            yield portal
            await portal.aclose()
    finally:
        EXECUTOR_CACHE.clear()  # Tortoise caches compiled queries by table, not database
        client = connect_redis(redis_url)
        try:
            keys = [k async for k in client.scan_iter(f"{config.redis_namespace}:*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start:start + 500])
        finally:
            await client.aclose()


# -- fixtures (registered for every suite by tests/conftest.py) ---------------------------
@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per test process; every in-process portal starts from a copy."""
    return await migrated_template(tmp_path_factory.mktemp("template"))


@pytest.fixture
async def node_doubles() -> AsyncIterator[Callable[..., Awaitable[NodeDouble]]]:
    """Start node doubles: ``node = await node_doubles("sim-m1", reply_tokens=4)``."""
    started: list[NodeDouble] = []

    async def start(model: str, **options: Any) -> NodeDouble:
        node = await NodeDouble(model, **options).start()
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        await node.close()


@pytest.fixture
async def inprocess_portal(tmp_path: Path, redis_url: str, sqlite_template: Path,
                           request: pytest.FixtureRequest) -> AsyncIterator[InProcessPortal]:
    """A portal worker in this loop, on its own SQLite copy and Redis namespace.

    Settings come from ``@pytest.mark.portal_settings(upstream_timeout=1.0, ...)``.
    """
    marker = request.node.get_closest_marker("portal_settings")
    settings = marker.kwargs if marker else {}
    async with open_portal(tmp_path, redis_url, template=sqlite_template, **settings) as made:
        yield made
