"""The first module a worker process imports (scaler.backends.processes.worker_command): Django set
up for the actors, as `manage.py rundramatiq` does, but without that command's own Django start."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django_dramatiq.setup  # noqa: E402, F401  (it calls django.setup())
