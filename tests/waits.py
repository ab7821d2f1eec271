"""Requests through the ASGI entry point's HTTP stack as the server runs it, in the test's event
loop: the synchronous Django app on the server's request threads (gateway.http.wsgi_threads),
behind gateway.live.waiting.LongPolls.
"""

import asyncio
import contextlib

import httpx
from channels.db import database_sync_to_async
from django.core.wsgi import get_wsgi_application

from gateway.http.wsgi_threads import ThreadedWsgi
from gateway.live import waiting

THREADS = 4  # the server's request threads

in_thread = database_sync_to_async


@contextlib.asynccontextmanager
async def client_of_the_server(views: list | None = None):
    """An HTTP client of the server's HTTP stack; `views` collects the paths that reached Django."""
    django_http = ThreadedWsgi(get_wsgi_application(), workers=THREADS)

    async def counted(scope, receive, send):
        if views is not None:
            views.append(scope["path"])
        await django_http(scope, receive, send)

    app = waiting.LongPolls(counted)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


async def until(condition, what: str) -> None:
    """Arrange, don't guess: wait (5 s at most) for the state a test needs."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def waiting_on(job_id: str) -> set:
    return waiting.EndListener.of_running_loop().waiters.get(str(job_id), set())


async def until_someone_waits_on(*job_ids: str) -> None:
    listener = waiting.EndListener.of_running_loop()
    await until(
        lambda: all(waiting_on(job_id) for job_id in job_ids) and listener.hearing_since is not None,
        "a request waits on each job",
    )
