"""The project's URLs with the bare views of bench.floor_views before them (bench.floor_settings)."""

from django.urls import path

import project.urls
from bench import floor_views


def route(url_path: str) -> str:
    return url_path.removeprefix("/")


urlpatterns = [
    path(route(floor_views.PING_PATH), floor_views.ping),
    path(route(floor_views.UPLOAD_PATH), floor_views.upload),
    path(route(floor_views.UPLOAD_RESULT_PATH), floor_views.upload_result),
    *project.urls.urlpatterns,
]

handler500 = project.urls.handler500
