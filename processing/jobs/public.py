"""A job's public JSON: what the API answers, WebSocket events carry and the pages link to.

Each shape is declared once, as a TypedDict: the builders below make plain dicts of it (cheap:
they run for every event and every read), and the API documents and checks its answers with
the same classes (`response=JobOut`), so the OpenAPI document cannot drift from what is sent.

URLs are built from fixed paths rather than reversed, so that a worker announcing a job's
change never loads the URL configuration (tests/test_public.py checks they match it).
"""

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads only this one on Python < 3.12

from processing.models import Job, JobId

API = "/api/v1"

JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]


class JobError(TypedDict):
    code: str
    message: str


class PlaceholderOut(TypedDict):
    """What to show while the result loads."""

    blurhash: Annotated[
        str, Field(description="A BlurHash (https://blurha.sh) of the result, 4 × 3 components.")
    ]
    preview: Annotated[
        str, Field(description="A tiny WebP of the result as a data: URL, at most 1,024 characters.")
    ]


class FramesOut(TypedDict):
    """What became of an animation's frames."""

    input: Annotated[int, Field(description="The frames of the upload (an animated GIF or WebP).")]
    output: Annotated[
        int,
        Field(
            description="The frames of the result: all of them (identical neighbours may be merged into one "
            "longer frame), or 1 when only the first was kept."
        ),
    ]
    note: Annotated[
        str | None,
        Field(
            description="Why only the first frame was kept, e.g. the format holds one frame; null otherwise."
        ),
    ]


class ResultOut(TypedDict):
    url: str
    content_type: str
    format: str
    width: int | None
    height: int | None
    bytes: int | None
    placeholder: NotRequired[
        Annotated[PlaceholderOut | None, Field(description="For an image result; null for a report.")]
    ]
    fallback_format: NotRequired[
        Annotated[
            str | None,
            Field(
                description="format=auto: the format (jpeg or png) a download gets when its Accept header "
                "does not name `format`."
            ),
        ]
    ]
    preview_url: NotRequired[
        Annotated[
            str | None,
            Field(
                description="An image result, smaller, for showing in a page: add `?size=` 320, 640 or "
                "1280, its longest edge at most. Null for a report."
            ),
        ]
    ]
    report: NotRequired[dict[str, Any] | None]
    frames: NotRequired[
        Annotated[
            FramesOut | None,
            Field(
                description="For an animated upload: its frames and the result's, and why only the first was "
                "kept when it was; null for a still image."
            ),
        ]
    ]


class JobUrls(TypedDict):
    poll_url: str
    job_url: str
    download_url: str
    result_url: str
    ws_url: str


class JobFacts(TypedDict):
    job_id: str
    request_id: str
    service: str
    pool: Annotated[
        str,
        Field(
            description="The worker pool (queue) the job is sent to and run by: `images`, unless "
            "TRAFFIC_SPLIT sends some of its service's jobs elsewhere (e.g. a canary)."
        ),
    ]
    status: JobStatus
    progress: float
    parameters: Annotated[
        dict[str, Any],
        Field(
            description="As parsed, defaults filled in. A job of several steps (service `steps`) has "
            '`{"steps": [{"service", "parameters"}, ...], "format", "quality", "max_bytes"}`.'
        ),
    ]
    preset: Annotated[
        str | None, Field(description="The preset it was submitted with (preset=<name>), if any.")
    ]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: ResultOut | None
    error: JobError | None


# A job: its facts, then where to find it, in that order. (A docstring would become its OpenAPI description.)
class JobOut(JobFacts, JobUrls):
    pass


class StatusOut(TypedDict):
    job_id: str
    request_id: str
    status: JobStatus
    progress: float
    download_url: str | None
    result_url: str
    error: JobError | None


def job_urls(job_id: JobId) -> JobUrls:
    job_id = str(job_id)  # once, not once per URL (a UUID formats itself anew each time)
    return JobUrls(
        poll_url=f"{API}/status/{job_id}",
        job_url=f"{API}/jobs/{job_id}",
        download_url=f"{API}/download/{job_id}",
        result_url=f"{API}/result/{job_id}",
        ws_url=f"/ws/jobs/{job_id}/",
    )


def result_json(job: Job, download_url: str) -> ResultOut | None:
    if job.status != Job.COMPLETED:
        return None
    return ResultOut(
        url=download_url,
        content_type=job.output_content_type,
        format=job.output_format,
        width=job.output_width,
        height=job.output_height,
        bytes=job.output_bytes,
        placeholder=placeholder_json(job),
        fallback_format=job.fallback_format or None,
        preview_url=f"{API}/preview/{job.id}" if job.output_key else None,
        report=job.report,
        frames=frames_json(job),
    )


def frames_json(job: Job) -> FramesOut | None:
    if job.input_frames <= 1:
        return None
    return FramesOut(input=job.input_frames, output=job.output_frames or 1, note=job.frames_note or None)


def placeholder_json(job: Job) -> PlaceholderOut | None:
    if not job.placeholder_blurhash:
        return None
    return PlaceholderOut(blurhash=job.placeholder_blurhash, preview=job.placeholder_preview)


def error_json(job: Job) -> JobError | None:
    if not job.error_code:
        return None
    return JobError(code=job.error_code, message=job.error_message)


def job_json(job: Job) -> JobOut:
    """The job as clients see it (datetimes left as objects, for the caller's encoder)."""
    urls = job_urls(job.id)
    return JobOut(
        job_id=str(job.id),
        request_id=job.request_id,
        service=job.service,
        pool=job.pool,
        status=job.status,  # type: ignore[typeddict-item]  # a CharField with JobStatus's choices
        progress=round(job.progress, 3),
        parameters=job.parameters,
        preset=job.preset or None,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=result_json(job, urls["download_url"]),
        error=error_json(job),
        **urls,
    )


def status_json(job: Job) -> StatusOut:
    """The short answer of /status/{id}, the polling endpoint: status and where the result is."""
    urls = job_urls(job.id)
    return StatusOut(
        job_id=str(job.id),
        request_id=job.request_id,
        status=job.status,  # type: ignore[typeddict-item]
        progress=round(job.progress, 3),
        download_url=urls["download_url"] if job.status == Job.COMPLETED else None,
        result_url=urls["result_url"],
        error=error_json(job),
    )
