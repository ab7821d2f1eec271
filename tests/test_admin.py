"""The jobs admin: filters, search, thumbnails, read-only audit fields, and its actions."""

import io
import re
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from processing import storage
from processing.imaging import admin_thumbnails
from processing.jobs import lifecycle
from processing.models import Asset, Job
from tests import images
from tests.factories import process_queued
from tests.uploads import png, submit

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/processing/job/"


def create_job(
    client, service: str = "grayscale", seed: int = 0, headers: dict | None = None, **params
) -> Job:
    """A job made through the API, each from an image of its own (so no result is reused)."""
    image = png(image=images.noise(32, 24, seed=seed))
    response = submit(client, service, headers=headers, image=image, **params)
    assert response.status_code == 202, response.content
    return Job.objects.get(id=response.json()["job_id"])


def failed_job(client, broker, code: str = "processing_error", seed: int = 0) -> Job:
    """A job whose message died in the queue: its input is fine, so a retry succeeds."""
    job = create_job(client, seed=seed)
    broker.flush_all()  # the message is gone (to the dead-letter queue) before the job is failed
    assert lifecycle.fail(job.id, code, "gave up after repeated errors: OSError: storage timed out")
    return Job.objects.get(id=job.id)


def act(admin_client, action: str, *selected: Job, **extra):
    data = {"action": action, "_selected_action": [str(job.id) for job in selected], **extra}
    return admin_client.post(CHANGELIST, data, follow=True)


def listed(response) -> set[str]:
    return {str(job.id) for job in response.context["cl"].result_list}


# --- Finding jobs -------------------------------------------------------------------------------


def test_staff_filter_jobs_by_status_service_owner_and_date(admin_client, client, api_key, stub_broker):
    key = api_key("reporting")
    failed = failed_job(client, stub_broker, seed=1)
    queued = create_job(client, "sobel", seed=2, headers=key)
    old = create_job(client, seed=3)
    Job.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=40))

    assert listed(admin_client.get(f"{CHANGELIST}?status__exact=failed")) == {str(failed.id)}
    assert listed(admin_client.get(f"{CHANGELIST}?service=sobel")) == {str(queued.id)}
    key_id = queued.owner_key
    assert listed(admin_client.get(f"{CHANGELIST}?owner=key:{key_id}")) == {str(queued.id)}
    assert listed(admin_client.get(f"{CHANGELIST}?owner=anonymous")) == {str(failed.id), str(old.id)}
    past_week = {"created_at__gte": (timezone.now() - timedelta(days=7)).isoformat()}  # "Past 7 days"
    assert str(old.id) not in listed(admin_client.get(CHANGELIST, past_week))
    assert "API key: reporting" in admin_client.get(CHANGELIST).content.decode()


def test_staff_find_a_job_by_id_or_sha256(admin_client, client, stub_broker):
    wanted, other = create_job(client, seed=1), create_job(client, seed=2)

    assert listed(admin_client.get(CHANGELIST, {"q": str(wanted.id)})) == {str(wanted.id)}
    assert listed(admin_client.get(CHANGELIST, {"q": wanted.input_sha256})) == {str(wanted.id)}
    assert str(other.id) not in listed(admin_client.get(CHANGELIST, {"q": "not-a-job-id"}))


# --- Seeing a job ------------------------------------------------------------------------------


def test_the_list_shows_input_and_output_thumbnails_to_staff_only(admin_client, client, stub_broker):
    job = create_job(client)
    process_queued(stub_broker)
    html = admin_client.get(CHANGELIST).content.decode()

    for side in ("input", "output"):
        url = f"{CHANGELIST}{job.id}/thumbnail/{side}/"
        assert f'src="{url}"' in html
        response = admin_client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/webp"
        assert max(Image.open(io.BytesIO(response.content)).size) <= 160
        assert Client().get(url).status_code == 302  # to the login page


