import functools
import uuid
from typing import Any, TypeAlias

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import connection, models
from django.utils import timezone

from processing.imaging.recipes import PRESET_NAME
from processing.jobs.pools import DEFAULT_POOL
from processing.owners import ANONYMOUS, MAX_IDENTITY_LENGTH, MAX_SUBJECT_LENGTH, Owner, owned_by

MAX_CALLBACK_URL_LENGTH = 2048

# A job's id as it is passed around: the UUID, or its text (from a URL, a message or a group name).
JobId: TypeAlias = uuid.UUID | str


class Job(models.Model):
    """One image and one recipe (one operation, or several steps), from upload to result."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUS_CHOICES = [(s, s) for s in (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED)]
    FINISHED = (COMPLETED, FAILED, CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    service = models.CharField(max_length=40)
    # A recipe of several steps is service "steps", its chain in `parameters` (processing.imaging.recipes).
    parameters = models.JSONField(default=dict, blank=True)
    preset = models.CharField(max_length=64, blank=True, help_text="the preset it was submitted with, if any")
    status = models.CharField(max_length=12, choices=STATUS_CHOICES, default=QUEUED)
    progress = models.FloatField(default=0.0)
    request_id = models.CharField(max_length=64, blank=True)
    pool = models.CharField(max_length=40, default=DEFAULT_POOL, help_text="the queue its message goes to")

    # Owners: at most one of key, subject and session is set (none: the anonymous owner of the embedded
    # default).
    owner_key = models.CharField(max_length=64, blank=True, help_text="API key id that created the job")
    owner_subject = models.CharField(
        max_length=MAX_SUBJECT_LENGTH,
        blank=True,
        help_text="the owner claim of the bearer token (JWT) that created it",
    )
    owner_session = models.CharField(max_length=64, blank=True, help_text="browser session that created it")
    owner_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    callback_url = models.CharField(
        max_length=MAX_CALLBACK_URL_LENGTH, blank=True, help_text="where a signed POST goes when it ends"
    )

    input_key = models.CharField(max_length=255)
    input_filename = models.CharField(max_length=255, blank=True, help_text="client's name, display only")
    input_sha256 = models.CharField(max_length=64)
    input_format = models.CharField(max_length=10)
    input_bytes = models.BigIntegerField()
    input_width = models.PositiveIntegerField()
    input_height = models.PositiveIntegerField()
    input_frames = models.PositiveIntegerField(
        default=1, help_text="an animated GIF's or WebP's, from its header"
    )

    output_key = models.CharField(max_length=255, blank=True)
    output_content_type = models.CharField(max_length=40, blank=True)
    output_format = models.CharField(max_length=10, blank=True)
    output_bytes = models.BigIntegerField(null=True, blank=True)
    output_width = models.PositiveIntegerField(null=True, blank=True)
    output_height = models.PositiveIntegerField(null=True, blank=True)
    output_sha256 = models.CharField(max_length=64, blank=True)
    output_frames = models.PositiveIntegerField(null=True, blank=True)
    frames_note = models.TextField(blank=True, help_text="why only the first frame of an animation was kept")
    # format=auto: the modern format the upload's Accept header named (a download whose Accept
    # does not name it gets the fallback, a JPEG or PNG of the same pixels).
    negotiated_format = models.CharField(
        max_length=10, blank=True, help_text="for format=auto: jxl, avif or webp, or blank for JPEG/PNG"
    )
    fallback_key = models.CharField(max_length=255, blank=True)
    fallback_format = models.CharField(max_length=10, blank=True)
    # Shown while the result loads: a BlurHash string, and a tiny image as a data: URL (at most 1 KB).
    placeholder_blurhash = models.CharField(max_length=100, blank=True)
    placeholder_preview = models.TextField(blank=True)
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
            models.Index(fields=["owner_subject", "-created_at"], name="job_owner_subject_created"),
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

    @property
    def owner(self) -> Owner:
        return Owner.of_row(self)

    @property
    def file_keys(self) -> list[str]:
        """Every file stored for the job: its input, its result and the result's fallback."""
        return [key for key in (self.input_key, self.output_key, self.fallback_key) if key]


def find_job(job_id: uuid.UUID, owner: Owner | None) -> Job | None:
    """The job with this id if `owner` owns it (None: staff, who see every job).

    The hottest read of all (every status read and long poll): the ORM compiles its query,
    with `owned_by`'s condition, once per kind of owner, and each read only fills in the
    values; compiling a query over this many columns costs several times the query itself.
    """
    sql, template = _find_job_query("staff" if owner is None else owner.kind)
    name = "" if owner is None else owner.key or owner.subject or owner.session  # what its kind goes by
    given = {_prepared_pk(_ANY_JOB): _prepared_pk(job_id), _ANY_OWNER: name}
    with connection.cursor() as cursor:
        cursor.execute(sql, [given.get(p, p) for p in template])
        row = cursor.fetchone()
    return None if row is None else _job_of_row(row)


def _job_of_row(row: tuple[Any, ...]) -> Job:
    """A Job from a row of all its columns, converted as the ORM converts them (a raw queryset would
    work out which columns and converters apply for every row, several times the cost of the read)."""
    names, converters = _row_reading()
    values = list(row)
    for index, column, convert in converters:
        values[index] = convert(values[index], column, connection)
    return Job.from_db(connection.alias, names, values)


