"""Darkroom settings: one file, driven by environment variables.

With no environment set this is the embedded default: SQLite and files under
var/, in-memory channel layer and cache, Dramatiq's StubBroker with worker threads
inside the server process. DATABASE_URL, BROKER_URL, REDIS_URL and the AWS_*
variables switch each part to the full stack. Bad values fail at start-up.
"""

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

import dj_database_url
from botocore.config import Config
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.getenv(name, default)


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.getenv(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.getenv(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_float(name: str, default: float) -> float:
    raw = os.getenv(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_rate(name: str, default: str) -> str:
    """A rate limit such as 60/m (per second, minute, hour or day)."""
    raw = os.getenv(name, default)
    if not re.fullmatch(r"\d+/\d*[smhd]", raw):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate like 60/m, 1000/h or 10/s")
    return raw


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def env_header(name: str) -> tuple[str, str] | None:
    """A request header and the value that marks a request as HTTPS, written "X-Forwarded-Proto: https";
    as Django's SECURE_PROXY_SSL_HEADER wants it: ("HTTP_X_FORWARDED_PROTO", "https"). None when unset."""
    raw = os.getenv(name, "")
    if not raw:
        return None
    match = re.fullmatch(r"\s*([A-Za-z0-9-]+)\s*:\s*(\S+)\s*", raw)
    if not match:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a header and value like 'X-Forwarded-Proto: https'"
        )
    header, value = match.groups()
    return "HTTP_" + header.upper().replace("-", "_"), value


def env_url(name: str, schemes: tuple[str, ...]) -> str:
    """An optional URL whose scheme must be one of `schemes`; empty when unset."""
    raw = os.getenv(name, "")
    if raw and urlparse(raw).scheme not in schemes:
        raise ImproperlyConfigured(f"{name} must start with {' or '.join(s + '://' for s in schemes)}")
    return raw


VAR_DIR = Path(env_str("DARKROOM_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# Refused at start-up once a service is configured (project.checks, darkroom.E002).
SECRET_KEY = env_str("SECRET_KEY", "embedded-default-insecure-key-change-me-for-any-real-deployment")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# HTTPS, when a TLS-terminating proxy is in front (all off by default: the embedded default is plain HTTP).
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Only behind a proxy that sets this header on every request (clients' own copies overwritten).
SECURE_PROXY_SSL_HEADER = env_header("SECURE_PROXY_SSL_HEADER")
# Probes and scrapers speak plain HTTP to the process itself.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$", r"^api/v1/health$"]

INSTALLED_APPS = [
    "daphne",  # makes `runserver` the Daphne development server (HTTP + WebSocket)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "django_prometheus",
    "django_dramatiq",
    "project",
    "processing",
    "gateway",
    "scaler",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "gateway.middleware.DeclaredBodyLimitMiddleware",
    "gateway.middleware.RequestIdMiddleware",
    "gateway.middleware.RateLimitHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ----------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A pool per process: under ASGI each request runs in a new thread, so persistent
        # connections would never be reused and every request would open a new session.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            # At least the server's request threads (project/asgi.py): no request queues for a connection,
            "max_size": env_int("DATABASE_POOL_SIZE", 20, minimum=1),
            # so a wait for one means the database is down, and waiting longer only delays the 503.
            "timeout": env_float("DATABASE_POOL_TIMEOUT", 1.0),
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "darkroom.sqlite3",
            # Worker threads and request threads write concurrently in the embedded mode.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
            # A file, not shared-cache memory, so worker threads in tests wait for locks instead of failing.
            # One per test process, so that concurrent runs don't share (and drop) one database.
            "TEST": {"NAME": VAR_DIR / f"test-{os.getpid()}.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache -------------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # One reader of each process's Redis inbox, not one per socket (gateway/layers.py).
            "BACKEND": "gateway.layers.RedisChannelLayer",
            # No socket timeout: idle subscribers wait in 5 s blocking reads (see gateway.E001).
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": None, "socket_connect_timeout": 1}],
                "capacity": 100,  # per socket: a client that stops reading holds at most this many events
                # Each server process has one inbox in Redis for all its sockets: room for a 1 s GC pause.
                "channel_capacity": {"specific.*": 2000},
                "expiry": 30,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Broker and workers -------------------------------------------------------
BROKER_URL = env_url("BROKER_URL", ("amqp", "amqps"))
# Fail fast when RabbitMQ is unreachable or blocked: a request must never hang on it.
BROKER_CONNECT_TIMEOUT = env_int("BROKER_CONNECT_TIMEOUT", 2, minimum=1)
JOB_TIME_LIMIT_SECONDS = env_int("JOB_TIME_LIMIT_SECONDS", 120, minimum=1)
JOB_MAX_RETRIES = env_int("JOB_MAX_RETRIES", 3, minimum=0)
# Starts of one job, whatever ended each (an error, or its worker killed, e.g. out of memory): past
# this the job fails as worker_lost rather than being redelivered forever. The default leaves room
# for every retry, so only lost workers make a job run out of attempts.
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", JOB_MAX_RETRIES + 1, minimum=1)
# A claimed job's lease; the worker renews it while it works, so a job whose worker
# died is claimable again once its lease runs out.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 20, minimum=3)
# A queued job whose message was never confirmed by the broker is re-published after this.
REQUEUE_UNPUBLISHED_AFTER_SECONDS = env_int("REQUEUE_UNPUBLISHED_AFTER_SECONDS", 30, minimum=1)
# A queued job that nobody claimed for this long is re-published (its message may be gone).
REQUEUE_STALE_AFTER_SECONDS = env_int("REQUEUE_STALE_AFTER_SECONDS", 900, minimum=10)
EMBEDDED_WORKERS = env_bool("EMBEDDED_WORKERS", not BROKER_URL)
EMBEDDED_WORKER_THREADS = env_int("EMBEDDED_WORKER_THREADS", 2, minimum=1)

# "after" hooks run in reverse order: FailJobWhenMessageDies sits before Retries so it
# sees the verdict Retries gives, and after DbConnections so its database work is cleaned up.
_DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Pipelines",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "processing.middleware.FailJobWhenMessageDies",
    "dramatiq.middleware.Retries",
    "processing.middleware.ExitWhenOrphaned",
]


def with_default_query(url: str, defaults: dict[str, object]) -> str:
    """`url` with `defaults` added to its query string wherever it doesn't set them itself."""
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query))
    return parts._replace(query=urlencode({**{k: str(v) for k, v in defaults.items()}, **query})).geturl()


if BROKER_URL:
    _pika_timeouts = {
        "connection_attempts": 1,
        "socket_timeout": BROKER_CONNECT_TIMEOUT,
        "stack_timeout": BROKER_CONNECT_TIMEOUT * 2,
        "blocked_connection_timeout": BROKER_CONNECT_TIMEOUT,
    }
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": with_default_query(BROKER_URL, _pika_timeouts), "confirm_delivery": True},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]

# --- Storage ------------------------------------------------------------------
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "/media/"
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 600, minimum=1),
            "file_overwrite": True,
            # botocore's own defaults (60 s to connect, 60 s per read, 5 attempts) hold a request for
            # minutes when S3 hangs; bounded, an upload gets its 503 storage_unavailable in seconds
            # and a worker's job is retried.
            "client_config": Config(
                connect_timeout=env_int("AWS_S3_CONNECT_TIMEOUT", 2, minimum=1),
                read_timeout=env_int("AWS_S3_READ_TIMEOUT", 5, minimum=1),
                retries={
                    "mode": "standard",
                    "total_max_attempts": env_int("AWS_S3_MAX_ATTEMPTS", 2, minimum=1),
                },
            ),
        },
    }
else:
    # Overwrite, so that a redelivered job rewrites its one output instead of adding a second.
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"allow_overwrite": True},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Uploads ------------------------------------------------------------------
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 25 * 1024 * 1024, minimum=1)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 50_000_000, minimum=1)
# Bounded work: what a small upload may ask the workers to make or decode.
MAX_OUTPUT_PIXELS = env_int("MAX_OUTPUT_PIXELS", MAX_IMAGE_PIXELS, minimum=1)
# Each scan of a progressive JPEG is one more pass over the whole image when it is decoded;
# ordinary encoders write about 10. libjpeg-turbo's own tools suggest refusing beyond a few hundred.
MAX_JPEG_SCANS = env_int("MAX_JPEG_SCANS", 100, minimum=1)
# A whole request body: the upload plus its multipart framing and form fields.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", MAX_UPLOAD_BYTES + 1024 * 1024, minimum=1)
# Uploads always stream to a temporary file on disk, never into memory.
FILE_UPLOAD_HANDLERS = ["gateway.uploads.LimitedTemporaryFileUploadHandler"]
FILE_UPLOAD_TEMP_DIR = VAR_DIR / "tmp"
FILE_UPLOAD_TEMP_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_MAX_MEMORY_SIZE = 512 * 1024  # what the ASGI handler spools in memory before disk
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # non-file form fields

