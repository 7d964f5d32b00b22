"""A stand-in at the network boundary for what moto cannot do: EC2 refusing a launch
for want of capacity.

An HTTP proxy in front of moto's server: every call goes through unchanged, except a
``RunInstances`` of an instance type (or market) the test has made scarce, which gets
EC2's own error reply (HTTP 500, ``InsufficientInstanceCapacity``) as boto3 parses it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx

from simnode.testing import free_port

__all__ = ["Ec2Gate", "ec2_gate"]

REFUSAL = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>We currently do not have sufficient
{what} capacity in the Availability Zone you requested.</Message></Error></Errors>
<RequestID>gate-{count}</RequestID></Response>"""


class Ec2Gate:
    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream
        self.url = f"http://127.0.0.1:{port}"
        self.scarce: set[str] = set()  # instance types, or "spot" for the spot market
        self.refused: list[str] = []  # what was refused, in order

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

    def refusal(self, body: bytes) -> str | None:
        form = parse_qs(body.decode(errors="replace"))
        if form.get("Action") != ["RunInstances"]:
            return None
        kind = form.get("InstanceType", [""])[0]
        spot = form.get("InstanceMarketOptions.MarketType", [""])[0] == "spot"
        if kind in self.scarce or (spot and "spot" in self.scarce):
            what = f"{kind} spot" if spot else kind
            self.refused.append(what)
            return REFUSAL.format(code="InsufficientInstanceCapacity", what=what,
                                  count=len(self.refused))
        return None


@contextmanager
def ec2_gate(upstream: str) -> Iterator[Ec2Gate]:
    gate = Ec2Gate(upstream, free_port())
    client = httpx.Client(timeout=60)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            refusal = gate.refusal(body)
            if refusal is not None:
                status, content, headers = 500, refusal.encode(), {
                    "content-type": "text/xml"}
            else:
                answer = client.request(
                    self.command, gate.upstream + self.path, content=body,
                    headers={k: v for k, v in self.headers.items()
                             if k.lower() not in ("host", "content-length")})
                status, content = answer.status_code, answer.content
                headers = {k: v for k, v in answer.headers.items()
                           if k.lower() in ("content-type", "x-amzn-requestid")}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = _relay

    server = ThreadingHTTPServer(("127.0.0.1", int(gate.url.rsplit(":", 1)[1])), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gate
    finally:
        server.shutdown()
        server.server_close()
        client.close()
