"""A job's public JSON shape: the API, WebSocket events and the pages all show jobs through here.

URLs are built from fixed paths rather than reversed, so that a worker announcing a job's
change never loads the URL configuration (tests/test_serialize.py checks they match it).
"""

from processing.models import Job

API = "/api/v1"


def job_urls(job_id) -> dict:
    return {
        "poll_url": f"{API}/status/{job_id}",
        "job_url": f"{API}/jobs/{job_id}",
        "download_url": f"{API}/download/{job_id}",
        "result_url": f"{API}/result/{job_id}",
        "ws_url": f"/ws/jobs/{job_id}/",
    }


def result_json(job: Job) -> dict | None:
    if job.status != Job.COMPLETED:
        return None
    result = {
        "url": f"{API}/download/{job.id}",
        "content_type": job.output_content_type,
        "format": job.output_format,
        "width": job.output_width,
        "height": job.output_height,
        "bytes": job.output_bytes,
        "placeholder": placeholder_json(job),
        "fallback_format": job.fallback_format or None,
    }
    if job.report is not None:
        result["report"] = job.report
    return result


def placeholder_json(job: Job) -> dict | None:
    if not job.placeholder_blurhash:
        return None
    return {"blurhash": job.placeholder_blurhash, "preview": job.placeholder_preview}


def error_json(job: Job) -> dict | None:
    if not job.error_code:
        return None
    return {"code": job.error_code, "message": job.error_message}


def job_json(job: Job) -> dict:
    """The job as clients see it (datetimes left as objects, for the caller's encoder)."""
    return {
        "job_id": str(job.id),
        "request_id": job.request_id,
        "service": job.service,
        "status": job.status,
        "progress": round(job.progress, 3),
        "parameters": job.parameters,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "result": result_json(job),
        "error": error_json(job),
        **job_urls(job.id),
    }


def status_json(job: Job) -> dict:
    """The short answer of /status/{id}, the polling endpoint: status and where the result is."""
    return {
        "job_id": str(job.id),
        "request_id": job.request_id,
        "status": job.status,
        "progress": round(job.progress, 3),
        "download_url": f"{API}/download/{job.id}" if job.status == Job.COMPLETED else None,
        "result_url": f"{API}/result/{job.id}",
        "error": error_json(job),
    }
