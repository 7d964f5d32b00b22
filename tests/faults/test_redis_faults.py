"""Money survives Redis: each of Redis's routine failures, under traffic, loses nothing.

One portal (two edge workers and the bookkeeper) on a Redis the test controls,
one simnode. Each case runs traffic (streaming and not) before, during and after
a fault, then waits for the books to settle and checks, for every key:

- SQL balance = the sum of its ledger = the live balance in Redis;
- what it was charged = the cost of the tokens its clients received;
- no reference twice (SQL's unique indexes) and no credit above what was paid.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.billing.money import parse_usd, token_cost
from tests.support import redis_control
from tests.support.deployment import deploy
from tests.support.portal import PortalServer
from tests.support.services import sql_query

pytestmark = pytest.mark.slow

INPUT_PRICE, OUTPUT_PRICE = "0.50", "1.50"
CREDIT = "50"
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


def cost(prompt: int, completion: int) -> int:
    return token_cost(prompt, completion, parse_usd(INPUT_PRICE), parse_usd(OUTPUT_PRICE))


class Books:
    """What the clients of one key received, and the checks on the portal's books."""

    def __init__(self, portal: PortalServer) -> None:
        self.portal = portal
        self.key_id, self.key = portal.create_key(CREDIT)
        self.paid = parse_usd(CREDIT)  # micro-dollars credited
        self.received = 0  # micro-dollars of tokens the clients received
        self.answers = 0
        self.refused = 0
        #: Micro-dollars at most that requests cut by a dying process may be charged:
        #: the client got part or none of them, the reaper charges their progress.
        self.uncertain = 0
        self.lock = threading.Lock()

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def call(self, *, stream: bool, tokens: int = 12) -> None:
        body = {"model": "m1", "messages": MESSAGES, "max_tokens": tokens, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        try:
            got = self._stream(body) if stream else self._once(body)
        except httpx.TransportError:  # its edge worker died under it
            with self.lock:
                self.refused += 1
                self.uncertain += cost(len(json.dumps(body)), tokens)
            return
        with self.lock:
            if got is None:
                self.refused += 1
            else:
                self.answers += 1
                self.received += got

    def _once(self, body: dict) -> int | None:
        response = httpx.post(self.portal.url + "/v1/chat/completions", json=body,
                              headers=self.headers, timeout=30)
        if response.status_code != 200:
            assert response.status_code in (503, 429), response.text  # never a wrong answer
            return None
        usage = response.json()["usage"]
        return cost(usage["prompt_tokens"], usage["completion_tokens"])

    def _stream(self, body: dict) -> int | None:
        with httpx.stream("POST", self.portal.url + "/v1/chat/completions", json=body,
                          headers=self.headers, timeout=30) as response:
            if response.status_code != 200:
                response.read()
                assert response.status_code in (503, 429), response.text
                return None
            usage = None
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    assert "error" not in chunk, chunk
                    if chunk.get("usage"):
                        usage = chunk["usage"]
            assert usage is not None, "a complete stream ends with the usage it asked for"
            return cost(usage["prompt_tokens"], usage["completion_tokens"])

    def sql(self, query: str, *params: object) -> list[tuple]:
        url = f"sqlite://{self.portal.root / 'data' / 'portal.sqlite3'}"
        return sql_query(url, query, *params)

    def live(self) -> int:
        response = httpx.get(self.portal.url + "/v1/key", headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]["balance_micros"]

    def settled(self, timeout: float = 40.0) -> None:
        """Wait until SQL, the ledger and Redis agree, then check the money.

        Charged is exactly what the clients received, plus at most :attr:`uncertain`
        for the requests whose edge worker died under them.
        """
        deadline = time.monotonic() + timeout
        while True:
            (balance, total), = self.sql(
                "SELECT balance, (SELECT COALESCE(SUM(amount), 0) FROM ledger "
                "WHERE account_id = accounts.id) FROM accounts WHERE id=?", self.key_id)
            try:
                live = self.live()
            except AssertionError:
                live = None
            charged = self.paid - balance
            if balance == total == live and \
                    self.received <= charged <= self.received + self.uncertain:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"books of key {self.key_id} never agreed: SQL {balance}, ledger "
                            f"{total}, live {live}; charged {charged}, clients received "
                            f"{self.received} (+ at most {self.uncertain} cut; "
                            f"{self.answers} answers, {self.refused} refused)\n"
                            f"{self.portal.log()}")
            time.sleep(0.25)
        assert balance >= 0
        (dupes,), = self.sql("SELECT COUNT(*) - COUNT(DISTINCT reference) FROM ledger")
        assert dupes == 0
        (credited,), = self.sql("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account_id=? "
                                "AND kind='topup'", self.key_id)
        assert credited == self.paid


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    root: Path = tmp_path_factory.mktemp("faults")
    with redis_control.controlled_redis_server() as redis, deploy(
            root, redis.url, model="m1", served="sim-m1",
            node_args=("--reply-tokens", "12", "--tokens-per-second", "400"),
            input_price=INPUT_PRICE, output_price=OUTPUT_PRICE,
            env={"PORTAL_RESERVATION_GRACE": "1", "PORTAL_JOB_LEASE": "3",
                 "PORTAL_JOBS_SWEEP_INTERVAL": "1"}) as made:
        yield made.portal, redis


