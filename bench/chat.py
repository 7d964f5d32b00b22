"""Benchmark of the chat: fan-out rate and latency, and idle sockets per worker.

    python bench/chat.py [--members 100] [--rate 20] [--seconds 10] [--idle 5000]

1. Fan-out: ``--members`` sockets in one room, spread over the 2 workers of a
   portal; one member sends ``--rate`` messages a second (``ask: false``, each
   carrying its send time); every member records when each arrives. Reports the
   events delivered per second and the fan-out latency (send → arrival at each
   member) p50/p99. Then the same with a model reply streaming to the room.
2. Idle sockets: a portal with ONE worker; ``--idle`` sockets open, authenticate
   and join rooms, then sit. Reports how many the worker holds and its memory
   (RSS) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simnode.testing import start_simnode
from tests.support.chat import clients_on_both_workers
from tests.support.portal import PortalServer
from tests.support.services import redis_service


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def fan_out(portal: PortalServer, members: int, rate: float, seconds: float) -> dict:
    keys = [portal.create_key("10")[1] for _ in range(min(members, 20))]
    clients = await clients_on_both_workers(portal.url, "bench", [
        keys[i % len(keys)] for i in range(members)])
    workers = {c.worker for c in clients}
    latencies: list[float] = []
    # A socket may send 5 frames a second: spread the rate over enough senders.
    senders = clients[:max(1, min(len(clients), int(rate // 4) + 1))]
    sender = clients[0]
    sent = int(rate * seconds)
    start = time.perf_counter()
    for i in range(sent):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await senders[i % len(senders)].send(
            type="message", text=json.dumps({"t": time.time(), "i": i}), ask=False)
    await asyncio.sleep(2.0)
    for client in clients:
        for event in client.events:
            if event["type"] == "message" and event["text"].startswith('{"t"'):
                latencies.append((event["_at"] - json.loads(event["text"])["t"]) * 1000)
    delivered = len(latencies)
    refused = sum(e["type"] == "error" for c in clients for e in c.events)
    result = {
        "members": members, "workers": len(workers), "messages_sent": sent,
        "senders": len(senders), "refused": refused,
        "events_delivered": delivered, "expected": sent * members,
        "events_per_second": round(delivered / seconds, 1),
        "fanout_p50_ms": round(percentile(latencies, 50), 2),
        "fanout_p99_ms": round(percentile(latencies, 99), 2),
        "fanout_max_ms": round(max(latencies), 2),
    }
    # A model reply streaming to the whole room.
    for client in clients:
        client.events.clear()
    await sender.send(type="message", text="Tell me a story.", params={"max_tokens": 200})
    done = await sender.wait_for("done", timeout=60)
    await asyncio.sleep(1.0)
    deltas = [sum(e["type"] == "delta" for e in c.events) for c in clients]
    result["reply_tokens"] = done["usage"]["completion_tokens"]
    result["reply_deltas_per_member_min"] = min(deltas)
    for client in clients:
        await client.close()
    return result


async def idle_sockets(portal: PortalServer, count: int) -> dict:
    (worker,) = portal.worker_pids()
    process = psutil.Process(worker)
    before = process.memory_info().rss
    key = portal.create_key("1")[1]
    url = portal.url.replace("http://", "ws://")
    sockets = []
    limit = asyncio.Semaphore(100)

    async def open_one(i: int) -> None:
        async with limit:
            socket = await websockets.connect(f"{url}/ws/chat/idle{i % 10}", open_timeout=60,
                                              ping_interval=None)
            await socket.send(json.dumps({"type": "auth", "key": key}))
            while json.loads(await socket.recv())["type"] != "ready":
                pass
            sockets.append(socket)

    started = time.perf_counter()
    results = await asyncio.gather(*(open_one(i) for i in range(count)), return_exceptions=True)
    opened_in = time.perf_counter() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    await asyncio.sleep(3.0)
    after = process.memory_info().rss
    # Prove they are alive: a message to one room reaches its members.
    alive = sockets[0]
    await alive.send(json.dumps({"type": "ping"}))
    pong = json.loads(await asyncio.wait_for(alive.recv(), 10))
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    return {
        "sockets_open": len(sockets), "failed": len(failures),
        "first_failure": repr(failures[0]) if failures else None,
        "opened_in_seconds": round(opened_in, 1),
        "worker_rss_before_mb": round(before / 2**20, 1),
        "worker_rss_after_mb": round(after / 2**20, 1),
        "kb_per_socket": round((after - before) / max(1, len(sockets)) / 1024, 1),
        "still_answering": pong["type"] in ("pong", "presence"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=int, default=5000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 1000)),
                                                hard))
    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(),
                                              "platform": platform.platform(),
                                              "python": platform.python_version()},
                                  "settings": vars(args)}
    with redis_service() as redis_url, tempfile.TemporaryDirectory() as tmp, \
            start_simnode("--model", "bench", "--tokens-per-second", "50") as node:
        for workers, label in ((2, "fanout"), (1, "idle")):
            if label == "idle" and not args.idle:
                continue
            # One key holds every idle socket: lift its per-key limit, which is a
            # policy for customers, not what this measures (a worker's capacity).
            portal = PortalServer(Path(tmp) / label, redis_url, workers=workers,
                                  env={"PORTAL_CHAT_ROOMS_PER_KEY": "100",
                                       "PORTAL_CHAT_SOCKETS_PER_KEY": str(args.idle + 100)})
            portal.cli("migrate")
            portal.add_model("bench")
            portal.add_node("bench", node.url)
            with portal:
                if label == "fanout":
                    results["fanout"] = asyncio.run(fan_out(portal, args.members, args.rate,
                                                            args.seconds))
                else:
                    results["idle"] = asyncio.run(idle_sockets(portal, args.idle))
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"chat-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results,
                                                                                indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
