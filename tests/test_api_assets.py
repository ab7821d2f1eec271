"""/api/v1/assets, and watermark jobs naming an asset: what a client sees, in-process with a real worker."""

import io
import uuid

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from processing import assets, storage
from processing.errors import AssetNotFound
from processing.models import Asset, Job
from tests import images

pytestmark = pytest.mark.django_db(transaction=True)


def upload_asset(
    client, data: bytes | None = None, headers: dict | None = None, filename="logo.png", **fields
):
    payload = {
        "image": SimpleUploadedFile(filename, images.png_bytes(images.logo()) if data is None else data)
    }
    return client.post("/api/v1/assets", {**payload, **fields}, headers=headers or {})


def watermark(client, asset_id: str, headers: dict | None = None, image=None, **params):
    source = images.solid(200, 100, images.WHITE) if image is None else image
    data = {"image": SimpleUploadedFile("photo.png", images.png_bytes(source)), "asset_id": asset_id}
    return client.post("/api/v1/process/watermark", {**data, **params}, headers=headers or {})


def error_of(response) -> dict:
    return response.json()["error"]


def download(client, job_id: str, headers: dict | None = None) -> np.ndarray:
    response = client.get(f"/api/v1/download/{job_id}", headers=headers or {})
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(b"".join(response.streaming_content))))


# --- Uploading, reading, deleting ---------------------------------------------------------------


def test_an_uploaded_asset_is_answered_201_with_where_it_lives_and_listed_for_its_owner(client):
    response = upload_asset(client, images.jpeg_bytes(images.gradient(60, 30)), filename="mark.jpg")

    assert response.status_code == 201, response.content
    asset = response.json()
    assert (asset["name"], asset["source_format"], asset["width"], asset["height"]) == (
        "mark.jpg",
        "jpeg",
        60,
        30,
    )
    assert response["Location"] == asset["url"] == f"/api/v1/assets/{asset['asset_id']}"
    assert client.get(asset["url"]).json() == asset
    assert [found["asset_id"] for found in client.get("/api/v1/assets").json()["assets"]] == [
        asset["asset_id"]
    ]
    # Kept as a PNG of its pixels: the workers never decode the client's file.
    stored = Image.open(io.BytesIO(storage.read(Asset.objects.get(id=asset["asset_id"]).key)))
    assert stored.format == "PNG" and stored.size == (60, 30) and asset["bytes"] > 0


def test_a_name_given_with_the_upload_is_kept(client):
    assert upload_asset(client, name="Company logo").json()["name"] == "Company logo"


def test_another_owners_asset_looks_exactly_like_one_that_does_not_exist(client, api_key):
    alice, bob = api_key("alice"), api_key("bob")
    asset_id = upload_asset(client, headers=alice).json()["asset_id"]
    nobodys = str(uuid.uuid4())

    assert client.get("/api/v1/assets", headers=bob).json() == {"assets": []}
    for method in (client.get, client.delete):
        theirs, missing = (
            method(f"/api/v1/assets/{asset_id}", headers=bob),
            method(f"/api/v1/assets/{nobodys}", headers=bob),
        )
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()
    assert client.get(f"/api/v1/assets/{asset_id}", headers=alice).status_code == 200  # still there
    assert client.get("/api/v1/assets/not-an-id", headers=alice).status_code == 404


def test_deleting_an_asset_removes_it_and_its_file(client):
    asset_id = upload_asset(client).json()["asset_id"]
    key = Asset.objects.get(id=asset_id).key
    assert default_storage.exists(key)

    assert client.delete(f"/api/v1/assets/{asset_id}").status_code == 204

    assert client.get(f"/api/v1/assets/{asset_id}").status_code == 404
    assert client.get("/api/v1/assets").json() == {"assets": []}
    assert not default_storage.exists(key)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_image"),
        (images.text_bytes(), 415, "unsupported_image"),
        (images.svg_bytes(), 415, "unsupported_image"),
        (images.cut_png_bytes(200), 422, "corrupt_image"),  # a whole header, pixels cut short
        (images.png_header_bytes(30000, 30000), 422, "image_too_large"),
    ],
)
def test_what_is_not_a_whole_supported_image_within_the_limits_is_refused(client, data, status, code):
    response = upload_asset(client, data)
    assert (response.status_code, error_of(response)["code"]) == (status, code), response.content
    assert not Asset.objects.exists()


def test_an_asset_over_the_byte_or_pixel_limit_is_refused_naming_the_limit(client, settings):
    settings.MAX_ASSET_BYTES = 100
    response = upload_asset(client, images.png_bytes(images.noise(32, 32)))
    assert (response.status_code, error_of(response)["code"]) == (413, "asset_too_large")
    assert "MAX_ASSET_BYTES" in error_of(response)["message"]

    settings.MAX_ASSET_BYTES, settings.MAX_ASSET_PIXELS = 10_000_000, 1000
    response = upload_asset(client, images.png_bytes(images.gradient(40, 30)))
    assert (response.status_code, error_of(response)["code"]) == (422, "image_too_large")
    assert not Asset.objects.exists()


def test_an_owner_keeps_at_most_so_many_assets(client, api_key, settings):
    settings.MAX_ASSETS_PER_OWNER = 1
    alice, bob = api_key("alice"), api_key("bob")
    first = upload_asset(client, headers=alice).json()["asset_id"]

    refused = upload_asset(client, headers=alice)
    assert (refused.status_code, error_of(refused)["code"]) == (409, "too_many_assets")
    assert upload_asset(client, headers=bob).status_code == 201  # each owner counts their own
    client.delete(f"/api/v1/assets/{first}", headers=alice)
    assert upload_asset(client, headers=alice).status_code == 201


