"""`portal dev` on a machine without Redis: embedded server, demo models, a demo key."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import httpx
import openai
import psutil

from simnode.testing import free_port
from tests.support.portal import PORTAL_BIN


def test_portal_dev_serves_the_demo_key_with_the_openai_sdk(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_PORT": str(port),
           "PORTAL_EMBEDDED_REDIS": "always", "PORTAL_DATABASE_URL": "",
           "PORTAL_LOG_LEVEL": "WARNING"}
    env.pop("PORTAL_REDIS_URL", None)
    env.pop("PORTAL_ADMIN_TOKEN", None)
    log = (tmp_path / "dev.log").open("w+")
    process = subprocess.Popen([PORTAL_BIN, "dev"], env=env, cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        key = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and key is None:
            assert process.poll() is None, (tmp_path / "dev.log").read_text()
            found = re.search(r"(sk-ip-\S+)", (tmp_path / "dev.log").read_text())
            key = found.group(1) if found else None
            time.sleep(0.2)
        assert key, (tmp_path / "dev.log").read_text()
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        banner = (tmp_path / "dev.log").read_text()
        assert url in banner

        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(
            model="demo-small", messages=[{"role": "user", "content": "Hello"}], max_tokens=5)
        assert answer.usage.completion_tokens == 5
        names = {m.id for m in client.models.list().data}
        assert {"demo-small", "demo-large"} <= names
        headers = {"authorization": f"Bearer {key}"}
        job = httpx.post(url + "/v1/jobs", headers=headers, json={
            "model": "demo-large", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3}).json()
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            job = httpx.get(url + f"/v1/jobs/{job['id']}?wait=10", headers=headers,
                            timeout=20).json()
        assert job["status"] == "succeeded", job  # the dev worker answers queued jobs
        balance = httpx.get(url + "/v1/key", headers=headers).json()
        assert 0 < balance["data"]["balance_micros"] < 5_000_000

        # The console opens with the admin token the banner shows for this run.
        token = re.search(r"with the admin token\s+(\S+)", banner)
        assert token, banner
        with httpx.Client(base_url=url) as browser:
            form = browser.get("/admin/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            signed = browser.post("/admin/console/login", data={
                "csrf": csrf.group(1), "token": token.group(1)})
            assert signed.status_code == 302, signed.text
            models = browser.get("/admin/console/models")
            assert models.status_code == 200 and "demo-large" in models.text

        # Another command in another shell finds the embedded Redis too: an enqueued
        # stop reaches the dev worker, which stops the (static) node.
        node = next(n for n in cli_json(env, tmp_path, "nodes", "list", "--json")
                    if n["model"] == "demo-large")
        stopped = subprocess.run([PORTAL_BIN, "nodes", "stop", str(node["id"]), "--wait", "20"],
                                 env=env, cwd=tmp_path, capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr

        children = psutil.Process(process.pid).children(recursive=True)
        assert any("valkey" in " ".join(c.cmdline()) for c in children)  # embedded Redis
        assert sum("simnode" in " ".join(c.cmdline()) for c in children) == 2
        workers = [c for c in children if "worker" in " ".join(c.cmdline())]
        assert any(w.children() for w in workers)  # the dev worker and its process
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    time.sleep(0.5)
    leftovers = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, f"portal dev left processes behind: {leftovers}"


def cli_json(env: dict[str, str], cwd, *args: str):
    done = subprocess.run([PORTAL_BIN, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)
