"""gunicorn (WSGI), kept for comparison: `make bench-api` measures it beside the ASGI servers.

It answers a trivial view faster (no event-loop-to-thread hop per request) but holds a
worker thread for every long poll, so the API is served by uvicorn (see docs/deployment.md,
"What serves what").
"""

import os

# Imported under another name: gunicorn reads every name here as a setting, and `config` is one.
from project.config import load as load_settings

env = load_settings(os.environ)  # GUNICORN_BIND, WEB_CONCURRENCY, GUNICORN_THREADS: docs/settings.md
bind = env.GUNICORN_BIND
workers = env.WEB_CONCURRENCY
worker_class = "gthread"
threads = env.GUNICORN_THREADS
timeout = 120  # a 25 MB upload from a slow client, when no proxy buffers it
graceful_timeout = 30
accesslog = None  # requests are logged by the application, as JSON
max_requests = 2000  # recycle workers now and then, against slow leaks
max_requests_jitter = 200
