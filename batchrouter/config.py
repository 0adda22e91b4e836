"""Configuration defaults and the environment mapping of SPEC §12."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"


class Defaults:
    """Every key the app reads, with the value used when nothing overrides it."""

    # Signs session cookies, CSRF tokens and signed links; make run writes a random one to instance/.
    SECRET_KEY = None
    # SQLite file in instance/ by default; PostgreSQL via postgresql+psycopg://…
    DATABASE_URL = f"sqlite:///{INSTANCE / 'batchrouter.db'}"
    # None means "not configured": make run starts a private Redis and sets this.
    REDIS_URL = None
    HOST = "127.0.0.1"
    PORT = 8000
    # Public URL used in emails and signed links; never derived from the Host header.
    BASE_URL = "http://127.0.0.1:8000"
    # Email: Resend when a key is set, otherwise the local outbox table.
    RESEND_API_KEY = None
    RESEND_API_URL = None
    EMAIL_FROM = "BatchRouter <no-reply@batchrouter.local>"
    # Signing secret (whsec_…) of the Resend webhook pointed at POST /webhooks/resend; unset,
    # that route answers 404 and delivery statuses stay as sent.
    BATCHROUTER_RESEND_WEBHOOK_SECRET = None
    STRIPE_SECRET_KEY = None
    STRIPE_WEBHOOK_SECRET = None
    STRIPE_API_BASE = None
    OPENAI_API_KEY = None
    OPENAI_BASE_URL = None
    ANTHROPIC_API_KEY = None
    ANTHROPIC_BASE_URL = None
    OPENROUTER_API_KEY = None
    OPENROUTER_BASE_URL = None
    WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    LOG_FORMAT = "text"
    OPERATOR_NAME = "BatchRouter operator"
    OPERATOR_EMAIL = "operator@batchrouter.local"

    # --- BATCHROUTER_* settings ---
    # Credits granted to every new workspace (micro-dollars): $5.00.
    BATCHROUTER_STARTER_CREDITS = 5_000_000
    # Credits the make-run demo workspace starts with: $100.00.
    BATCHROUTER_DEMO_CREDITS = 100_000_000
    # Login throttles (Flask-Limiter strings), per account and per client IP.
    BATCHROUTER_LOGIN_LIMIT_ACCOUNT = "10 per 15 minutes"
    BATCHROUTER_LOGIN_LIMIT_IP = "30 per 15 minutes"
    # Throttle for password-reset and verification-resend requests per IP.
    BATCHROUTER_RECOVERY_LIMIT_IP = "10 per hour"
    # API throttles per key and per workspace.
    BATCHROUTER_API_LIMIT_KEY = "600 per minute"
    BATCHROUTER_API_LIMIT_WORKSPACE = "1200 per minute"
    # Rate limit storage; defaults to REDIS_URL. "memory://" only for single-process tools.
    BATCHROUTER_RATELIMIT_STORAGE_URI = None
    # Lifetime of emailed links, in seconds.
    BATCHROUTER_VERIFY_TOKEN_TTL = 24 * 3600
    BATCHROUTER_RESET_TOKEN_TTL = 30 * 60
    # Workspace invitation links expire after this many seconds (7 days).
    BATCHROUTER_INVITE_TTL = 7 * 24 * 3600
    # Throttle for POST /v1/auth/agent-register per client IP: each call creates a workspace.
    BATCHROUTER_AGENT_REGISTER_LIMIT = "10 per hour"
    # Console session lifetimes: absolute and idle, in seconds.
    BATCHROUTER_SESSION_ABSOLUTE_TTL = 8 * 3600 * 3
    BATCHROUTER_SESSION_IDLE_TTL = 8 * 3600
    # Largest request body accepted (bytes); manifests may be large.
    BATCHROUTER_MAX_CONTENT_LENGTH = 512 * 1024 * 1024
    # RQ queue names a worker listens on, in priority order; "webhooks" carries the delivery
    # pumps (jobs.webhooks), so receivers never sit in front of dispatch work on "default".
    BATCHROUTER_QUEUES = ("default", "webhooks")
    # CPU priority a long-running worker gives itself (added to its nice value): where web and
    # workers share cores, the console and API answer first and background work takes what is
    # left. 0 on machines that run only workers.
    BATCHROUTER_WORKER_NICE = 10
    # Seconds between scheduler ticks in each worker (outbox drain + periodic jobs).
    BATCHROUTER_SCHEDULER_TICK = 2.0
    # A claimed-but-not-enqueued outbox row is retried after this many seconds.
    BATCHROUTER_OUTBOX_LEASE = 30
    # Worker heartbeat TTL in Redis (seconds); /readyz needs one live heartbeat.
    BATCHROUTER_HEARTBEAT_TTL = 30
    # Idempotency-Key records are kept this long (seconds).
    BATCHROUTER_IDEMPOTENCY_TTL = 24 * 3600
    # Service fee on the provider subtotal, in parts per million (59_000 = 5.90 %).
    BATCHROUTER_SERVICE_FEE_PPM = 59_000
    # Manifest limits (SPEC §3): items and bytes per batch, bytes per item line.
    BATCHROUTER_MAX_ITEMS = 200_000
    BATCHROUTER_MAX_MANIFEST_BYTES = 512 * 1024 * 1024
    BATCHROUTER_MAX_ITEM_BYTES = 2 * 1024 * 1024
    # How long a quote's price lock lasts (seconds).
    BATCHROUTER_QUOTE_TTL = 600
    # Where files and artifacts are stored (filesystem storage root).
    BATCHROUTER_STORAGE_ROOT = str(INSTANCE / "storage")
    # Or an S3-compatible store: s3://bucket/prefix (AWS_* credentials), and its endpoint
    # when it is not AWS (MinIO, Ceph, R2…).
    BATCHROUTER_STORAGE_URL = None
    BATCHROUTER_S3_ENDPOINT_URL = None
    # Work-unit lease (seconds): a worker that dies mid-unit loses it after this long.
    BATCHROUTER_UNIT_LEASE = 120
    # Seconds between polls of a submitted provider batch.
    BATCHROUTER_POLL_INTERVAL = 5.0
    # First retry delay (seconds) for transient item failures; doubles per run, jittered.
    BATCHROUTER_RETRY_BASE_DELAY = 2.0
    # Sweeper: how often it runs, and how long an unleased unit may sit before re-queueing.
    BATCHROUTER_SWEEP_INTERVAL = 30
    BATCHROUTER_SWEEP_STALE_AFTER = 60
    # Sandbox provider: per-item latency, simulated transient failure rate (0–1), and how
    # long a sandbox "provider batch" takes to be ready.
    BATCHROUTER_SANDBOX_LATENCY_MS = 0
    BATCHROUTER_SANDBOX_FAILURE_RATE = 0.0
    BATCHROUTER_SANDBOX_BATCH_DELAY = 2.0
    # Provider lanes: requests in flight per lane inside one work unit, read timeout of one
    # call (seconds), and how long a provider batch may make no progress before it is
    # treated as stalled and its items re-routed (seconds).
    BATCHROUTER_LANE_CONCURRENCY = 64
    BATCHROUTER_PROVIDER_TIMEOUT = 60.0
    # HTTP transport of sync lanes: "wire" (a thin aiohttp client sending the SDKs' requests;
    # the only one that reaches 1,000 items/s on two cores, see bench/fanout.py), "aiohttp"
    # (the SDKs' own aiohttp client) or "httpx" (the SDKs' default).
    BATCHROUTER_SYNC_TRANSPORT = "wire"
    BATCHROUTER_STALL_WINDOW = 3600.0
    # Circuit breakers per provider and per lane: open when at least MIN_CALLS calls in the
    # rolling window (seconds) failed at FAILURE_RATIO or more; half-open after COOLDOWN
    # seconds with PROBES trial calls.
    BATCHROUTER_BREAKER_WINDOW = 120
    BATCHROUTER_BREAKER_MIN_CALLS = 10
    BATCHROUTER_BREAKER_FAILURE_RATIO = 0.5
    BATCHROUTER_BREAKER_COOLDOWN = 30.0
    BATCHROUTER_BREAKER_PROBES = 3
    # Lifetime of signed artifact download links (seconds).
    BATCHROUTER_ARTIFACT_URL_TTL = 900
    # Webhook delivery: requests in flight per pump job, and per endpoint (a slow receiver
    # holds at most this many of them).
    BATCHROUTER_WEBHOOK_THREADS = 64
    BATCHROUTER_WEBHOOK_ENDPOINT_CONCURRENCY = 4
    # How many reverse proxies in front of the app set X-Forwarded-* (0 = trust none).
    BATCHROUTER_TRUSTED_PROXIES = 0
    # /metrics: a bearer token for scrapers (unset: only signed-in operators may read it), and
    # an internal host:port where gunicorn's master serves metrics without a token.
    BATCHROUTER_METRICS_TOKEN = None
    BATCHROUTER_METRICS_BIND = None
    # Billing (issue 8): credit packs sold through Stripe Checkout, in whole or decimal USD.
    BATCHROUTER_CREDIT_PACKS = ("10", "50", "250", "1000")
    # Warn (page banner, one email per crossing) below this available balance; $1.00.
    BATCHROUTER_LOW_BALANCE_THRESHOLD = 1_000_000
    # Reconciliation: how often (seconds) and how many days of Checkout Sessions it reads.
    BATCHROUTER_RECONCILE_INTERVAL = 24 * 3600
    BATCHROUTER_RECONCILE_DAYS = 3
    # Seconds between low-balance checks of every workspace.
    BATCHROUTER_LOW_BALANCE_INTERVAL = 300

    # --- Privacy, consent and records (SPEC §10) ---
    # Version of the privacy and cookie policies; changing it asks every visitor again.
    BATCHROUTER_POLICY_VERSION = "2026-11-01"
    # Operator-edited policy Markdown (privacy.md, cookies.md, terms.md) overrides the shipped
    # defaults in batchrouter/data/policies/ when present here.
    BATCHROUTER_POLICY_DIR = str(INSTANCE / "policies")
    # Extra subprocessors for the privacy policy, "Name: purpose; Name: purpose" (the email,
    # payment and AI providers that are configured are listed automatically).
    BATCHROUTER_SUBPROCESSORS = ""
    # Lifetimes (days) of the essential consent cookie and the analytics visitor cookie.
    BATCHROUTER_CONSENT_COOKIE_DAYS = 180
    BATCHROUTER_ANALYTICS_COOKIE_DAYS = 395
    # Throttles per client IP for the privacy request form and the contact form.
    BATCHROUTER_PRIVACY_REQUEST_LIMIT = "5 per hour"
    BATCHROUTER_SUPPORT_LIMIT = "10 per hour"
    # Lifetime (seconds) of the emailed privacy-request confirmation link, and of export links.
    BATCHROUTER_PRIVACY_CONFIRM_TTL = 24 * 3600
    BATCHROUTER_EXPORT_URL_TTL = 7 * 24 * 3600
    # Retention periods in days per data class (0 keeps forever); the purge runs hourly.
    BATCHROUTER_RETENTION_ITEM_DATA_DAYS = 30
    BATCHROUTER_RETENTION_ARTIFACT_DAYS = 30
    BATCHROUTER_RETENTION_API_EVENT_DAYS = 90
    BATCHROUTER_RETENTION_SECURITY_LOG_DAYS = 365
    BATCHROUTER_RETENTION_ANALYTICS_DAYS = 395
    BATCHROUTER_RETENTION_EMAIL_DAYS = 90
    BATCHROUTER_RETENTION_SUPPORT_DAYS = 730
    BATCHROUTER_RETENTION_INTERVAL = 3600


ENV_KEYS = [k for k in vars(Defaults) if k.isupper()]
INT_KEYS = {k for k in ENV_KEYS if isinstance(getattr(Defaults, k), int)
            and not isinstance(getattr(Defaults, k), bool)}
FLOAT_KEYS = {k for k in ENV_KEYS if isinstance(getattr(Defaults, k), float)}
BOOL_KEYS = {k for k in ENV_KEYS if isinstance(getattr(Defaults, k), bool)}
TUPLE_KEYS = {k for k in ENV_KEYS if isinstance(getattr(Defaults, k), tuple)}


def _coerce(key: str, raw: str):
    if key in BOOL_KEYS:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if key in INT_KEYS:
        return int(raw)
    if key in FLOAT_KEYS:
        return float(raw)
    if key in TUPLE_KEYS:
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def from_environment(environ=None) -> dict:
    """Read the keys of SPEC §12 (and BATCHROUTER_*) that are set in the environment."""
    environ = os.environ if environ is None else environ
    return {k: _coerce(k, environ[k]) for k in ENV_KEYS if environ.get(k) not in (None, "")}


def load_secret_key(instance: Path = INSTANCE) -> str:
    """Return instance/secret_key, creating it with 32 random bytes on first use."""
    import secrets

    instance.mkdir(parents=True, exist_ok=True)
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
