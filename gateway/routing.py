"""WebSocket routes, behind the origin check (sessions and keys are read by the consumers)."""

from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path, re_path

from gateway import consumers

websocket_urlpatterns = [
    path("ws/jobs/", consumers.CallerJobsConsumer.as_asgi(), name="ws-jobs"),
    re_path(r"^ws/jobs/(?P<job_id>[^/]+)/?$", consumers.JobConsumer.as_asgi(), name="ws-job"),
    re_path(r"", consumers.UnknownEndpointConsumer.as_asgi()),
]


class BrowserOriginValidator(OriginValidator):
    """Refuses a handshake whose Origin is not one of `allowed_origins`.

    Browsers always send Origin, and a page of another site must not reach the WebSocket
    with the user's cookie (cross-site WebSocket hijacking). Scripts and services send
    none and authenticate with an API key, so a handshake without Origin goes through;
    channels' own validator refuses it.
    """

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or self.validate_origin(parsed_origin)


def allowed_hosts_origin_validator(application):
    """channels' AllowedHostsOriginValidator, letting non-browser clients through."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)


application = allowed_hosts_origin_validator(URLRouter(websocket_urlpatterns))