# --- The API: owners, limits, reuse ---------------------------------------------
# A configured service means a deployment, not the embedded default on one machine: safe defaults.
SERVICES_CONFIGURED = bool(DATABASE_URL or BROKER_URL)
# Production: every API call needs a key (browser sessions from our own pages still work).
API_KEYS_REQUIRED = env_bool("API_KEYS_REQUIRED", SERVICES_CONFIGURED)
RATE_LIMIT_SUBMIT = env_rate("RATE_LIMIT_SUBMIT", "120/m")  # job-creating requests, per key or address
RATE_LIMIT_READ = env_rate("RATE_LIMIT_READ", "1200/m")  # everything else
# Proxies (e.g. nginx) whose X-Forwarded-For names the real client address. Servers must be told
# too: uvicorn's --forwarded-allow-ips (the Makefile, compose and Kubernetes pass this list).
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
# /metrics and the health checks' details: for staff, and for `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env_str("METRICS_TOKEN")
MAX_BATCH_FILES = env_int("MAX_BATCH_FILES", 20, minimum=1)
# A new job whose input, service and parameters match a completed one copies its result.
RESULT_REUSE = env_bool("RESULT_REUSE", True)
# Stored files of finished jobs are removed by POST /api/v1/files/cleanup after this long.
FILE_TTL_SECONDS = env_int("FILE_TTL_SECONDS", 24 * 3600, minimum=0)
# A submission waits this long for the broker's confirmation before answering 503.
BROKER_PUBLISH_TIMEOUT = env_float("BROKER_PUBLISH_TIMEOUT", 1.5)
# Optional: RabbitMQ's management API, for in-flight (unacknowledged) counts per queue.
RABBITMQ_MANAGEMENT_URL = env_url("RABBITMQ_MANAGEMENT_URL", ("http", "https"))

CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "x-api-key",
    "x-request-id",
]
CORS_EXPOSE_HEADERS = ["Location", "Retry-After", "X-Request-ID"] + [
    f"X-RateLimit-{name}" for name in ("Limit", "Remaining", "Reset")
]
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Static files -------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- The rest -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(job_id)s",
        },
    },
    "filters": {"context": {"()": "processing.logcontext.ContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"pika": {"level": "WARNING"}, "botocore": {"level": "WARNING"}},
}

# --- Autoscaler ---------------------------------------------------------------
# `manage.py scale_workers` (scaler/). Names as in the original design; every one is also a flag.
# The SERVICES_* spellings (the design's second table) win over the short ones when both are set.
SCALE_CHECK_INTERVAL = env_float("SCALE_CHECK_INTERVAL", 30)
MIN_INSTANCES = env_int("SERVICES_MIN_INSTANCES", env_int("MIN_INSTANCES", 1, minimum=0), minimum=0)
MAX_INSTANCES = env_int("SERVICES_MAX_INSTANCES", env_int("MAX_INSTANCES", 5, minimum=1), minimum=1)
# Work per worker process: messages waiting in RabbitMQ plus jobs being processed.
SCALE_UP_THRESHOLD = env_float("SCALE_UP_THRESHOLD", 10)
SCALE_DOWN_THRESHOLD = env_float("SCALE_DOWN_THRESHOLD", 2)
SERVICES_COOLDOWN_PERIOD = env_float("SERVICES_COOLDOWN_PERIOD", env_float("COOLDOWN_PERIOD", 120))
WORKER_THREADS = env_int("WORKER_THREADS", 2, minimum=1)  # per worker process the scaler starts
GATEWAY_MIN_INSTANCES = env_int("GATEWAY_MIN_INSTANCES", 1, minimum=1)
GATEWAY_MAX_INSTANCES = env_int("GATEWAY_MAX_INSTANCES", 3, minimum=1)
GATEWAY_LOAD_THRESHOLD_UP = env_float("GATEWAY_LOAD_THRESHOLD_UP", 80)
GATEWAY_LOAD_THRESHOLD_DOWN = env_float("GATEWAY_LOAD_THRESHOLD_DOWN", 30)
GATEWAY_COOLDOWN_PERIOD = env_float("GATEWAY_COOLDOWN_PERIOD", 180)
# How long the load score must stay past a threshold before the scaler acts on it.
GATEWAY_SUSTAIN_PERIOD = env_float("GATEWAY_SUSTAIN_PERIOD", 30)
GATEWAY_PORT_START = env_int("GATEWAY_PORT_START", 8001, minimum=0)  # 0: any free port
NGINX_LISTEN = env_str("NGINX_LISTEN", "127.0.0.1:8000")
NGINX_BINARY = env_str("NGINX_BINARY", "nginx")
SCALER_BACKEND = env_str("SCALER_BACKEND", "local")
if SCALER_BACKEND not in ("local", "kubernetes"):
    raise ImproperlyConfigured(f"SCALER_BACKEND={SCALER_BACKEND!r} is not local or kubernetes")
SCALER_HOST = env_str("SCALER_HOST", "127.0.0.1")  # where the health and metrics endpoints listen
SCALER_HEALTH_PORT = env_int("SCALER_HEALTH_PORT", 8082, minimum=0)
SCALER_METRICS_PORT = env_int("SCALER_METRICS_PORT", 9090, minimum=0)
KUBERNETES_NAMESPACE = env_str("KUBERNETES_NAMESPACE")  # empty: the scaler pod's own namespace
KUBERNETES_WORKER_DEPLOYMENT = env_str("KUBERNETES_WORKER_DEPLOYMENT", "darkroom-worker")
