"""The project's settings with bench.floor_urls for its URLs: the server `make bench-api` starts for
its upload figures runs with DJANGO_SETTINGS_MODULE=bench.floor_settings, and no other does."""

from project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor_urls"