def test_a_thumbnail_is_made_on_its_first_view_and_kept_for_the_next(
    admin_client, client, stub_broker, monkeypatch
):
    job = create_job(client, service="rotate", angle="90")
    process_queued(stub_broker)
    job.refresh_from_db()
    first = {side: thumbnail(admin_client, job, side) for side in ("input", "output")}
    sizes = {side: Image.open(io.BytesIO(data)).size for side, data in first.items()}
    assert sizes == {"input": (32, 24), "output": (24, 32)}  # a 32x24 input, turned a quarter: not enlarged

    # Kept: the next views decode nothing.
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("the admin decoded an image"))
    assert {side: thumbnail(admin_client, job, side) for side in ("input", "output")} == first


def test_the_worker_stores_the_thumbnails_of_files_too_large_to_decode_in_a_request(
    admin_client, client, stub_broker, monkeypatch
):
    monkeypatch.setattr(admin_thumbnails, "MAX_LATER_PIXELS", 31 * 24)  # below the 32x24 input and output
    job = create_job(client, service="rotate", angle="90")
    process_queued(stub_broker)
    job.refresh_from_db()
    assert all(default_storage.exists(storage.thumbnail_key(key)) for key in (job.input_key, job.output_key))

    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("the admin decoded an image"))
    for side in ("input", "output"):
        assert thumbnail(admin_client, job, side)


def test_the_admin_decodes_a_jpeg_at_the_smallest_scale_that_covers_the_thumbnail(
    admin_client, client, stub_broker, monkeypatch
):
    upload = SimpleUploadedFile("photo.jpg", images.jpeg_bytes(images.photo(1920, 1080)))
    job = Job.objects.get(id=submit(client, "analyze", image=upload).json()["job_id"])
    process_queued(stub_broker)
    decoded = []
    make = admin_thumbnails.thumbnail_bytes
    monkeypatch.setattr(
        admin_thumbnails, "thumbnail_bytes", lambda image: decoded.append(image.size) or make(image)
    )

    made = Image.open(io.BytesIO(thumbnail(admin_client, job, "input")))

    assert decoded == [(960, 540)]  # a half covers twice the thumbnail
    assert made.size == (160, 90)
    assert images.ssim(made, images.photo(1920, 1080).resize((160, 90), Image.Resampling.BOX)) >= 0.9


def thumbnail(admin_client, job: Job, side: str) -> bytes:
    response = admin_client.get(f"{CHANGELIST}{job.id}/thumbnail/{side}/")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    return response.content


def test_a_job_that_has_not_completed_shows_a_placeholder_until_it_does(admin_client, client, stub_broker):
    job = create_job(client)
    html = admin_client.get(CHANGELIST).content.decode()
    assert f"{job.id}/thumbnail/" not in html and "pending" in html
    assert admin_client.get(f"{CHANGELIST}{job.id}/thumbnail/input/").status_code == 404

    process_queued(stub_broker)
    assert f"{job.id}/thumbnail/input/" in admin_client.get(CHANGELIST).content.decode()


def test_a_completed_job_whose_thumbnail_cannot_be_made_gets_a_placeholder(admin_client, client, stub_broker):
    job = create_job(client)
    process_queued(stub_broker)
    job.refresh_from_db()
    default_storage.delete(job.input_key)  # e.g. lost from the storage: nothing to make it from

    response = admin_client.get(f"{CHANGELIST}{job.id}/thumbnail/input/")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert b"no preview" in response.content


def test_a_job_without_an_output_has_no_output_thumbnail(admin_client, client, stub_broker):
    job = create_job(client)
    assert admin_client.get(f"{CHANGELIST}{job.id}/thumbnail/output/").status_code == 404
    assert admin_client.get(f"{CHANGELIST}{job.id}/thumbnail/elsewhere/").status_code == 404


def test_the_change_page_is_read_only_and_never_shows_storage_paths(admin_client, client, stub_broker):
    job = create_job(client)
    process_queued(stub_broker)
    job.refresh_from_db()
    html = admin_client.get(f"{CHANGELIST}{job.id}/change/").content.decode()

    assert job.input_sha256 in html and "queue wait" in html.lower()
    assert job.input_key not in html and job.output_key not in html
    assert 'name="_save"' not in html
    form = html.split('id="job_form"')[1].split("</form>")[0]
    controls = re.findall(r"<(?:input|select|textarea)\b[^>]*>", form)
    assert [c for c in controls if "csrfmiddlewaretoken" not in c] == []  # nothing to edit
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