def traffic(books: Books, seconds: float, *, workers: int = 4) -> None:
    """Calls, streaming and not, for ``seconds``, ``workers`` at a time."""
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            books.call(stream=index % 2 == 0)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(loop, range(workers)))


def heals(portal: PortalServer) -> int:
    return (portal.root / "serve.log").read_text().count("hot store healed")


def around(books: Books, fault, *, before: float = 1.0, after: float = 2.0,
           heal: bool = True) -> None:
    """Traffic before, during and after ``fault()``; a lost Redis is healed."""
    healed = heals(books.portal)
    runner = threading.Thread(target=traffic, args=(books, before + after + 1.0))
    runner.start()
    time.sleep(before)
    fault()
    runner.join()
    traffic(books, 0.5, workers=2)  # and once everything is back
    assert (heals(books.portal) > healed) == heal


def test_flushall(rig) -> None:
    portal, redis = rig
    books = Books(portal)
    around(books, redis.flushall)
    books.settled()
    assert books.answers > 10


def test_restart_without_persistence(rig) -> None:
    portal, redis = rig
    books = Books(portal)
    around(books, redis.restart_empty)
    books.settled()
    assert books.answers > 10


def test_restart_from_an_older_snapshot(rig) -> None:
    portal, redis = rig
    books = Books(portal)
    traffic(books, 1.0)
    snapshot = redis.snapshot()
    top_up = portal.cli("keys", "topup", str(books.key_id), "1.00")  # after the snapshot
    assert top_up.returncode == 0
    books.paid += parse_usd("1.00")
    around(books, lambda: redis.restore(snapshot))
    books.settled()
    assert books.answers > 10


def test_pause(rig) -> None:
    portal, redis = rig
    books = Books(portal)
    around(books, lambda: redis.pause(3.0), after=5.0, heal=False)
    books.settled()
    assert books.answers > 10


def bookkeeper_pid(portal: PortalServer, redis_port: int) -> int:
    """The serve process's child that talks to Redis but does not listen: the bookkeeper."""
    import psutil

    workers = set(portal.worker_pids())
    assert portal.process is not None
    for child in psutil.Process(portal.process.pid).children(recursive=True):
        if child.pid in workers:
            continue
        if any(c.raddr and c.raddr.port == redis_port for c in child.net_connections("tcp")):
            return child.pid
    raise AssertionError("no bookkeeper process found")


def test_an_edge_worker_killed_under_traffic(rig) -> None:
    portal, _redis = rig
    books = Books(portal)
    victim = portal.worker_pids()[0]
    around(books, lambda: os.kill(victim, signal.SIGKILL), heal=False)
    books.settled(timeout=60)
    assert books.answers > 10
    deadline = time.monotonic() + 20  # the watchdog brings the worker back
    while len(portal.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(portal.worker_pids()) == 2


def test_the_bookkeeper_killed_under_traffic(rig) -> None:
    portal, redis = rig
    books = Books(portal)
    victim = bookkeeper_pid(portal, redis.port)
    around(books, lambda: os.kill(victim, signal.SIGKILL), heal=False)
    books.settled(timeout=90)  # a new writer claims the dead one's entries after 30 s
    assert books.uncertain == 0  # no client saw the bookkeeper go
    assert bookkeeper_pid(portal, redis.port) != victim


def test_a_cli_top_up_while_redis_is_paused(rig) -> None:
    portal, redis = rig
    books = Books(portal)
    traffic(books, 0.5)
    with redis.paused(limit=10):
        top_up = portal.cli("keys", "topup", str(books.key_id), "2.00", check=False)
    if top_up.returncode == 0:
        books.paid += parse_usd("2.00")
    else:  # refused: nothing may have been credited on either side
        assert "Redis" in top_up.stderr or "rebuilding" in top_up.stderr, top_up.stderr
    traffic(books, 1.0)
    books.settled()


def test_the_job_worker_killed_under_jobs_and_traffic(rig) -> None:
    portal, _redis = rig
    books = Books(portal)
    body = {"model": "m1", "messages": MESSAGES, "max_tokens": 40, "ignore_eos": True}
    portal.start_worker("worker")
    try:
        jobs = [httpx.post(portal.url + "/v1/jobs", json=body, headers=books.headers,
                           timeout=10).json()["id"] for _ in range(8)]
        around(books, lambda: portal.kill("worker"), heal=False)
        portal.start_worker("worker2")
        portal.spawn("scheduler", "scheduler")  # its sweep finds the orphaned jobs
        for job_id in jobs:
            deadline = time.monotonic() + 60
            while True:
                job = httpx.get(portal.url + f"/v1/jobs/{job_id}?wait=5",
                                headers=books.headers, timeout=10).json()
                if job["status"] in ("succeeded", "failed", "expired") and "cost_micros" in job:
                    break
                assert time.monotonic() < deadline, job
            assert job["status"] == "succeeded", job
            usage = job["result"]["usage"]
            assert job["cost_micros"] == cost(usage["prompt_tokens"], usage["completion_tokens"])
            books.received += job["cost_micros"]
        books.settled()
        (rows,), = books.sql("SELECT COUNT(*) FROM usage_log WHERE key_id=? AND endpoint "
                             "LIKE 'job-%'", books.key_id)
        assert rows == len(jobs)  # each job charged once
    finally:
        for name in ("worker", "worker2", "scheduler"):
            if name in portal.children:
                portal.stop_child(name)
