"""gunicorn (WSGI), kept for comparison: `make bench-api` measures it beside the ASGI servers.

It answers a trivial view faster (no event-loop-to-thread hop per request) but holds a
worker thread for every long poll, so the API is served by uvicorn (see README, "What
serves what").
"""

import multiprocessing
import os

bind = os.getenv("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.getenv("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.getenv("GUNICORN_THREADS", "4"))
timeout = 120  # a 25 MB upload from a slow client, when no proxy buffers it
graceful_timeout = 30
accesslog = None  # requests are logged by the application, as JSON
max_requests = 2000  # recycle workers now and then, against slow leaks
max_requests_jitter = 200
