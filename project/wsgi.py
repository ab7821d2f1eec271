import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_wsgi_application()

from project.checks import refuse_unsafe_start  # noqa: E402

refuse_unsafe_start()  # e.g. the default SECRET_KEY with services configured: don't serve
