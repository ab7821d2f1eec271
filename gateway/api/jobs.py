"""Jobs: submit, read, poll, download."""

import uuid

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect, JsonResponse
from ninja import Router

from gateway import submissions
from gateway.errors import ApiError, not_found
from processing.models import Job

router = Router(tags=["jobs"])


def get_job(request, job_id: str) -> Job:
    """The job, or 404. Ownership checks join here (the API issue)."""
    try:
        return Job.objects.get(id=uuid.UUID(job_id))
    except (ValueError, Job.DoesNotExist):
        raise not_found() from None


def accepted(job: Job) -> JsonResponse:
    body = job.to_dict()
    return JsonResponse(body, status=202, headers={"Location": body["job_url"]})


def submit_one(request, service: str) -> JsonResponse:
    upload = submissions.the_upload(request)
    # A single submission without a client-chosen X-Request-ID takes the request id as its
    # job id, so /status/{request_id} (as the original design polls) finds it.
    job_id = None if request.request_id_given else uuid.UUID(request.request_id)
    job = submissions.submit(
        request, service, upload, submissions.parameters_from(request.POST), job_id=job_id
    )
    return accepted(job)


@router.post("/process/{service}", url_name="process", response={202: dict})
def process(request, service: str):
    """Upload `image` (multipart) with the service's parameters as form fields; answers 202 with the job."""
    return submit_one(request, service)


@router.post("/resize", url_name="resize", response={202: dict})
def resize(request):
    """The same as /process/resize."""
    return submit_one(request, "resize")


@router.post("/crop", url_name="crop", response={202: dict})
def crop(request):
    """The same as /process/crop."""
    return submit_one(request, "crop")


@router.get("/jobs/{job_id}", url_name="job_detail")
def job_detail(request, job_id: str):
    return get_job(request, job_id).to_dict()


@router.get("/status/{job_id}", url_name="job_status")
def job_status(request, job_id: str):
    job = get_job(request, job_id)
    urls = job.urls()
    return {
        "job_id": str(job.id),
        "request_id": job.request_id,
        "status": job.status,
        "progress": round(job.progress, 3),
        "download_url": urls["download_url"] if job.status == Job.COMPLETED else None,
        "result_url": urls["result_url"],
        "error": job.error_dict(),
    }


@router.get("/result/{job_id}", url_name="job_result")
def job_result(request, job_id: str):
    job = get_job(request, job_id)
    return {
        "job_id": str(job.id),
        "status": job.status,
        "service": job.service,
        "attempts": job.attempts,
        "worker": job.worker_id or None,
        "queue_wait_ms": job.queue_wait_ms,
        "processing_ms": job.processing_ms,
        "total_ms": job.total_ms,
        "metrics": job.metrics,
        "input": {
            "format": job.input_format,
            "bytes": job.input_bytes,
            "width": job.input_width,
            "height": job.input_height,
            "sha256": job.input_sha256,
        },
        "output": job.result_dict() and {**job.result_dict(), "sha256": job.output_sha256},
        "error": job.error_dict(),
    }


@router.get("/download/{job_id}", url_name="job_download")
def job_download(request, job_id: str):
    job = get_job(request, job_id)
    if job.status != Job.COMPLETED:
        raise ApiError(
            409, "not_ready", f"the job is {job.status}; there is nothing to download", job_status=job.status
        )
    if job.report is not None and not job.output_key:
        return JsonResponse(
            job.report, headers={"Content-Disposition": f'attachment; filename="{job.id}.json"'}
        )
    filename = f"{job.id}.{job.output_key.rsplit('.', 1)[-1]}"
    try:
        path = default_storage.path(job.output_key)
    except NotImplementedError:  # object storage: send the client to a signed, expiring URL
        return HttpResponseRedirect(default_storage.url(job.output_key))
    return FileResponse(
        open(path, "rb"), as_attachment=True, filename=filename, content_type=job.output_content_type
    )
