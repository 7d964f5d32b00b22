"""``portal dev``: everything on embedded defaults, for a first look.

Migrates the SQLite database, uses (or starts) Redis, runs one simulated GPU
node per demo model, a background worker and the scheduler, makes a fresh demo
key with credit (and, without PORTAL_ADMIN_TOKEN, an admin token for this run's
console), prints how to call the portal, and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable

import httpx

from edge.billing.money import format_usd, parse_usd
from edge.db import DatabaseUnavailable, close_database, migrate, open_database
from edge.settings import Settings
from edge.store.embedded import NoRedis, redis_for_database

__all__ = ["register"]

#: Demo models: (input, output) USD per 1M tokens, and simulated speed in tokens/s.
DEMO_PRICES = {"demo-small": ("0.10", "0.30", 80.0), "demo-large": ("0.50", "1.50", 30.0)}
#: Opening credit of the demo key, USD.
DEMO_CREDIT = "5.00"
#: Credit of a key made on the web page, USD, unless PORTAL_SIGNUP_CREDIT says otherwise.
DEV_SIGNUP_CREDIT = "1.00"
#: Seconds the worker, scheduler and nodes get to stop before they are killed.
STOP_GRACE = 10.0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dev", help="run the portal on embedded defaults with demo data")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.set_defaults(func=run)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    changes = {k: v for k, v in (("host", args.host), ("port", args.port),
                                 ("workers", args.workers)) if v is not None}
    if settings.signup_credit == "0":  # payments are off here: a key from the page
        changes["signup_credit"] = DEV_SIGNUP_CREDIT  # must be able to chat
    made_token = not settings.admin_token
    if made_token:  # the console and the admin API, for this run only
        changes["admin_token"] = os.environ["PORTAL_ADMIN_TOKEN"] = secrets.token_urlsafe(18)
    settings = settings.replace(**changes)
    asyncio.run(migrate(settings.effective_database_url))
    try:
        resolved = redis_for_database(settings, start=True)
    except (NoRedis, DatabaseUnavailable) as exc:
        print(f"portal: {exc}", file=sys.stderr)
        return 1
    assert resolved.url is not None  # start=True: one answers, or NoRedis was raised
    settings = settings.replace(redis_url=resolved.url)
    os.environ["PORTAL_REDIS_URL"] = resolved.url  # for the worker and the scheduler
    children: list[subprocess.Popen[bytes]] = []
    # The children have no terminal: when ours hangs up, or we are told to stop before
    # the edge takes over SIGTERM, leave through `finally`, which stops them.
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _leave)
    try:
        urls = {}
        for model in _demo_models(settings):
            port = free_port()
            speed = DEMO_PRICES.get(model, ("0", "0", 50.0))[2]
            children.append(_spawn(
                [sys.executable, "-m", "simnode", "--model", model, "--port", str(port),
                 "--tokens-per-second", str(speed), "--ttft", "0.15"]))
            urls[model] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            _wait_healthy(url)
        secret = asyncio.run(_seed(settings, urls))
        # Queued jobs and health checks need the background actors.
        children.append(_spawn([sys.executable, "-m", "edge.cli", "worker",
                                "--processes", "1"]))
        children.append(_spawn([sys.executable, "-m", "edge.cli", "scheduler"]))
        _banner(settings, secret, made_token=made_token)
        from edge.cli.serve import serve

        return serve(settings)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan them
        _stop(reversed(children))
        resolved.close()  # Redis last: the others use it until they are gone


def _leave(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """A child in its own process group: a Ctrl-C reaches only us, and we stop them
    in order, each with everything it forked."""
    return subprocess.Popen(command, start_new_session=True)


def _stop(children: Iterable[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
    """SIGTERM to each child, then SIGKILL to what is left of its group after ``grace``.

    Only the child itself is asked: it stops what it forked (Dramatiq's main process
    forwards the signal; a worker process signalled twice would hang in its exit).
    """
    children = list(children)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child, signal.SIGKILL)  # also the group's forked workers
        child.wait()


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _demo_models(settings: Settings) -> list[str]:
    return [m.strip() for m in settings.demo_models.split(",") if m.strip()]


def _wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"simulated node at {url} did not start")


async def _seed(settings: Settings, urls: dict[str, str]) -> str:
    """Demo models pointing at this run's simulated nodes, and a fresh demo key."""
    from edge.db.models import LLM, ApiKey, Node, NodeState
    from edge.identity.accounts import create_key, revoke_key
    from edge.identity.pepper import load_pepper
    from edge.store.hotstore import HotStore, connect_redis

    await open_database(settings.effective_database_url)
    store = HotStore(connect_redis(settings.redis_url, checked_for=settings.redis_namespace),
                     settings.redis_namespace)
    try:
        for name, url in urls.items():
            price_in, price_out, _speed = DEMO_PRICES.get(name, ("0.10", "0.30", 50.0))
            model, _ = await LLM.get_or_create(
                name=name, defaults={"served_name": name, "input_price": parse_usd(price_in),
                                     "output_price": parse_usd(price_out)})
            await Node.filter(model=model, instance_id=None).exclude(url=url).delete()
            await Node.get_or_create(model=model, url=url, instance_id=None,
                                     defaults={"state": NodeState.RUNNING})
        for old in await ApiKey.filter(name="demo", revoked_at=None):
            await revoke_key(old, store=store)
        created = await create_key(name="demo", pepper=load_pepper(settings),
                                   credit=parse_usd(DEMO_CREDIT), rpm=settings.default_rpm,
                                   tpm=settings.default_tpm, store=store)
        await store.publish("models")
        return created.secret
    finally:
        await store.close()
        await close_database()


def _banner(settings: Settings, secret: str, *, made_token: bool) -> None:
    url = settings.effective_public_url
    # A token the operator chose is theirs to know; only one made for this run is shown.
    console_token = f"the admin token\n    {settings.admin_token}" if made_token \
        else "PORTAL_ADMIN_TOKEN"
    print(f"""
  Inference Portal is starting at {url}

  Demo API key (${format_usd(parse_usd(DEMO_CREDIT))} of credit; shown once; a restart
  makes a new one):
    {secret}

  Keys made on the web page start with ${format_usd(parse_usd(settings.signup_credit))}.
  Operate it from another shell with .venv/bin/portal (keys, models, nodes, ledger),
  or from the console at {url}/admin/console with {console_token}

  Try it:
    curl {url}/v1/chat/completions -H "Authorization: Bearer {secret}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "demo-small", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  Or with the openai SDK (.venv/bin/pip install openai):
    from openai import OpenAI
    client = OpenAI(base_url="{url}/v1", api_key="{secret}")
    client.chat.completions.create(model="demo-small",
                                   messages=[{{"role": "user", "content": "Hello"}}])
""", flush=True)
