from typing import Any

from django.http import HttpRequest
from ninja import Router

from gateway.api.schemas import ServicesOut
from processing.imaging.operations import OPERATIONS

router = Router(tags=["services"])


@router.get("/services", response=ServicesOut, auth=None, url_name="services")
def list_services(request: HttpRequest) -> dict[str, Any]:
    """The operations, each with its description and the JSON schema of its parameters."""
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
        ]
    }
