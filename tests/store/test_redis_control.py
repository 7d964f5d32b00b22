"""The Redis fault harness does what the fault suites rely on, proven with a real client.

Every test runs its own Valkey on a free port (never the shared Redis).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.support import redis_control
from tests.support.redis_control import ControlledRedis, RedisBinaryMissing

# An assignment, not an import, so that ruff does not see the argument as a redefinition.
controlled_redis = redis_control.controlled_redis


def write(server: ControlledRedis, **values: str) -> None:
    with server.client() as client:
        client.mset(values)


def read(server: ControlledRedis, *keys: str) -> list[str | None]:
    with server.client() as client:
        return [None if value is None else value.decode() for value in client.mget(keys)]


def test_fixture_gives_a_running_server_of_its_own(controlled_redis: ControlledRedis) -> None:
    assert controlled_redis.running
    assert controlled_redis.port != 6379
    assert controlled_redis.url == f"redis://127.0.0.1:{controlled_redis.port}/0"
    with redis.Redis.from_url(controlled_redis.url, socket_timeout=2) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.dbsize() == 0


def test_data_survives_stop_and_start_with_aof(controlled_redis: ControlledRedis) -> None:
    write(controlled_redis, a="1", b="2")
    port = controlled_redis.port
    controlled_redis.stop()
    assert not controlled_redis.running
    with pytest.raises(redis.ConnectionError):
        controlled_redis.client(timeout=0.5).ping()
    controlled_redis.start()
    assert controlled_redis.port == port
    assert read(controlled_redis, "a", "b") == ["1", "2"]
    assert not controlled_redis.rdb_path.exists()  # it came from the AOF, not an RDB


def test_data_survives_a_kill_with_fsync_always(controlled_redis: ControlledRedis) -> None:
    controlled_redis.stop()
    controlled_redis.start(appendfsync="always")
    write(controlled_redis, a="1")
    controlled_redis.kill()
    assert not controlled_redis.running
    controlled_redis.start(appendfsync="always")
    assert read(controlled_redis, "a") == ["1"]


def test_without_aof_a_restart_loses_the_data(controlled_redis: ControlledRedis) -> None:
    controlled_redis.stop()
    controlled_redis.start(appendonly=False)
    write(controlled_redis, a="1")
    controlled_redis.restart()
    assert read(controlled_redis, "a") == [None]


def test_restart_empty_loses_everything(controlled_redis: ControlledRedis) -> None:
    write(controlled_redis, a="1")
    controlled_redis.snapshot()  # an RDB too: it must go as well
    url = controlled_redis.url
    controlled_redis.restart_empty()
    assert controlled_redis.url == url
    with controlled_redis.client() as client:
        assert client.dbsize() == 0
    controlled_redis.restart()  # and nothing comes back from disk later
    with controlled_redis.client() as client:
        assert client.dbsize() == 0


def test_restore_goes_back_to_the_snapshot(controlled_redis: ControlledRedis) -> None:
    write(controlled_redis, before="1", changed="old")
    snapshot = controlled_redis.snapshot()
    assert snapshot.suffix == ".rdb" and snapshot.is_file()
    assert snapshot.parent != controlled_redis.data_dir
    write(controlled_redis, after="1", changed="new")
    with controlled_redis.client() as client:
        client.delete("before")

    controlled_redis.restore(snapshot)
    assert read(controlled_redis, "before", "changed", "after") == ["1", "old", None]
    with controlled_redis.client() as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}

    # AOF is back on after the restore: the restored data survives a restart.
    controlled_redis.restart()
    assert read(controlled_redis, "before", "changed", "after") == ["1", "old", None]
    with pytest.raises(FileNotFoundError):
        controlled_redis.restore(controlled_redis.root / "missing.rdb")


def test_pause_makes_ping_time_out_then_answer(controlled_redis: ControlledRedis) -> None:
    write(controlled_redis, a="1")
    held = controlled_redis.client(timeout=0.3)
    assert held.ping()  # a connection open before the pause stalls too
    controlled_redis.pause(1.0)
    assert controlled_redis.is_paused
    with pytest.raises(redis.TimeoutError):
        held.ping()
    with pytest.raises(redis.TimeoutError):
        controlled_redis.client(timeout=0.3).ping()
    deadline = time.monotonic() + 3
    while controlled_redis.is_paused and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not controlled_redis.is_paused
    assert held.ping()
    assert read(controlled_redis, "a") == ["1"]
    held.close()


def test_paused_context_and_operations_on_a_paused_server(
        controlled_redis: ControlledRedis) -> None:
    with controlled_redis.paused() as server:
        assert server is controlled_redis
        with pytest.raises(redis.TimeoutError):
            controlled_redis.client(timeout=0.3).ping()
    assert not controlled_redis.is_paused
    with controlled_redis.client() as client:
        assert client.ping()

    controlled_redis.pause(30)  # stop() resumes it first, so it shuts down gracefully
    started = time.monotonic()
    controlled_redis.stop()
    assert time.monotonic() - started < 5
    controlled_redis.start()
    controlled_redis.pause(30)  # and a kill ends a frozen process
    controlled_redis.kill()
    assert not controlled_redis.running and not controlled_redis.is_paused


def test_flushall_empties_it(controlled_redis: ControlledRedis) -> None:
    write(controlled_redis, a="1", b="2")
    with controlled_redis.client(db=1) as other:
        other.set("c", "3")
    controlled_redis.flushall()
    for db in (0, 1):
        with controlled_redis.client(db=db) as client:
            assert client.dbsize() == 0
    assert controlled_redis.running


def test_close_stops_it_and_removes_its_files() -> None:
    server = ControlledRedis()
    server.start()
    server.pause(30)
    root, pid = server.root, server.pid
    assert pid is not None
    server.close()
    server.close()  # idempotent
    assert not root.exists()
    assert not server.running
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv(redis_control.BINARY_ENV, str(tmp_path / "valkey-server"))
    with pytest.raises(RedisBinaryMissing, match="not an executable file"):
        ControlledRedis()
    monkeypatch.delenv(redis_control.BINARY_ENV)
    assert redis_control.valkey_binary().name == "valkey-server"
