"""Assets: images an owner uploads once and names by id in watermark jobs (`asset_id`).

The domain (processing.assets) checks, stores and finds them; here, HTTP in and JSON out. Each
caller sees only its owner's assets: another owner's is a 404, as one that never existed.
"""

import uuid
from typing import Any

from django.http import HttpResponse
from ninja import Router, Status

from gateway.api.auth import READ_LIMIT, SUBMIT_LIMIT, CallerRequest
from gateway.api.schemas import AssetOut, AssetsOut, ErrorOut
from gateway.http import intake
from gateway.http.errors import invalid_parameters, not_found
from processing import assets
from processing.models import Asset

router = Router(tags=["assets"])

MAX_NAME_LENGTH = 255  # Asset.name

UPLOAD_ERRORS = {code: ErrorOut for code in (400, 401, 403, 409, 411, 413, 415, 422, 429, 503)}
READ_ERRORS = {code: ErrorOut for code in (401, 403, 404, 429, 503)}

UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "name": {
                            "type": "string",
                            "maxLength": 255,
                            "description": "to tell it apart; the file's by default",
                        },
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


def asset_json(asset: Asset) -> dict[str, Any]:
    return {
        "asset_id": str(asset.id),
        "name": asset.name,
        "source_format": asset.source_format,
        "width": asset.width,
        "height": asset.height,
        "bytes": asset.bytes,
        "created_at": asset.created_at,
        "url": asset_url(asset.id),
    }


def asset_url(asset_id: uuid.UUID) -> str:
    return f"/api/v1/assets/{asset_id}"


def get_asset(request: CallerRequest, asset_id: str) -> Asset:
    """The caller's asset, or 404: someone else's looks exactly like one that doesn't exist."""
    try:
        found = assets.find(uuid.UUID(asset_id), request.auth.owner)
    except ValueError:
        found = None
    if found is None:
        raise not_found("asset")
    return found


def check_form(request: CallerRequest) -> None:
    """The upload's form fields are `name` alone (a browser session's form adds its CSRF token)."""
    problems = [
        {"field": field, "rule": "extra_forbidden", "message": "not a field of an asset upload"}
        for field in request.POST
        if field not in ("name", "csrfmiddlewaretoken")
    ]
    if len(request.POST.get("name", "")) > MAX_NAME_LENGTH:
        message = f"at most {MAX_NAME_LENGTH} characters"
        problems.append({"field": "name", "rule": "string_too_long", "message": message})
    if problems:
        raise invalid_parameters(problems)


@router.post(
    "/assets",
    response={201: AssetOut, **UPLOAD_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="asset_upload",
    openapi_extra=UPLOAD_DOC,
)
def upload_asset(request: CallerRequest, response: HttpResponse) -> Status[dict[str, Any]]:
    """Upload `image` (multipart) once, to overlay on your results: watermark's `asset_id` names it.
    Any supported format, within MAX_ASSET_BYTES and MAX_ASSET_PIXELS; MAX_ASSETS_PER_OWNER each."""
    check_form(request)
    name = request.POST.get("name", "")
    upload = intake.uploads_from(request, at_most=1)[0]
    asset = assets.create(request.auth.owner, upload, name=name)
    response["Location"] = asset_url(asset.id)
    return Status(201, asset_json(asset))


@router.get("/assets", response={200: AssetsOut, **READ_ERRORS}, throttle=READ_LIMIT, url_name="asset_list")
def list_assets(request: CallerRequest) -> dict[str, Any]:
    """Your assets, newest first (MAX_ASSETS_PER_OWNER at most, so on one page)."""
    return {"assets": [asset_json(asset) for asset in assets.owned_assets(request.auth.owner)]}


@router.get(
    "/assets/{asset_id}",
    response={200: AssetOut, **READ_ERRORS},
    throttle=READ_LIMIT,
    url_name="asset_detail",
)
def asset_detail(request: CallerRequest, asset_id: str) -> dict[str, Any]:
    return asset_json(get_asset(request, asset_id))


@router.delete(
    "/assets/{asset_id}", response={204: None, **READ_ERRORS}, throttle=SUBMIT_LIMIT, url_name="asset_delete"
)
def delete_asset(request: CallerRequest, asset_id: str) -> Status[None]:
    """Delete the asset and its file: jobs that name it from now on are refused, and those queued fail."""
    get_asset(request, asset_id).delete()
    return Status(204, None)
