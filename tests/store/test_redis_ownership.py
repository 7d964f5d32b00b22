"""One Redis namespace, one database: a second database never shares its balances.

The case it guards: `make clean && make dev` (a new SQLite file) beside a Redis
that still holds the old file's balances under the same namespace, or two
checkouts on one machine. Key 1 of the new database must not spend key 1 of the
old one's credit.
"""

from __future__ import annotations

import httpx

from tests.support.portal import PortalServer
from tests.support.services import sql_query


def test_a_second_database_cannot_use_a_namespace_the_first_claimed(tmp_path,
                                                                    redis_url: str) -> None:
    first = PortalServer(tmp_path / "first", redis_url, workers=1)
    second = PortalServer(tmp_path / "second", redis_url, workers=1,
                          env={"PORTAL_REDIS_NAMESPACE": first.namespace})
    for portal in (first, second):
        portal.cli("migrate")
    first_id, _first_key = first.create_key("7")

    refused = second.cli("keys", "create", "--name", "x", "--credit", "3", check=False)
    assert refused.returncode == 1
    assert f"the Redis namespace '{first.namespace}'" in refused.stderr
    assert "holds the balances of another database" in refused.stderr
    database = f"sqlite://{tmp_path / 'second' / 'data' / 'portal.sqlite3'}"
    assert sql_query(database, "SELECT COUNT(*) FROM api_keys") == [(0,)]  # nothing made

    served = second.cli("serve", check=False)  # PORTAL_EMBEDDED_REDIS=never: refuses
    assert served.returncode == 1
    assert "holds the balances of another database" in served.stdout

    with first:  # the first database still owns it and serves
        key_id, key = first.create_key("2")
        data = httpx.get(first.url + "/v1/key",
                         headers={"authorization": f"Bearer {key}"}).json()["data"]
        assert data["balance_micros"] == 2_000_000
        assert key_id == first_id + 1


def test_with_embedded_redis_allowed_the_second_database_gets_its_own(tmp_path,
                                                                      redis_url: str) -> None:
    first = PortalServer(tmp_path / "first", redis_url, workers=1)
    first.cli("migrate")
    first.create_key("7")  # key 1 of the first database: $7 in the shared Redis
    second = PortalServer(tmp_path / "second", redis_url, workers=1, env={
        "PORTAL_REDIS_NAMESPACE": first.namespace, "PORTAL_EMBEDDED_REDIS": "auto"})
    second.cli("migrate")
    with second:
        _key_id, key = second.create_key("3")  # key 1 of the second database
        data = httpx.get(second.url + "/v1/key",
                         headers={"authorization": f"Bearer {key}"}).json()["data"]
        assert data["balance_micros"] == 3_000_000
        assert "using an embedded server instead" in second.log()


def test_an_unclaimed_namespace_is_taken_only_by_its_own_database(tmp_path,
                                                                  redis_url: str) -> None:
    """A namespace written before namespaces were claimed: its mirrored API keys tell
    whose it is. A restore hands it over with `portal ledger reset-hot --yes`."""
    import redis

    first = PortalServer(tmp_path / "first", redis_url, workers=1)
    first.cli("migrate")
    first.create_key("5")
    with first:  # the edge mirrors every key into Redis
        pass
    client = redis.Redis.from_url(redis_url)
    assert client.keys(f"{first.namespace}:key:*")
    client.delete(f"{first.namespace}:installation")  # as an older release left it

    second = PortalServer(tmp_path / "second", redis_url, workers=1,
                          env={"PORTAL_REDIS_NAMESPACE": first.namespace})
    second.cli("migrate")
    refused = second.cli("keys", "list", check=False)
    assert refused.returncode == 1 and "(an older database)" in refused.stderr
    assert client.get(f"{first.namespace}:installation") is None  # not taken

    assert first.cli("keys", "list").returncode == 0  # its own keys: claimed
    assert client.get(f"{first.namespace}:installation") is not None
    assert second.cli("keys", "list", check=False).returncode == 1

    # The second database replaces the first (a restore, say): hand the namespace over.
    second.cli("ledger", "reset-hot", "--yes")
    assert second.cli("keys", "list").returncode == 0
    assert "another database" in first.cli("keys", "list", check=False).stderr
