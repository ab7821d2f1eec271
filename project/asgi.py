"""ASGI entry point: HTTP (Django) and WebSockets (Channels), behind the request body limit."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi = get_asgi_application()  # sets Django up before anything imports models

from channels.routing import ProtocolTypeRouter  # noqa: E402

from gateway import routing  # noqa: E402
from gateway.middleware import RequestBodyLimit  # noqa: E402
from processing import embedded  # noqa: E402

application = ProtocolTypeRouter({"http": RequestBodyLimit(django_asgi), "websocket": routing.application})

embedded.start()  # in-process workers in the embedded default; a no-op in the full stack
