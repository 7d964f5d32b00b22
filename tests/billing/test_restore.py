"""After a database restore, `portal ledger reset-hot` makes SQL the truth again."""

from __future__ import annotations

import shutil

import httpx

from tests.support.standard import MODEL


def test_restore_then_reset_hot(portal_factory, simnode) -> None:
    node = simnode("--model", MODEL)
    portal = portal_factory(workers=1)
    portal.cli("migrate")
    portal.add_model(MODEL)
    portal.add_node(MODEL, node.url)
    key_id, key = portal.create_key("1")
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    database = portal.root / "data" / "portal.sqlite3"

    with portal:
        assert httpx.post(portal.url + "/v1/chat/completions", json=body,
                          headers=headers).status_code == 200
        portal.cli("ledger", "drain")
    backup = database.with_suffix(".backup")
    shutil.copy(database, backup)  # the "nightly backup"
    backed_up = portal.cli_json("keys", "list")[0]["balance"]

    with portal:  # life goes on after the backup
        portal.cli("keys", "topup", str(key_id), "2", "--reference", "after-backup")
        assert httpx.post(portal.url + "/v1/chat/completions", json=body,
                          headers=headers).status_code == 200
        live = httpx.get(portal.url + "/v1/key", headers=headers).json()["data"]["balance"]
    assert live != backed_up

    for suffix in ("", "-wal", "-shm"):  # the database is lost and restored
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    shutil.copy(backup, database)
    refused = portal.cli("ledger", "reset-hot", check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    portal.cli("ledger", "reset-hot", "--yes")

    with portal:
        data = httpx.get(portal.url + "/v1/key", headers=headers).json()["data"]
        assert data["balance"] == backed_up  # Redis now agrees with the restored SQL
        # The lost top-up can be applied again (its reference is gone from both).
        again = portal.cli_json("keys", "topup", str(key_id), "2", "--reference",
                                "after-backup")
        assert again["duplicate"] is False
        assert httpx.post(portal.url + "/v1/chat/completions", json=body,
                          headers=headers).status_code == 200
        portal.cli("ledger", "drain")
        (row,) = portal.cli_json("keys", "list")
        live = httpx.get(portal.url + "/v1/key", headers=headers).json()["data"]["balance"]
        assert row["balance"] == live
