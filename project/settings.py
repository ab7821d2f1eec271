"""Darkroom settings: one file, driven by environment variables.

With no environment set this is the embedded default: SQLite and files under
var/, in-memory channel layer and cache, Dramatiq's StubBroker with worker threads
inside the server process. DATABASE_URL, BROKER_URL, REDIS_URL and the AWS_*
variables switch each part to the full stack. Every variable is declared in project/config.py
(docs/settings.md lists them); bad values fail at start-up.
"""

import os
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

import dj_database_url

from project import config

BASE_DIR = Path(__file__).resolve().parent.parent

# Every setting read from the environment is declared once, in project/config.py (listed in
# docs/settings.md): parsed and checked here, each becomes the Django setting of the same name.
env = config.load(os.environ)
globals().update(config.django_settings(env))

env.VAR_DIR.mkdir(parents=True, exist_ok=True)

# Probes and scrapers speak plain HTTP to the process itself.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$", r"^api/v1/health$"]

INSTALLED_APPS = [
    # The admin registers its models when the URLs load (project/urls.py), so a worker process,
    # which never loads them, never imports the admin (gateway/admin.py).
    "django.contrib.admin.apps.SimpleAdminConfig",
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
# `manage.py runserver` is the Daphne development server (HTTP + WebSocket). Only there: Daphne's app
# installs Twisted's reactor when it is loaded, about 0.2 s of CPU at every other process's start.
if sys.argv[1:2] == ["runserver"]:
    INSTALLED_APPS.insert(0, "daphne")

# Sessions, CSRF, users and messages: Django's, passed over for API requests without cookies, which
# have none to use (gateway.http.middleware).
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "gateway.http.middleware.DeclaredBodyLimitMiddleware",
    "gateway.http.middleware.RequestIdMiddleware",
    "gateway.http.middleware.ApiErrorsAsJson",
    "gateway.http.middleware.RateLimitHeadersMiddleware",
    "gateway.http.middleware.BrowserSessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "gateway.http.middleware.BrowserCsrfViewMiddleware",
    "gateway.http.middleware.BrowserAuthenticationMiddleware",
    "gateway.http.middleware.BrowserMessageMiddleware",
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
if env.DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(env.DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A pool per process: under ASGI each request runs in a new thread, so persistent
        # connections would never be reused and every request would open a new session.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            # At least the server's request threads (project/asgi.py): no request queues for a connection,
            "max_size": env.DATABASE_POOL_SIZE,
            # so a wait for one means the database is down, and waiting longer only delays the 503.
            "timeout": env.DATABASE_POOL_TIMEOUT,
        }
        if env.DATABASE_PREPARED_STATEMENTS:
            # psycopg prepares a statement the fifth time a connection runs it (its own default);
            # pooled connections keep them, so the hot statements are parsed and planned once each.
            DATABASES["default"]["OPTIONS"] |= {"server_side_binding": True, "prepare_threshold": 5}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.VAR_DIR / "darkroom.sqlite3",
            # Worker threads and request threads write concurrently in the embedded mode.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
            # A file, not shared-cache memory, so worker threads in tests wait for locks instead of failing.
            # One per test process, so that concurrent runs don't share (and drop) one database.
            "TEST": {"NAME": env.VAR_DIR / f"test-{os.getpid()}.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache -------------------------------------------
if env.REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # One reader of each process's Redis inbox, not one per socket (processing/events/layer.py).
            "BACKEND": "processing.events.layer.RedisChannelLayer",
            # No socket timeout: idle subscribers wait in 5 s blocking reads (see gateway.E001).
            "CONFIG": {
                "hosts": [{"address": env.REDIS_URL, "socket_timeout": None, "socket_connect_timeout": 1}],
                "capacity": 100,  # per socket: a client that stops reading holds at most this many events
                # Each server process has one inbox in Redis for all its sockets: room for a 1 s GC pause.
                "channel_capacity": {"specific.*": 2000},
                "expiry": 30,
                # A process that dies stays in its groups, sent events nobody reads, until this runs
                # out (channels-redis: a day); the live ones join theirs again well within it.
                "group_expiry": 300,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Broker and workers -------------------------------------------------------
# "after" hooks run in reverse order: FailJobWhenMessageDies sits before Retries so it
# sees the verdict Retries gives, and after DbConnections so its database work is cleaned up.
_DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Pipelines",
    "processing.worker.middleware.KeepDbConnections",
    "processing.worker.middleware.FailJobWhenMessageDies",
    "dramatiq.middleware.Retries",
    "processing.worker.middleware.ExitWhenOrphaned",
    "processing.worker.middleware.ReuseFreedMemory",
    "processing.worker.middleware.RefuseToConsumeNothing",
    "processing.worker.middleware.NoIdleBrokerConnections",
]


def with_default_query(url: str, defaults: dict[str, object]) -> str:
    """`url` with `defaults` added to its query string wherever it doesn't set them itself."""
    parts = urlparse(url)
    query = dict(parse_qsl(parts.query))
    return parts._replace(query=urlencode({**{k: str(v) for k, v in defaults.items()}, **query})).geturl()


if env.BROKER_URL:
    _pika_timeouts = {
        "connection_attempts": 1,
        "socket_timeout": env.BROKER_CONNECT_TIMEOUT,
        "stack_timeout": env.BROKER_CONNECT_TIMEOUT * 2,
        "blocked_connection_timeout": env.BROKER_CONNECT_TIMEOUT,
    }
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": with_default_query(env.BROKER_URL, _pika_timeouts), "confirm_delivery": True},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
DRAMATIQ_AUTODISCOVER_MODULES = ["worker.actors"]

# --- Storage ------------------------------------------------------------------
MEDIA_ROOT = env.VAR_DIR / "media"
MEDIA_URL = "/media/"
if env.AWS_STORAGE_BUCKET_NAME:
    from botocore.config import Config  # here, not above: botocore costs 0.15 s at every start

    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env.AWS_S3_ENDPOINT_URL or None,
            "access_key": env.AWS_ACCESS_KEY_ID or None,
            "secret_key": env.AWS_SECRET_ACCESS_KEY or None,
            "region_name": env.AWS_S3_REGION_NAME or None,
            "querystring_expire": env.AWS_QUERYSTRING_EXPIRE,
            "file_overwrite": True,
            # botocore's own defaults (60 s to connect, 60 s per read, 5 attempts) hold a request for
            # minutes when S3 hangs; bounded, an upload gets its 503 storage_unavailable in seconds
            # and a worker's job is retried.
            "client_config": Config(
                connect_timeout=env.AWS_S3_CONNECT_TIMEOUT,
                read_timeout=env.AWS_S3_READ_TIMEOUT,
                retries={"mode": "standard", "total_max_attempts": env.AWS_S3_MAX_ATTEMPTS},
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
# A request of at most FILE_UPLOAD_MAX_MEMORY_SIZE holds its upload in memory; a larger one streams
# to a temporary file on disk (gateway.http.uploads).
FILE_UPLOAD_HANDLERS = [
    "gateway.http.uploads.LimitedMemoryFileUploadHandler",
    "gateway.http.uploads.LimitedTemporaryFileUploadHandler",
]
FILE_UPLOAD_TEMP_DIR = env.VAR_DIR / "tmp"
FILE_UPLOAD_TEMP_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_MAX_MEMORY_SIZE = 512 * 1024  # a request up to this size keeps its upload in memory
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # non-file form fields

# --- The API: owners, limits, reuse ---------------------------------------------
# With API_KEYS_REQUIRED, the pages send visitors to sign in (gateway.auth.callers), then back home.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
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
STATIC_ROOT = env.VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "gateway.api.docs.SwaggerUiFiles",  # Swagger UI for /api/docs, so that it needs no CDN
]
# Files not worth compressing: whitenoise's list of those compressed already (less Flash and video,
# which nothing here ships), and source maps, which only developer tools read.
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = (
    "jpg",
    "jpeg",
    "png",
    "gif",
    "webp",
    "avif",
    "woff",
    "woff2",
    "zip",
    "gz",
    "br",
    "map",
)

# --- The rest -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

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
    "root": {"handlers": ["console"], "level": env.LOG_LEVEL},
    "loggers": {"pika": {"level": "WARNING"}, "botocore": {"level": "WARNING"}},
}
