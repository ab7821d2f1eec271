"""/api/docs without the internet: Swagger UI from the project's own static files, not a CDN.

django-ninja ships Swagger UI's files, but serves them only when it is an installed app; otherwise
its docs page loads them from a CDN, and is blank offline. It is not one here (an installed app is
imported by every process, the workers too, and ninja costs 0.3 s of each start), so the page is
rendered from our template, and `SwaggerUiFiles` collects the files it names with the rest.
"""

import json
from pathlib import Path
from typing import Any, Literal, overload

import ninja
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja.openapi.docs import Swagger

# What the docs page loads (frontend/templates/api_docs.html), and the source maps its scripts name:
# the manifest storage checks that every file a script or stylesheet refers to exists. Not ReDoc,
# which ninja ships too: 4 MB nothing here serves.
SWAGGER_UI_FILES = (
    "ninja/swagger-ui-bundle.js",
    "ninja/swagger-ui-bundle.js.map",
    "ninja/swagger-ui.css",
    "ninja/swagger-ui.css.map",
    "ninja/swagger-ui-init.js",
    "ninja/favicon.svg",
)


class OfflineSwagger(Swagger):
    """ninja's Swagger page, its scripts and stylesheet from our static files."""

    def render_page(self, request: HttpRequest, api: "ninja.NinjaAPI", **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        context = {"swagger_settings": json.dumps(self.settings, indent=1), "api": api}
        return render(request, "api_docs.html", context)


class SwaggerUiFiles(BaseFinder):
    """A static files finder for SWAGGER_UI_FILES, in the folder of ninja's package."""

    storage = FileSystemStorage(location=Path(ninja.__file__).parent / "static")

    @overload
    def find(self, path: str, find_all: Literal[False] = False) -> str | None: ...
    @overload
    def find(self, path: str, find_all: Literal[True]) -> list[str]: ...
    def find(self, path: str, find_all: bool = False) -> str | list[str] | None:
        if path not in SWAGGER_UI_FILES:
            return [] if find_all else None
        found = self.storage.path(path)
        return [found] if find_all else found

    def list(self, ignore_patterns: Any) -> Any:
        for path in SWAGGER_UI_FILES:
            yield path, self.storage