def test_an_upload_without_an_image_is_a_400(client):
    response = client.post("/api/v1/assets", {"name": "nothing"})
    assert (response.status_code, error_of(response)["code"]) == (400, "missing_image")


def test_fields_other_than_a_name_of_a_few_hundred_characters_are_refused(client):
    too_long = upload_asset(client, name="x" * 256)
    unknown = upload_asset(client, opacity="0.5")
    assert too_long.status_code == unknown.status_code == 422
    assert [problem["field"] for problem in error_of(too_long)["fields"]] == ["name"]
    assert [problem["field"] for problem in error_of(unknown)["fields"]] == ["opacity"]
    assert not Asset.objects.exists()


# --- Watermark jobs that name an asset ------------------------------------------------------------


def test_a_job_overlays_its_owners_asset_in_the_worker(client, api_key, run_jobs):
    alice = api_key("alice")
    asset_id = upload_asset(client, headers=alice).json()["asset_id"]
    job = watermark(client, asset_id, alice, scale=0.2, gravity="north-east", opacity=1, format="png")
    assert job.status_code == 202, job.content
    run_jobs()

    result = download(client, job.json()["job_id"], alice)
    # The 40 x 20 logo at the top right: its opaque blue half, then its transparent half over white.
    assert (result[0:20, 160:180] == (0, 0, 255)).all()
    assert (result[0:20, 180:] == 255).all() and (result[:, :160] == 255).all() and (result[20:] == 255).all()


def test_a_job_naming_another_owners_asset_is_refused_as_if_there_were_none(client, api_key, stub_broker):
    alice, bob = api_key("alice"), api_key("bob")
    asset_id = upload_asset(client, headers=alice).json()["asset_id"]
    nobodys = str(uuid.uuid4())

    theirs, missing = watermark(client, asset_id, bob), watermark(client, nobodys, bob)

    assert theirs.status_code == missing.status_code == 422
    assert error_of(theirs)["code"] == "asset_not_found"
    assert error_of(theirs)["fields"] == [
        {"field": "asset_id", "rule": "asset_not_found", "message": f"there is no asset {asset_id}"}
    ]
    assert error_of(theirs)["message"].replace(asset_id, nobodys) == error_of(missing)["message"]
    assert not Job.objects.exists() and stub_broker.queues["images"].qsize() == 0


def test_a_job_whose_asset_is_deleted_before_it_runs_fails_naming_the_asset(client, stub_broker, request):
    asset_id = upload_asset(client).json()["asset_id"]
    job_id = watermark(client, asset_id).json()["job_id"]  # queued: no worker is running yet
    client.delete(f"/api/v1/assets/{asset_id}")

    request.getfixturevalue("run_jobs")()  # a worker starts, and runs it

    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "asset_not_found" and asset_id in job["error"]["message"]


def test_a_text_watermark_far_larger_than_the_image_is_refused_before_it_is_queued(client, stub_broker):
    data = {"image": SimpleUploadedFile("small.png", images.png_bytes(images.gradient(64, 48)))}
    response = client.post("/api/v1/process/watermark", {**data, "text": "W" * 100, "font_size": 1000})
    assert response.status_code == 422
    assert error_of(response)["fields"][0]["field"] == "font_size"
    assert stub_broker.queues["images"].qsize() == 0


# --- How a worker reads assets ---------------------------------------------------------------------


def test_a_worker_decodes_an_asset_once_and_still_sees_its_deletion_at_once(client, count_calls):
    asset_id = uuid.UUID(upload_asset(client).json()["asset_id"])
    source = assets.StoredAssets()
    decodes = count_calls(assets, "decoded")

    first, again = source.image(asset_id), source.image(asset_id)
    assert first is again and len(decodes) == 1 and first.mode == "RGBA" and first.size == (40, 20)
    Asset.objects.filter(id=asset_id).delete()
    with pytest.raises(AssetNotFound):
        source.image(asset_id)


def test_the_decoded_assets_a_process_keeps_are_bounded_by_their_pixels():
    cache = assets.DecodedCache(capacity=300)
    for key in ("a", "b", "c"):
        cache.put(key, Image.new("RGBA", (10, 10)))
    cache.get("a")  # used since: "b" is now the least recently used
    cache.put("d", Image.new("RGBA", (10, 10)))
    assert [key for key in "abcd" if cache.get(key) is not None] == ["a", "c", "d"]
    assert cache.pixels() == 300


# --- The document ---------------------------------------------------------------------------------


def test_the_openapi_document_describes_the_assets_and_the_watermark_service(client):
    spec = client.get("/api/v1/openapi.json").json()
    assert {"get", "post"} <= set(spec["paths"]["/api/v1/assets"])
    assert {"get", "delete"} <= set(spec["paths"]["/api/v1/assets/{asset_id}"])
    upload = spec["paths"]["/api/v1/assets"]["post"]
    assert "image" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"201", "413", "415"} <= set(upload["responses"])
    services = {service["name"]: service for service in client.get("/api/v1/services").json()["services"]}
    parameters = services["watermark"]["parameters"]["properties"]
    assert {"text", "asset_id", "font_size", "color", "opacity", "gravity", "tile", "scale"} <= set(
        parameters
    )
