"""A chat message to a cold model: "warming up", a boot, then the reply."""

from __future__ import annotations

from simnode.testing import free_port
from tests.lifecycle.conftest import MODEL, Cluster
from tests.support.chat import ChatClient


async def test_the_reply_follows_when_the_node_is_up(cluster: Cluster) -> None:
    instance = cluster.moto.run_node(MODEL, stopped=True)
    port = free_port()
    node_id = cluster.register(instance, port)
    cluster.simnode_when_running(instance, port, "--startup-delay", "1")
    _key_id, key = cluster.portal.create_key("1")

    client = await ChatClient.connect(cluster.url, "wakeup", key)
    await client.send(type="message", text="Are you there?", model=MODEL,
                      params={"max_tokens": 5})
    warming = await client.wait_for("status", kind="warming")
    assert warming["model"] == MODEL and warming["eta"] > 0
    ready = await client.wait_for("status", kind="ready", timeout=40)
    done = await client.wait_for("done", timeout=20)
    assert done["status"] == "done" and done["usage"]["completion_tokens"] == 5
    assert ready["reply_id"] == done["reply_id"]
    assert cluster.node(node_id)["state"] == "running"
    await client.close()
