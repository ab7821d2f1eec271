"""ASGI entry point: HTTP (Django) and WebSockets (Channels), behind the request body limit.

Plain HTTP requests run Django's synchronous handler on a pool of reused threads
(a2wsgi): Django's ASGI handler would start a thread for each request and hop to it
through every middleware, several times the cost of the view itself (`make bench-api`).
Requests that wait — a long poll, `GET /api/v1/jobs/{id}?wait=N` — run on Django's
ASGI handler instead, on the event loop, holding no thread while they wait.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi = get_asgi_application()  # sets Django up before anything imports models

from a2wsgi import WSGIMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from gateway import routing  # noqa: E402
from gateway.middleware import RequestBodyLimit, WaitsOnTheLoop  # noqa: E402
from processing import embedded  # noqa: E402

SYNC_THREADS = 16  # requests handled at once on the thread pool; waits never take one

django_sync = WSGIMiddleware(get_wsgi_application(), workers=SYNC_THREADS)
application = ProtocolTypeRouter(
    {"http": RequestBodyLimit(WaitsOnTheLoop(django_sync, django_asgi)), "websocket": routing.application}
)

embedded.start()  # in-process workers in the embedded default; a no-op in the full stack
