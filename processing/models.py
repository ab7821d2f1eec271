import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Job(models.Model):
    """One image and one operation, from upload to result."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUS_CHOICES = [(s, s) for s in (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED)]
    FINISHED = (COMPLETED, FAILED, CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    service = models.CharField(max_length=40)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=STATUS_CHOICES, default=QUEUED)
    progress = models.FloatField(default=0.0)
    request_id = models.CharField(max_length=64, blank=True)

    # Owners: exactly one of these is set for API clients and browsers (see the API issue).
    owner_key = models.CharField(max_length=64, blank=True, help_text="API key id that created the job")
    owner_session = models.CharField(max_length=64, blank=True, help_text="browser session that created it")
    owner_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    input_key = models.CharField(max_length=255)
    input_filename = models.CharField(max_length=255, blank=True, help_text="client's name, display only")
    input_sha256 = models.CharField(max_length=64)
    input_format = models.CharField(max_length=10)
    input_bytes = models.BigIntegerField()
    input_width = models.PositiveIntegerField()
    input_height = models.PositiveIntegerField()

    output_key = models.CharField(max_length=255, blank=True)
    output_content_type = models.CharField(max_length=40, blank=True)
    output_format = models.CharField(max_length=10, blank=True)
    output_bytes = models.BigIntegerField(null=True, blank=True)
    output_width = models.PositiveIntegerField(null=True, blank=True)
    output_height = models.PositiveIntegerField(null=True, blank=True)
    output_sha256 = models.CharField(max_length=64, blank=True)
    report = models.JSONField(null=True, blank=True, help_text="analysis output, for report services")

    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)

    attempts = models.PositiveIntegerField(default=0)
    worker_id = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="when the broker last confirmed the message"
    )

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    processing_ms = models.FloatField(null=True, blank=True)
    files_removed_at = models.DateTimeField(
        null=True, blank=True, help_text="input and output deleted by cleanup"
    )
    metrics = models.JSONField(
        default=dict, blank=True, help_text="operation timings, e.g. each grayscale run"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # requeue_stale: queued jobs by age; the admin's and statistics' status filters.
            models.Index(fields=["status", "created_at"], name="job_status_created"),
            # GET /api/v1/jobs for one API key or session, newest first.
            models.Index(fields=["owner_key", "-created_at"], name="job_owner_key_created"),
            models.Index(fields=["owner_session", "-created_at"], name="job_owner_session_created"),
            # result reuse and the admin's search by sha256.
            models.Index(fields=["input_sha256", "service"], name="job_input_sha_service"),
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def queue_wait_ms(self) -> float | None:
        if not self.started_at:
            return None
        return (self.started_at - self.created_at).total_seconds() * 1000

    @property
    def total_ms(self) -> float | None:
        if not self.finished_at:
            return None
        return (self.finished_at - self.created_at).total_seconds() * 1000

    def urls(self) -> dict:
        job_id = str(self.id)
        return {
            "poll_url": reverse("api-1:job_status", args=[job_id]),
            "job_url": reverse("api-1:job_detail", args=[job_id]),
            "download_url": reverse("api-1:job_download", args=[job_id]),
            "result_url": reverse("api-1:job_result", args=[job_id]),
            "ws_url": f"/ws/jobs/{job_id}/",
        }

    def result_dict(self) -> dict | None:
        if self.status != self.COMPLETED:
            return None
        result = {
            "url": self.urls()["download_url"],
            "content_type": self.output_content_type,
            "format": self.output_format,
            "width": self.output_width,
            "height": self.output_height,
            "bytes": self.output_bytes,
        }
        if self.report is not None:
            result["report"] = self.report
        return result

    def error_dict(self) -> dict | None:
        if not self.error_code:
            return None
        return {"code": self.error_code, "message": self.error_message}

    def to_dict(self) -> dict:
        """The job's public shape: the API, WebSocket events and the UI all use this."""
        return {
            "job_id": str(self.id),
            "request_id": self.request_id,
            "service": self.service,
            "status": self.status,
            "progress": round(self.progress, 3),
            "parameters": self.parameters,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result_dict(),
            "error": self.error_dict(),
            **self.urls(),
        }


def claimable_jobs(job_id, now=None):
    """Jobs a worker may start: queued, or processing under a lease that ran out (its worker died)."""
    now = now or timezone.now()
    stale_lease = Q(status=Job.PROCESSING, lease_expires_at__lt=now)
    return Job.objects.filter(Q(id=job_id) & (Q(status=Job.QUEUED) | stale_lease))


def lease_until(now=None):
    return (now or timezone.now()) + timedelta(seconds=settings.JOB_LEASE_SECONDS)
