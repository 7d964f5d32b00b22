"""The operator CLI: idempotent adds, keys shown once, exact top-ups."""

from __future__ import annotations

import json

import pytest

from tests.support.portal import PortalServer


@pytest.fixture
def portal(tmp_path, redis_url) -> PortalServer:
    server = PortalServer(tmp_path, redis_url)
    server.cli("migrate")
    return server


def test_models_add_is_idempotent_and_reports_changes(portal: PortalServer) -> None:
    args = ["models", "add", "llama", "--served-name", "meta/llama", "--input-price", "0.15",
            "--output-price", "0.60", "--context", "4096", "--json"]
    assert json.loads(portal.cli(*args).stdout)["outcome"] == "created"
    assert json.loads(portal.cli(*args).stdout)["outcome"] == "unchanged"
    args[args.index("0.60")] = "0.70"
    assert json.loads(portal.cli(*args).stdout)["outcome"] == "updated"
    (row,) = portal.cli_json("models", "list")
    assert row["served_name"] == "meta/llama"
    assert row["output_usd_per_1m"] == "0.700000"
    assert row["context"] == 4096
    assert row["kind"] == "generate"  # the default


def test_a_model_says_what_its_nodes_serve(portal: PortalServer) -> None:
    args = ["models", "add", "bge", "--input-price", "0.02", "--output-price", "0", "--json"]
    assert json.loads(portal.cli(*args, "--kind", "embed").stdout)["outcome"] == "created"
    # Leaving --kind out keeps the kind it has.
    assert json.loads(portal.cli(*args).stdout)["outcome"] == "unchanged"
    assert json.loads(portal.cli(*args, "--kind", "rerank").stdout)["outcome"] == "updated"
    assert [m["kind"] for m in portal.cli_json("models", "list")] == ["rerank"]
    wrong = portal.cli(*args, "--kind", "vision", check=False)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


def test_prices_must_be_exact_and_non_negative(portal: PortalServer) -> None:
    for price in ("-1", "abc", "0.0000001"):
        result = portal.cli("models", "add", "x", "--input-price", price, "--output-price", "1",
                            check=False)
        assert result.returncode == 2
        assert "price" in result.stderr or "dollar" in result.stderr or "amount" in result.stderr


def test_nodes_add_list_remove(portal: PortalServer) -> None:
    portal.add_model("m")
    first = portal.cli_json("nodes", "add", "--model", "m", "--url", "http://10.0.0.1:8000/")
    again = portal.cli_json("nodes", "add", "--model", "m", "--url", "http://10.0.0.1:8000")
    assert first["outcome"] == "created" and again["outcome"] == "unchanged"
    assert first["id"] == again["id"]
    ec2 = portal.cli_json("nodes", "add", "--model", "m", "--url", "http://10.0.0.2:8000",
                          "--instance-id", "i-0abc")
    nodes = {n["id"]: n for n in portal.cli_json("nodes", "list")}
    assert nodes[first["id"]]["state"] == "running"  # a static URL serves at once
    assert nodes[ec2["id"]]["state"] == "stopped"  # an instance waits for its boot
    assert portal.cli("nodes", "add", "--model", "nope", "--url", "http://x",
                      check=False).returncode == 1
    portal.cli("nodes", "remove", str(first["id"]))
    assert [n["id"] for n in portal.cli_json("nodes", "list")] == [ec2["id"]]


def test_keys_create_topup_revoke(portal: PortalServer) -> None:
    created = portal.cli_json("keys", "create", "--name", "alice", "--credit", "2.50")
    assert set(created) >= {"id", "key", "balance"}
    assert created["balance"] == "2.500000"
    assert created["key"].startswith("sk-ip-")

    listed = portal.cli("keys", "list").stdout
    assert "alice" in listed and created["key"] not in listed  # never the secret

    topped = portal.cli_json("keys", "topup", str(created["id"]), "1.25", "--reference", "r1")
    assert topped == {"id": created["id"], "account": created["account"],
                      "applied": "1.250000", "duplicate": False, "balance": "3.750000"}
    again = portal.cli_json("keys", "topup", str(created["id"]), "1.25", "--reference", "r1")
    assert again["duplicate"] is True and again["balance"] == "3.750000"

    portal.cli("keys", "revoke", str(created["id"]))
    (row,) = portal.cli_json("keys", "list")
    assert row["revoked"] is True


def test_secret_is_stored_only_as_a_keyed_hash(portal: PortalServer) -> None:
    import sqlite3

    created = portal.cli_json("keys", "create", "--name", "bob")
    database = portal.root / "data" / "portal.sqlite3"
    dump = "\n".join(sqlite3.connect(database).iterdump())
    assert created["key"] not in dump
    secret_part = created["key"].split("_", 1)[1]
    assert secret_part not in dump
    import hashlib

    assert hashlib.sha256(created["key"].encode()).hexdigest() not in dump  # peppered


def test_help_lists_the_settings(portal: PortalServer) -> None:
    out = portal.cli("--help").stdout
    for name in ("PORTAL_DATABASE_URL", "PORTAL_REDIS_URL", "PORTAL_KEY_PEPPER",
                 "PORTAL_WORKERS"):
        assert name in out


def test_topup_without_redis_goes_to_sql(tmp_path) -> None:
    """With only the embedded kind of Redis configured and none running, SQL is the truth."""
    server = PortalServer(tmp_path, "redis://127.0.0.1:1/0",
                          env={"PORTAL_EMBEDDED_REDIS": "auto"})
    server.cli("migrate")
    created = server.cli_json("keys", "create", "--name", "solo", "--credit", "1")
    topped = server.cli_json("keys", "topup", str(created["id"]), "0.5")
    assert topped["balance"] == "1.500000"


def test_topup_reference_stays_unique_when_redis_forgot_it(portal: PortalServer) -> None:
    import redis

    created = portal.cli_json("keys", "create", "--name", "carol", "--credit", "1")
    portal.cli_json("keys", "topup", str(created["id"]), "1", "--reference", "once")
    client = redis.Redis.from_url(portal.redis_url)
    client.delete(f"{portal.namespace}:applied:once")  # expired, or reset
    again = portal.cli_json("keys", "topup", str(created["id"]), "1", "--reference", "once")
    assert again["duplicate"] is True and again["balance"] == "2.000000"
