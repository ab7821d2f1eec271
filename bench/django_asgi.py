"""Django's own ASGI handler over the project, for `make bench-api`'s comparison with project.asgi.

HTTP only (no WebSockets, no long polls' wait on the event loop): what is compared is how a
synchronous view is reached, through a thread per request (Django) or a pool of reused
threads (project.asgi).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_asgi_application()