@functools.cache
def _row_reading() -> tuple[list[str], list[tuple[int, Any, Any]]]:
    """The field names of Job's columns, in the order a query of all of them selects them, and each
    column's converters from the database's values (JSON text to objects, for one)."""
    fields = Job._meta.concrete_fields
    converters = [
        (index, field.cached_col, convert)
        for index, field in enumerate(fields)
        for convert in connection.ops.get_db_converters(field.cached_col)
        + field.cached_col.get_db_converters(connection)
    ]
    return [field.attname for field in fields], converters


# Stand-ins for the values find_job's compiled query is filled in with.
_ANY_JOB = uuid.UUID(int=0)
_ANY_OWNER = "\x00owner"


def _prepared_pk(job_id: uuid.UUID) -> Any:
    return Job._meta.pk.get_db_prep_value(job_id, connection)


@functools.cache
def _find_job_query(kind: str) -> tuple[str, tuple[Any, ...]]:
    """The SQL and parameters of the query for one job of an owner of this kind, with stand-ins."""
    found = Job.objects.filter(id=_ANY_JOB)
    if kind != "staff":
        stand_in = Owner.from_identity(kind if kind == ANONYMOUS else f"{kind}:{_ANY_OWNER}")
        found = found.filter(owned_by(stand_in))
    return found.query.sql_with_params()


class IdempotencyKey(models.Model):
    """The jobs one Idempotency-Key created for one owner: a repeated request gets them, not new ones."""

    # An Owner.identity (processing.owners), whole: the longest, a token's, fits. Its help text names
    # it as it was called when migrated.
    owner = models.CharField(
        max_length=MAX_IDENTITY_LENGTH, help_text="the owner's identity (see owner_identity)"
    )
    key = models.CharField(max_length=200)
    job_ids = models.JSONField(default=list)
    fingerprint = models.CharField(
        max_length=64, blank=True, help_text="sha256 of the request: service, parameters, inputs"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_owner_key")]

    def __str__(self) -> str:
        return f"{self.owner} {self.key}"


class Asset(models.Model):
    """An image its owner uploaded once, to overlay on their jobs' results (the watermark operation's
    `asset_id`); stored as a PNG of its pixels (processing.assets)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Whose it is, as on a job: at most one of key, subject and session is set (processing.owners).
    owner_key = models.CharField(max_length=64, blank=True, help_text="API key id that uploaded it")
    owner_subject = models.CharField(
        max_length=MAX_SUBJECT_LENGTH,
        blank=True,
        help_text="the owner claim of the bearer token that uploaded it",
    )
    owner_session = models.CharField(max_length=64, blank=True, help_text="browser session that uploaded it")
    owner_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    name = models.CharField(max_length=255, blank=True, help_text="client's name, display only")
    source_format = models.CharField(max_length=10, help_text="the format it was uploaded in")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.BigIntegerField(help_text="of the stored PNG")
    sha256 = models.CharField(max_length=64, help_text="of the upload")
    key = models.CharField(max_length=255, help_text="where the PNG is stored")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner_key", "-created_at"], name="asset_owner_key_created"),
            models.Index(fields=["owner_session", "-created_at"], name="asset_owner_session_created"),
            models.Index(fields=["owner_subject", "-created_at"], name="asset_owner_subject_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name or 'asset'} {self.id}"

    @property
    def owner(self) -> Owner:
        return Owner.of_row(self)


class Preset(models.Model):
    """A named recipe made in the admin; it replaces a preset of the same name declared in PRESETS
    (processing.jobs.presets)."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(f"^{PRESET_NAME}$", "letters, digits, - and _ only")],
        help_text="preset=<name>; it replaces a preset of this name in PRESETS",
    )
    description = models.CharField(max_length=200, blank=True)
    steps = models.JSONField(
        default=list, help_text='[{"service": "resize", "parameters": {"width": 800}}, ...], in order'
    )
    output = models.JSONField(
        default=dict,
        blank=True,
        help_text='output options, e.g. {"format": "webp", "quality": 80}',
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CallbackSecret(models.Model):
    """The secret an owner's callbacks are signed with (processing.callbacks.signing), shown to them
    once. Kept as it is, not hashed: signing needs it. After a rotation the previous secret signs too,
    for a day, so that receivers can change theirs without losing a callback."""

    owner = models.CharField(
        max_length=MAX_IDENTITY_LENGTH, unique=True, help_text="the owner's identity (processing.owners)"
    )
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_until = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"callback secret of {self.owner}"


class CallbackDelivery(models.Model):
    """One callback: a job's end, POSTed to its callback_url until delivered or given up
    (processing.callbacks.deliveries). Its id is the event id every attempt carries."""

    PENDING = "pending"
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"
    STATE_CHOICES = [(PENDING, "pending"), (DELIVERED, "delivered"), (GIVEN_UP, "given up")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="callback_deliveries")
    event = models.CharField(max_length=20, help_text="job.completed, job.failed or job.cancelled")
    url = models.CharField(max_length=MAX_CALLBACK_URL_LENGTH)
    payload = models.TextField(help_text="the body: the job's JSON as it ended, the same at every attempt")
    state = models.CharField(max_length=10, choices=STATE_CHOICES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="the HTTP status of the last answer"
    )
    last_error = models.TextField(blank=True, help_text="why the last attempt failed, or why it was given up")
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="when a pending delivery is tried next"
    )
    finished_at = models.DateTimeField(null=True, blank=True, help_text="when it was delivered or given up")

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "callback deliveries"
        indexes = [
            # The re-sender's pass: pending deliveries whose attempt is overdue.
            models.Index(fields=["state", "next_attempt_at"], name="callback_state_next"),
        ]

    def __str__(self) -> str:
        return f"{self.event} of {self.job_id} ({self.state})"
