from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Router

from gateway.api.schemas import ServicesOut
from processing.imaging.operations import OPERATIONS
from processing.imaging.recipes import OUTPUT_FIELDS

router = Router(tags=["services"])


@router.get("/services", response=ServicesOut, auth=None, url_name="services")
def list_services(request: HttpRequest) -> dict[str, Any]:
    """The operations, each with its description and the JSON schema of its parameters; and how to run
    several of them on one image, as the steps of a recipe."""
    return {
        "services": [
            {
                "name": operation.name,
                "description": operation.description,
                "produces": operation.produces,
                "animates": operation.animates,
                "parameters": operation.json_schema(),
                "submit_url": f"/api/v1/process/{operation.name}",
            }
            for operation in OPERATIONS.values()
        ],
        "recipes": {
            "submit_url": "/api/v1/process",
            "output_options": list(OUTPUT_FIELDS),
            "max_steps": settings.MAX_STEPS,
            "presets_url": "/api/v1/presets",
        },
    }
