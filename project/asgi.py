"""ASGI entry point: HTTP (Django) and WebSockets (Channels), behind the request body limit.

HTTP requests run Django's synchronous handler on a pool of reused threads (gateway.http.wsgi_threads):
Django's ASGI handler would start a thread for each request and hop to it through every
middleware, several times the cost of the view itself (`make bench-api`). A long poll,
`GET /api/v1/jobs/{id}?wait=N`, and a submission with `Prefer: wait=N` wait after their view on
the event loop, holding no thread (gateway.live.waiting.LongPolls).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_wsgi = get_wsgi_application()  # sets Django up before anything imports models

from project.checks import refuse_unsafe_start  # noqa: E402

refuse_unsafe_start()  # e.g. the default SECRET_KEY with services configured: don't serve

from gateway.http.middleware import RequestBodyLimit  # noqa: E402
from gateway.http.wsgi_threads import ThreadedWsgi  # noqa: E402
from gateway.live import gc_pauses, routing  # noqa: E402
from gateway.live.subscriptions import Subscriptions  # noqa: E402
from gateway.live.waiting import EndListener, LongPolls  # noqa: E402
from processing.worker import embedded  # noqa: E402

SYNC_THREADS = 16  # requests handled at once on the thread pool; waits never take one
# Seconds a stopping process gives its live channel to leave its groups: each call to Redis has
# processing.events.sender.LAYER_TIMEOUT, and a loaded machine's shutdown may need a few of them.
LEAVE_GROUPS_WITHIN = 5.0

# A response held whole goes back to the event loop in one hop (gateway/http/wsgi_threads.py).
django_http = ThreadedWsgi(django_wsgi, workers=SYNC_THREADS)
http_application = RequestBodyLimit(LongPolls(django_http))


async def application(scope, receive, send):
    """HTTP to Django, WebSockets to gateway.live.routing: the one frame every open socket keeps
    above its own."""
    if scope["type"] == "http":
        return await http_application(scope, receive, send)
    if scope["type"] == "websocket":
        return await routing.application(scope, receive, send)
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    raise ValueError(f"no application for {scope['type']!r} connections")


async def lifespan(receive, send):
    """Start-up has nothing to do here (what the process needs starts on import, below), and says
    so: a server whose lifespan events go unanswered logs that the protocol "appears unsupported",
    which reads like a fault at every start. At shutdown, the process's live channel leaves its
    groups, rather than being sent every job's end, dead, until its membership expires."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # The long polls' listener first: it would take the channel's stop for a failure.
            await EndListener.stop_on_running_loop(timeout=LEAVE_GROUPS_WITHIN)
            await Subscriptions.stop_on_running_loop(timeout=LEAVE_GROUPS_WITHIN)
            await send({"type": "lifespan.shutdown.complete"})
            return


embedded.start()  # in-process workers in the embedded default; a no-op in the full stack
gc_pauses.freeze_what_is_loaded()  # one full collection before serving: nobody waits on it
gc_pauses.watch()
