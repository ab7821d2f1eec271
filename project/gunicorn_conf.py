"""gunicorn for the HTTP API in production (`make serve-http`): WSGI, several processes, threads each.

Measured here, it serves a trivial Django view about five times faster than an ASGI
server does (no event-loop-to-thread hop per request), and reads request bodies
lazily, so uploads stream to disk. WebSockets stay on uvicorn (`make serve-ws`);
nginx sends /ws/ there and everything else here.
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