# --- Actions -----------------------------------------------------------------------------------


def test_retrying_a_failed_job_queues_it_afresh_and_it_completes(admin_client, client, stub_broker):
    job = failed_job(client, stub_broker)

    response = act(admin_client, "retry_failed", job)

    assert "Retried 1 job(s)" in response.content.decode()
    process_queued(stub_broker)
    job.refresh_from_db()
    assert job.status == Job.COMPLETED
    assert (job.error_code, job.error_message) == ("", "")
    assert job.output_key and default_storage.exists(job.output_key)


def test_retry_leaves_jobs_that_did_not_fail_alone(admin_client, client, stub_broker):
    job = create_job(client)
    process_queued(stub_broker)
    act(admin_client, "retry_failed", job)
    job.refresh_from_db()
    assert job.status == Job.COMPLETED and job.attempts == 1


def test_re_publishing_dead_letters_takes_only_jobs_whose_message_died(admin_client, client, stub_broker):
    dead = failed_job(client, stub_broker, "worker_lost", seed=1)
    broken = failed_job(client, stub_broker, "corrupt_image", seed=2)

    response = act(admin_client, "republish_dead_letters", dead, broken).content.decode()

    assert "Re-published 1 job(s)" in response
    assert "stay in the dead-letter queue" in response
    process_queued(stub_broker)
    assert Job.objects.get(id=dead.id).status == Job.COMPLETED
    assert Job.objects.get(id=broken.id).status == Job.FAILED


def test_cancelling_a_queued_job(admin_client, client, stub_broker):
    job = create_job(client)
    act(admin_client, "cancel_jobs", job)
    assert Job.objects.get(id=job.id).status == Job.CANCELLED


def test_deleting_jobs_removes_their_files(admin_client, client, stub_broker):
    job = create_job(client)
    process_queued(stub_broker)
    job.refresh_from_db()
    files = (job.input_key, job.output_key)
    for side in ("input", "output"):
        thumbnail(admin_client, job, side)  # made on their first view
    keys = (*files, *(storage.thumbnail_key(key) for key in files))
    assert all(default_storage.exists(key) for key in keys)

    confirm = admin_client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [str(job.id)]})
    assert "Are you sure" in confirm.content.decode()
    act(admin_client, "delete_selected", job, post="yes")

    assert not Job.objects.filter(id=job.id).exists()
    assert not any(default_storage.exists(key) for key in keys)


# --- Assets ---------------------------------------------------------------------------------------

ASSETS = "/admin/processing/asset/"


def test_staff_see_every_owners_assets_with_a_thumbnail_and_delete_them_with_their_files(
    admin_client, client, api_key
):
    alice = api_key("alice")
    logo = SimpleUploadedFile("logo.png", images.png_bytes(images.logo()))
    asset = Asset.objects.get(
        id=client.post("/api/v1/assets", {"image": logo}, headers=alice).json()["asset_id"]
    )

    page = admin_client.get(ASSETS).content.decode()
    assert "logo.png" in page and f"API key #{asset.owner_key}" in page
    url = f"{ASSETS}{asset.id}/thumbnail/"
    assert f'src="{url}"' in page
    response = admin_client.get(url)
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (40, 20)
    assert Client().get(url).status_code == 302  # to the login page
    assert admin_client.get(f"{ASSETS}?owner=key:{asset.owner_key}").context["cl"].result_count == 1
    assert admin_client.get(f"{ASSETS}?owner=anonymous").context["cl"].result_count == 0

    files = (asset.key, storage.thumbnail_key(asset.key))
    assert all(default_storage.exists(key) for key in files)
    admin_client.post(
        ASSETS, {"action": "delete_selected", "_selected_action": [str(asset.id)], "post": "yes"}
    )
    assert not Asset.objects.exists()
    assert not any(default_storage.exists(key) for key in files)
