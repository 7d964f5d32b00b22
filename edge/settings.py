"""One settings object, read once from ``PORTAL_*`` environment variables and ``.env``.

Every field documents itself, so ``portal --help`` can list the settings and the
Ansible role can template them. Values are validated when the object is built:
a typo in production fails at start-up, not on the first request.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

__all__ = ["ConfigError", "Settings", "load_dotenv", "settings_help"]

#: Prefix of every environment variable the portal reads (Stripe's keep their own names).
ENV_PREFIX = "PORTAL_"


class ConfigError(ValueError):
    """A setting has a value the portal cannot use."""


def _setting(default: Any, doc: str, *, env: str | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"doc": doc, "env": env})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime configuration. Build it with :meth:`Settings.from_env`."""

    data_dir: str = _setting(".portal", "Directory for the SQLite file, the embedded Redis "
                             "and metrics files.")
    database_url: str = _setting("", "Tortoise database URL; empty means "
                                 "sqlite://<data_dir>/portal.sqlite3. PostgreSQL: "
                                 "postgres://user:pass@host:5432/db.")
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "Redis URL. If nothing answers "
                              "there, `portal dev` and `portal serve` start an embedded server.")
    redis_namespace: str = _setting("portal", "Prefix of every Redis key and channel.")
    embedded_redis: str = _setting("auto", "auto: embedded Redis only when redis_url does not "
                                   "answer; never: fail instead; always: always embedded.")
    key_pepper: str = _setting("", "Server-side secret mixed into API-key hashes (HMAC-SHA256). "
                               "Empty: a random one is made once and kept in data_dir.")
    host: str = _setting("127.0.0.1", "Address `portal serve` binds.")
    port: int = _setting(8000, "Port `portal serve` binds.")
    workers: int = _setting(1, "Edge worker processes for `portal serve`.")
    public_url: str = _setting("", "Public base URL of the portal (for links); empty: "
                               "http://<host>:<port>.")
    max_body_bytes: int = _setting(4 * 1024 * 1024, "Largest request body accepted, in bytes.")
    body_budget_bytes: int = _setting(32 * 1024 * 1024, "Bytes of request bodies one edge "
                                      "worker holds at once, from the first byte received "
                                      "until the answer's end (parsed, a body takes several "
                                      "times its size); a body that does not fit is answered "
                                      "503 with Retry-After. At least max_body_bytes.")
    head_timeout: float = _setting(10.0, "Seconds a client may take to send a request's line "
                                   "and headers, from their first byte; later: 408 and the "
                                   "connection closes.")
    body_timeout: float = _setting(30.0, "Seconds a client may take to send a request's body "
                                   "once its headers are in; later: 408. Neither bound counts "
                                   "while the answer is sent (streams may last longer).")
    default_rpm: int = _setting(600, "Requests per minute for new keys.")
    default_tpm: int = _setting(2_000_000, "Tokens per minute for new keys.")
    max_keys_per_account: int = _setting(20, "Unrevoked keys an account may hold at most.")
    cors_origins: str = _setting("", "Origins whose pages may call /v1/ (comma-separated, "
                                 "or *); empty: CORS off.")
    upstream_connect_timeout: float = _setting(3.0, "Seconds to connect to a GPU node.")
    upstream_timeout: float = _setting(600.0, "Seconds a node may take to answer (and between "
                                       "two stream chunks).")
    upstream_max_connections: int = _setting(1000, "Keep-alive pool size per edge worker.")
    upstream_attempts: int = _setting(3, "Nodes of a model a call is sent to, one after "
                                      "another, while they refuse or fail before the first "
                                      "byte; then the client gets 503 with Retry-After.")
    node_cool_down: float = _setting(5.0, "Seconds a node that refused or failed a call is "
                                     "skipped (longer when it sent a longer Retry-After).")
    node_api_key: str = _setting("", "Bearer token the edge sends to vLLM nodes "
                                 "(vLLM's --api-key); empty: none.")
    warming_retry_after: int = _setting(90, "Retry-After seconds when a model has no running "
                                        "node and its boot time is not yet measured.")
    max_wait: int = _setting(300, "Longest wait, in seconds, a client may ask for with the "
                             "X-Portal-Wait header: its request is held until a node of a "
                             "cold model is up. Longer asks are cut to this.")
    shutdown_grace: float = _setting(10.0, "Seconds `portal serve` gives open requests and "
                                     "streams to finish when told to stop.")
    reservation_grace: float = _setting(60.0, "Seconds after a reservation's deadline before "
                                        "the reaper settles it (edge died mid-request).")
    key_cache_ttl: float = _setting(30.0, "Seconds an API key stays in a worker's memory "
                                    "(revocations are pushed at once over Redis).")
    admin_token: str = _setting("", "Bearer token for /admin; empty disables the admin API.")
    console_idle: int = _setting(1800, "Seconds an operator's console session lasts without "
                                 "use (signed in with PORTAL_ADMIN_TOKEN at /admin).")
    console_lifetime: int = _setting(43200, "Seconds a console session lasts at most, however "
                                     "busy.")
    console_logins_per_hour: int = _setting(20, "Failed console sign-ins one IP address may "
                                            "make per hour.")
    log_level: str = _setting("INFO", "Logging level.")
    aws_regions: str = _setting("", "Comma-separated AWS regions with GPU nodes; empty: "
                                "AWS_DEFAULT_REGION (or us-east-1). AWS credentials and "
                                "AWS_ENDPOINT_URL come from the standard AWS variables.")
    ec2_attempts: int = _setting(5, "Tries of each EC2 call (botocore's standard retries, "
                                 "with backoff); a capacity refusal is a 5xx and is tried "
                                 "again as often before the next instance type.")
    node_port: int = _setting(8000, "Port vLLM listens on, for nodes found in EC2.")
    node_name_prefix: str = _setting("vllm", "Prefix of the Name tag of launched nodes.")
    idle_ttl: int = _setting(1800, "Seconds a model may go without requests before its nodes "
                             "stop (a model's own idle_ttl wins; 0: never).")
    boot_timeout: int = _setting(900, "Seconds a booting node may take to answer /health "
                                 "before it is given up on.")
    health_fail_threshold: int = _setting(2, "Failed health checks in a row before a "
                                          "running node leaves routing.")
    sync_interval: int = _setting(60, "Seconds between two EC2 state syncs (scheduler).")
    health_interval: int = _setting(10, "Seconds between two health checks (scheduler).")
    scale_interval: int = _setting(15, "Seconds between two scaling decisions per model "
                                   "(scheduler): scale out, scale in, stop idle nodes.")
    node_slots: int = _setting(256, "Calls a node runs at once when neither its model's "
                               "node_slots nor its learnt batch size says (vLLM's default "
                               "max_num_seqs).")
    admission_wait: float = _setting(10.0, "Seconds an API call waits in the edge for a free "
                                     "slot when every node of its model is full, before "
                                     "429 (or 503 while a node is on its way).")
    affinity_ttl: float = _setting(600.0, "Seconds the node that served a prompt's prefix "
                                   "is remembered, so that calls sharing it go there while "
                                   "its load allows (0: least loaded only).")
    slot_lease: float = _setting(30.0, "Seconds a call's slot outlives a process that died "
                                 "holding it (renewed every 5 s while the call is open).")
    jobs_sweep_interval: int = _setting(15, "Seconds between two sweeps for stuck jobs "
                                        "(scheduler).")
    job_deadline: int = _setting(900, "Seconds a queued job may wait and run, by default.")
    job_max_deadline: int = _setting(86400, "Largest deadline a job may ask for, in seconds.")
    job_lease: int = _setting(60, "Seconds a worker owns a running job before another may "
                              "take it over (renewed while it works).")
    worker_processes: int = _setting(2, "Processes of `portal worker`.")
    worker_threads: int = _setting(8, "Threads per process of `portal worker`.")
    worker_metrics_port: int = _setting(9102, "Port where `portal worker` serves its "
                                        "Prometheus metrics (jobs' requests, tokens and "
                                        "spend; 0: none).")
    allowed_origins: str = _setting("", "Extra origins (comma-separated, like "
                                    "https://chat.example.com) whose pages may open chat "
                                    "sockets; the portal's own origin always may.")
    chat_default_model: str = _setting("", "Model a chat message goes to when it names none; "
                                       "empty: the first model by name.")
    chat_rooms_per_key: int = _setting(10, "Rooms one key may be in at once.")
    chat_sockets_per_key: int = _setting(50, "Chat sockets one key may have open at once, "
                                         "across workers; more are closed with 4029.")
    chat_sockets_per_worker: int = _setting(4096, "Chat sockets one edge worker keeps open "
                                            "at most; more are closed with 1013 (try again "
                                            "later).")
    chat_purge_days: int = _setting(30, "Days a deleted conversation can be restored before "
                                    "it is removed for good.")
    chat_purge_interval: int = _setting(3600, "Seconds between two purges of deleted "
                                        "conversations (scheduler).")
    signup_credit: str = _setting("0", "USD of credit a key made on the web page starts with.")
    signups_per_hour: int = _setting(20, "Keys one IP address may make on the web page per hour.")
    contacts_per_hour: int = _setting(5, "Messages one IP address may send from the contact "
                                      "page per hour.")
    smtp_host: str = _setting("", "SMTP server the contact page's messages are mailed "
                              "through; empty: they are only stored (portal contact list).")
    smtp_port: int = _setting(587, "Port of the SMTP server.")
    smtp_user: str = _setting("", "SMTP login; empty: no login.")
    smtp_password: str = _setting("", "SMTP password.")
    smtp_starttls: bool = _setting(True, "Upgrade the SMTP connection with STARTTLS (the "
                                   "server's certificate is verified).")
    smtp_from: str = _setting("", "From address of the mails; empty: PORTAL_CONTACT_TO.")
    smtp_timeout: float = _setting(10.0, "Seconds an SMTP exchange may take before it is "
                                   "given up (the message stays stored with the error).")
    contact_to: str = _setting("", "The operator's mailbox, where contact messages are sent.")
    real_ip_header: str = _setting("", "Header in which a trusted reverse proxy passes the "
                                   "client's address (x-real-ip behind the role's Nginx); "
                                   "empty: the connection's own address, as clients can "
                                   "forge any header.")
    demo_models: str = _setting("demo-small,demo-large", "Models `portal dev` creates, each "
                                "with a simulated node.")
    stripe_secret_key: str = _setting("", "Stripe secret API key (sk_live_... or sk_test_...); "
                                      "empty: payments are off.", env="STRIPE_SECRET_KEY")
    stripe_webhook_secret: str = _setting("", "Signing secret of the Stripe webhook endpoint "
                                          "(whsec_...); empty: payments are off.",
                                          env="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str = _setting("", "Base URL of Stripe's API; empty: Stripe's own (tests "
                                    "point it at a local server).", env="STRIPE_API_BASE")
    currency: str = _setting("usd", "Currency of top-ups and balances (a lower-case ISO code, "
                             "like usd); one unit credits 1,000,000 micro-units of balance.")
    topup_min_usd: str = _setting("5.00", "Smallest top-up, in the currency (an amount Stripe "
                                  "charges: whole cents of usd, whole yen of jpy).")
    topup_max_usd: str = _setting("1000.00", "Largest top-up, in the currency (likewise).")
    topup_success_url: str = _setting("", "Where Stripe sends a payer after paying; empty: "
                                      "<public_url>/account?topup=success&session_id="
                                      "{CHECKOUT_SESSION_ID} (Stripe fills in the id).")
    topup_cancel_url: str = _setting("", "Where Stripe sends a payer who gives up; empty: "
                                     "<public_url>/account?topup=cancelled.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 dotenv: str | Path | None = ".env") -> Settings:
        """Read settings from the environment, falling back to a ``.env`` file.

        Parameters:
          environ: variables to read (default: ``os.environ``).
          dotenv: path of a ``KEY=VALUE`` file whose entries apply where the
            environment has none; ``None`` skips it.

        Raises:
          ConfigError: when a value does not parse or is out of range.
        """
        env = dict(load_dotenv(dotenv)) if dotenv else {}
        env.update(os.environ if environ is None else environ)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = field.metadata.get("env") or ENV_PREFIX + field.name.upper()
            if name in env:
                values[field.name] = _parse(name, env[name], hints[field.name])
        return cls(**values)

    def __post_init__(self) -> None:
        if self.embedded_redis not in ("auto", "never", "always"):
            raise ConfigError("PORTAL_EMBEDDED_REDIS must be auto, never or always")
        for name in ("port", "workers", "max_body_bytes", "default_rpm", "default_tpm",
                     "max_keys_per_account",
                     "worker_processes", "worker_threads", "job_deadline", "job_lease",
                     "chat_sockets_per_key", "chat_sockets_per_worker", "chat_purge_days",
                     "node_slots", "ec2_attempts"):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise ConfigError(f"PORTAL_{name.upper()} is out of range")
        if self.affinity_ttl < 0:
            raise ConfigError("PORTAL_AFFINITY_TTL is out of range (0 turns it off)")
        if self.admission_wait < 0:
            raise ConfigError("PORTAL_ADMISSION_WAIT is out of range (0: refuse at once)")
        if self.slot_lease < 10:
            raise ConfigError("PORTAL_SLOT_LEASE must be at least 10 seconds (leases are "
                              "renewed every 5)")
        if self.max_wait < 0:
            raise ConfigError("PORTAL_MAX_WAIT is out of range (0 turns the wait off)")
        if self.body_budget_bytes < self.max_body_bytes:
            raise ConfigError("PORTAL_BODY_BUDGET_BYTES must be at least PORTAL_MAX_BODY_BYTES")
        if not (self.head_timeout > 0 and self.body_timeout > 0):
            raise ConfigError("PORTAL_HEAD_TIMEOUT and PORTAL_BODY_TIMEOUT must be positive")
        if not self.redis_namespace.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("PORTAL_REDIS_NAMESPACE must be letters, digits, - or _")
        if self.smtp_host and "@" not in self.contact_to:
            raise ConfigError("PORTAL_CONTACT_TO must be the operator's address when "
                              "PORTAL_SMTP_HOST is set")
        if self.smtp_timeout <= 0 or self.contacts_per_hour < 1:
            raise ConfigError("PORTAL_SMTP_TIMEOUT and PORTAL_CONTACTS_PER_HOUR must be "
                              "positive")
        if not (0 < self.console_idle <= self.console_lifetime) \
                or self.console_logins_per_hour < 1:
            raise ConfigError("PORTAL_CONSOLE_IDLE must be positive and at most "
                              "PORTAL_CONSOLE_LIFETIME; PORTAL_CONSOLE_LOGINS_PER_HOUR positive")
        # The currency and the top-up bounds are checked where the payment settings are
        # built (edge.payments.config.PaymentSettings.from_settings, by the app factory).

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite://{self.data_path / 'portal.sqlite3'}"

    @property
    def effective_public_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def regions(self) -> list[str]:
        import os

        listed = [r.strip() for r in self.aws_regions.split(",") if r.strip()]
        return listed or [os.environ.get("AWS_DEFAULT_REGION")
                          or os.environ.get("AWS_REGION") or "us-east-1"]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        secret = {"key_pepper", "admin_token", "node_api_key", "stripe_secret_key",
                  "stripe_webhook_secret", "smtp_password"}
        shown = ", ".join(
            f"{f.name}='***'" if f.name in secret and getattr(self, f.name)
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self))
        return f"Settings({shown})"


def _parse(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind is int:
            return int(raw.replace("_", ""))
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def load_dotenv(path: str | Path | None) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        return {}
    values: dict[str, str] = {}
    for line in file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def settings_help() -> str:
    """A table of every setting, its variable, default and meaning, for ``--help``."""
    lines = ["settings (environment variables, or a .env file in the working directory):"]
    for field in dataclasses.fields(Settings):
        name = field.metadata.get("env") or ENV_PREFIX + field.name.upper()
        lines.append(f"  {name} (default {field.default!r})")
        lines.append(f"      {field.metadata['doc']}")
    return "\n".join(lines)
