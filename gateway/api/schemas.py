"""The API's own response shapes, for the OpenAPI document and for checking what the API returns.

A job's public JSON (JobOut, StatusOut and their parts) is the domain's: processing.jobs.public.
"""

from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import ConfigDict, Field

from processing.jobs.public import JobError, JobOut, JobStatus


class FieldProblem(Schema):
    field: str | None
    rule: str | None
    message: str | None


class ErrorDetail(Schema):
    model_config = ConfigDict(extra="allow")  # e.g. job_status on a 409
    code: str
    message: str
    fields: list[FieldProblem] | None = None


class ErrorOut(Schema):
    error: ErrorDetail


class JobsOut(Schema):
    jobs: list[JobOut]


class JobPageOut(JobsOut):
    next_cursor: str | None


class ImageFacts(Schema):
    format: str
    bytes: int | None
    width: int | None
    height: int | None
    sha256: str
    frames: int | None = Field(None, description="frames of an animated GIF or WebP; 1 for a still image")


class MetricsOut(Schema):
    job_id: str
    status: JobStatus
    service: str
    attempts: int
    worker: str | None = Field(
        description="the worker that ran it: its name (host:pid:thread) for staff, an opaque label "
        "(worker-…, the same for the same worker) for anyone else"
    )
    cache_hit: bool
    queue_wait_ms: float | None
    processing_ms: float | None
    total_ms: float | None
    run_ms: list[float] | None
    metrics: dict[str, Any]
    input: ImageFacts
    output: ImageFacts | None
    error: JobError | None


class AssetOut(Schema):
    asset_id: str
    name: str = Field(description="the uploaded file's name, or the `name` field given with it")
    source_format: str = Field(description="the format it was uploaded in; it is kept as a PNG of its pixels")
    width: int
    height: int
    bytes: int = Field(description="of the stored PNG")
    created_at: datetime
    url: str


class AssetsOut(Schema):
    assets: list[AssetOut]


class ServiceOut(Schema):
    name: str
    description: str
    produces: Literal["image", "report"]
    animates: bool = Field(
        description="whether an animated GIF or WebP keeps its frames through it (in GIF or WebP); if not, "
        "only the first frame is kept, and the result's `frames` says so"
    )
    parameters: dict[str, Any]
    submit_url: str


class RecipesOut(Schema):
    """How to run several services on one image: POST `submit_url` with `steps`."""

    submit_url: str
    output_options: list[str] = Field(description="the parameters that go beside the steps, not in one")
    max_steps: int
    presets_url: str


class ServicesOut(Schema):
    services: list[ServiceOut]
    recipes: RecipesOut


class StepOut(Schema):
    service: str
    parameters: dict[str, Any]


class PresetOut(Schema):
    name: str
    description: str
    source: Literal["settings", "admin"] = Field(
        description="where it is declared: the PRESETS setting, or the admin (which replaces its namesake)"
    )
    steps: list[StepOut]
    output: dict[str, Any] = Field(description="the output options of its one encode")


class PresetsOut(Schema):
    presets: list[PresetOut]
    submit_url: str = Field(description="where to POST an image with preset=<name>")


class QueueOut(Schema):
    name: str
    ready: int | None
    delayed: int | None
    in_flight: int | None
    dead_letters: int | None
    consumers: int | None


class MachineMemoryOut(Schema):
    """One machine's memory admission (WORKER_PIXEL_BUDGET), as its worker processes last left it."""

    host: str = Field(description="its host name for staff; an opaque label (machine-…) for anyone else")
    pixel_budget: int = Field(description="pixels (decoded and made) its jobs may hold at once")
    pixels_admitted: int
    jobs_admitted: int
    jobs_waiting: int = Field(description="claimed jobs waiting for their pixels to fit")


class PoolOut(Schema):
    """A worker pool (queue) with jobs in flight; TRAFFIC_SPLIT sends a service's jobs to pools by weight."""

    pool: str
    jobs_queued: int
    jobs_processing: int


class QueueStatusOut(Schema):
    broker: Literal["rabbitmq", "embedded"]
    available: bool
    queues: list[QueueOut]
    jobs_queued: int
    jobs_processing: int
    pools: list[PoolOut] = Field(description="jobs queued and processing per pool, for pools with any")
    memory: list[MachineMemoryOut] = Field(
        description="each worker machine's memory admission; a machine idle for twice "
        "JOB_TIME_LIMIT_SECONDS drops out"
    )


class DurationStats(Schema):
    mean_ms: float | None
    p95_ms: float | None
    samples: int


class StatisticsOut(Schema):
    total: int
    by_status: dict[str, int]
    by_service: dict[str, dict[str, int]]
    completed_per_minute_5m: float
    completed_per_minute_60m: float
    queue_wait: DurationStats
    processing: DurationStats


class FileGroup(Schema):
    files: int
    bytes: int


class FileStatsOut(Schema):
    uploads: FileGroup
    results: FileGroup
    expired: FileGroup
    ttl_seconds: int


class CleanupOut(Schema):
    jobs: int
    files_removed: int
    bytes_freed: int
    orphans_removed: int = Field(description="stored files whose job row was gone")


class DependencyOut(Schema):
    status: Literal["up", "down"]
    required: bool
    latency_ms: float
    error: str | None = None


class HealthOut(Schema):
    status: Literal["ok", "degraded", "down"]
    # Operators only (staff, METRICS_TOKEN):
    mode: Literal["embedded", "full-stack"] | None = None
    checks: dict[str, DependencyOut] | None = None
