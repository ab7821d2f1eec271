"""Presets: named recipes a client uses as preset=<name> (processing.jobs.presets)."""

from typing import Any

from django.http import HttpRequest
from ninja import Router

from gateway.api.schemas import PresetsOut
from processing.jobs import presets

router = Router(tags=["presets"])


@router.get("/presets", response=PresetsOut, auth=None, url_name="presets")
def list_presets(request: HttpRequest) -> dict[str, Any]:
    """Every preset: its name, what it does, and its recipe as a job made with it runs it (each step's
    parameters as parsed, the output options beside them). A preset made in the admin replaces one of
    the same name declared in the PRESETS setting (`source` says which it is)."""
    return {
        "presets": [
            {
                "name": definition.name,
                "description": definition.description,
                "source": definition.source,
                "steps": [step.canonical() for step in recipe.steps],
                "output": recipe.output_options(),
            }
            for definition, recipe in presets.usable()
        ],
        "submit_url": "/api/v1/process",
    }
