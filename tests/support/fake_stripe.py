"""A small local server speaking the part of Stripe's API the portal uses.

PyPI's ``localstripe`` does not cover Checkout, so tests start this instead and
point the portal at it with ``STRIPE_API_BASE``. It answers what the official
``stripe`` library sends (form-encoded bodies, bearer secret key, idempotency
keys) and keeps every request for assertions::

    POST /v1/checkout/sessions          create a session (replays an idempotency key)
    GET  /v1/checkout/sessions          list, by created[gte] / created[lt], paged
    GET  /v1/checkout/sessions/<id>     retrieve
    GET  /v1/refunds?charge=<id>        the refunds of a charge

Tests play the payer and the bank with :meth:`FakeStripe.pay`, :meth:`refund` and
:meth:`dispute`, and turn objects into signed webhook deliveries with
:func:`event_payload` and :func:`sign`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeStripe", "Recorded", "event_payload", "fake_stripe", "sign"]


def _id(prefix: str) -> str:
    return f"{prefix}_test_{uuid.uuid4().hex[:24]}"


class Recorded:
    """One request the server received."""

    def __init__(self, method: str, path: str, query: dict[str, str], form: dict[str, str],
                 headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.form = form  # flat, as sent: {"line_items[0][quantity]": "1", ...}
        self.headers = headers

    def __repr__(self) -> str:
        return f"Recorded({self.method} {self.path} {self.form or self.query})"


class FakeStripe:
    """The server's state; thread-safe (the HTTP server answers on threads).

    Parameters:
      secret_key: the only key accepted in ``Authorization: Bearer``.
    """

    def __init__(self, secret_key: str) -> None:
        self.secret_key = secret_key
        self.url = ""
        self.sessions: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}  # by session id
        self.requests: list[Recorded] = []
        self._by_idempotency: dict[str, str] = {}
        self._failures: list[tuple[int, dict[str, Any]]] = []
        #: Fields a refund has when fetched by id, not when listed: it changed in between.
        self.refund_later: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        #: Unix time new sessions say they were created at; None: now.
        self.clock: float | None = None

    # -- test controls ------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1, *, error_type: str = "api_error",
                  message: str = "Something went wrong on Stripe's end.",
                  retry: bool | None = None) -> None:
        """Answer the next ``times`` API calls with an error (``retry``: Stripe-Should-Retry)."""
        with self._lock:
            self._failures += [(status, {"type": error_type, "message": message,
                                         "retry": retry})] * times

    def calls(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def pay(self, session_id: str, *, status: str = "paid") -> dict[str, Any]:
        """The payer completes Checkout: the session is ``complete`` with ``status``."""
        with self._lock:
            session = self.sessions[session_id]
            session.update(status="complete", payment_status=status,
                           payment_intent=session["payment_intent"] or _id("pi"))
            if status == "paid":
                self.charges[session_id] = {
                    "id": _id("ch"), "object": "charge", "amount": session["amount_total"],
                    "amount_captured": session["amount_total"], "amount_refunded": 0,
                    "currency": session["currency"], "payment_intent": session["payment_intent"],
                    "refunded": False, "paid": True, "status": "succeeded",
                    "refunds": {"object": "list", "data": [], "has_more": False},
                }
            return json.loads(json.dumps(session))

    def settle_async(self, session_id: str) -> dict[str, Any]:
        """A delayed payment method (bank debit) succeeds after Checkout completed unpaid."""
        return self.pay(session_id, status="paid")

    def refund(self, session_id: str, amount: int) -> dict[str, Any]:
        """Refund ``amount`` cents of a paid session; returns the charge as Stripe sends it."""
        with self._lock:
            charge = self.charges[session_id]
            refund = {"id": _id("re"), "object": "refund", "amount": amount,
                      "charge": charge["id"], "currency": charge["currency"],
                      "payment_intent": charge["payment_intent"], "status": "succeeded",
                      "created": int(time.time())}
            charge["refunds"]["data"].insert(0, refund)
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return json.loads(json.dumps(charge))

    def dispute(self, session_id: str, status: str = "needs_response",
                amount: int | None = None, dispute_id: str | None = None) -> dict[str, Any]:
        """A dispute of a paid session's charge, as Stripe sends it."""
        with self._lock:
            charge = self.charges[session_id]
            return {"id": dispute_id or _id("dp"), "object": "dispute",
                    "amount": charge["amount"] if amount is None else amount,
                    "charge": charge["id"], "currency": charge["currency"],
                    "payment_intent": charge["payment_intent"], "status": status,
                    "reason": "fraudulent"}

    def foreign_session(self, amount: int) -> str:
        """A paid session of something else sold on the same account (no portal metadata)."""
        with self._lock:
            session = self._create_session({
                "mode": "payment", "line_items[0][price_data][unit_amount]": str(amount),
                "line_items[0][price_data][currency]": "usd"}, None)
        self.pay(session["id"])
        return session["id"]

    def session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self.sessions[session_id]))

    # -- the API ------------------------------------------------------------------------
    def handle(self, method: str, target: str, body: bytes,
               headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        form = dict(parse_qsl(body.decode(), keep_blank_values=True)) if body else {}
        with self._lock:
            self.requests.append(Recorded(method, split.path, query, form, headers))
            if headers.get("authorization") != f"Bearer {self.secret_key}":
                return 401, _error("invalid_request_error", "Invalid API Key provided."), {}
            if self._failures:
                status, failure = self._failures.pop(0)
                extra = {} if failure["retry"] is None else \
                    {"Stripe-Should-Retry": "true" if failure["retry"] else "false"}
                return status, _error(failure["type"], failure["message"]), extra
            if method == "POST" and split.path == "/v1/checkout/sessions":
                return 200, self._create_session(form, headers.get("idempotency-key")), {}
            if method == "GET" and split.path == "/v1/checkout/sessions":
                return 200, self._list_sessions(query), {}
            if method == "GET" and split.path.startswith("/v1/checkout/sessions/"):
                session = self.sessions.get(split.path.rsplit("/", 1)[1])
                if session is None:
                    return 404, _error("invalid_request_error", "No such checkout.session"), {}
                return 200, session, {}
            if method == "GET" and split.path.startswith("/v1/refunds/"):
                wanted = split.path.rsplit("/", 1)[1]
                for charge in self.charges.values():
                    for refund in charge["refunds"]["data"]:
                        if refund["id"] == wanted:
                            return 200, {**refund, **self.refund_later.get(wanted, {})}, {}
                return 404, _error("invalid_request_error", "No such refund"), {}
            if method == "GET" and split.path == "/v1/refunds":
                refunds = [r for charge in self.charges.values()
                           if query.get("charge") in (None, charge["id"])
                           and query.get("payment_intent") in (None, charge["payment_intent"])
                           for r in charge["refunds"]["data"]]
                return 200, {"object": "list", "data": refunds, "has_more": False,
                             "url": "/v1/refunds"}, {}
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method} "
                           f"{split.path})."), {}

    def _create_session(self, form: dict[str, str], idempotency_key: str | None
                        ) -> dict[str, Any]:
        if idempotency_key and idempotency_key in self._by_idempotency:
            return self.sessions[self._by_idempotency[idempotency_key]]
        session_id = _id("cs")
        metadata = {k[len("metadata["):-1]: v for k, v in form.items()
                    if k.startswith("metadata[")}
        amount = int(form["line_items[0][price_data][unit_amount]"]) * \
            int(form.get("line_items[0][quantity]", "1"))
        session = {
            "id": session_id, "object": "checkout.session", "mode": form.get("mode"),
            "status": "open", "payment_status": "unpaid", "amount_total": amount,
            "amount_subtotal": amount, "currency": form["line_items[0][price_data][currency]"],
            "client_reference_id": form.get("client_reference_id"), "metadata": metadata,
            "success_url": form.get("success_url"), "cancel_url": form.get("cancel_url"),
            "url": f"https://checkout.stripe.test/c/pay/{session_id}", "payment_intent": None,
            "created": int(self.clock or time.time()), "livemode": False,
        }
        self.sessions[session_id] = session
        if idempotency_key:
            self._by_idempotency[idempotency_key] = session_id
        return session

    def _list_sessions(self, query: dict[str, str]) -> dict[str, Any]:
        sessions = sorted(self.sessions.values(), key=lambda s: (s["created"], s["id"]),
                          reverse=True)
        if "created[gte]" in query:
            sessions = [s for s in sessions if s["created"] >= int(query["created[gte]"])]
        if "created[lt]" in query:
            sessions = [s for s in sessions if s["created"] < int(query["created[lt]"])]
        if "status" in query:
            sessions = [s for s in sessions if s["status"] == query["status"]]
        if "payment_intent" in query:
            sessions = [s for s in sessions if s["payment_intent"] == query["payment_intent"]]
        if "starting_after" in query:
            ids = [s["id"] for s in sessions]
            after = ids.index(query["starting_after"]) + 1 if query["starting_after"] in ids \
                else len(ids)
            sessions = sessions[after:]
        limit = int(query.get("limit", "10"))
        return {"object": "list", "data": sessions[:limit], "has_more": len(sessions) > limit,
                "url": "/v1/checkout/sessions"}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, extra = self.server.fake.handle(self.command, self.path, body, headers)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:14]}")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@contextmanager
def fake_stripe(secret_key: str) -> Iterator[FakeStripe]:
    """Run a :class:`FakeStripe` on a free port for the duration of the block."""
    fake = FakeStripe(secret_key)
    server = _Server(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-stripe", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def event_payload(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> str:
    """A webhook body as Stripe sends it, around ``obj`` (a session, charge or dispute)."""
    return json.dumps({
        "id": event_id or _id("evt"), "object": "event", "api_version": "2025-01-27.acacia",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type,
        "data": {"object": obj},
    })


def sign(payload: str, secret: str, *, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header, made by the official library's own helper."""
    import stripe

    return stripe.WebhookSignature.generate_signature_header(payload, secret,
                                                             timestamp=timestamp)
