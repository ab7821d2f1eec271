"""Creating jobs: validate, store the input, write the row, publish and announce after it commits.

Every check a client can fail happens here, before anything is queued, and fails with a
domain error (processing.errors) that the gateway turns into an answer. A submission is
all or nothing: when one of its jobs can't be stored or published, none is left behind.
A submission is parsed once (`prepare`) into its recipe (processing.imaging.recipes: one service's
operation, or several steps); its Idempotency-Key fingerprint and its jobs are both made from that
(the key's record is processing.jobs.idempotency).
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, BinaryIO, Protocol

from django.conf import settings
from django.utils import timezone

from processing import storage
from processing.callbacks import addresses, signing, targets
from processing.errors import (
    CallbackRefused,
    InvalidParameters,
    StorageUnavailable,
    UnknownOperation,
    UnprocessableImage,
)
from processing.imaging import animation, formats, recipes
from processing.imaging.codecs import ImageInfo, probe
from processing.imaging.operations import Operation, OutputLimits, get_operation
from processing.imaging.recipes import STEPS_SERVICE, Recipe
from processing.jobs import idempotency, pools, presets, publishing
from processing.models import Job, JobId
from processing.owners import Owner, owned_by

logger = logging.getLogger(__name__)

RESULT_FIELDS = (
    "output_content_type",
    "output_format",
    "output_bytes",
    "output_width",
    "output_height",
    "output_sha256",
    "fallback_format",
    "placeholder_blurhash",
    "placeholder_preview",
    "report",
    "output_frames",
    "frames_note",
)


class Upload(Protocol):
    """An uploaded file, hashed as it arrived (gateway.http.uploads makes these): `file` is its bytes,
    in memory (a small upload) or in a temporary file on local disk."""

    name: str | None
    size: int
    sha256: str
    file: BinaryIO


@dataclass
class Submission:
    """What one request asks for: a service and its parameters, and one or more uploads.

    Service "steps" (STEPS_SERVICE) is a recipe: its parameters are `steps` (a list, or its JSON
    text) and the output options, or `preset` alone."""

    owner: Owner
    request_id: str
    service: str
    raw_parameters: dict[str, Any]
    uploads: list[Upload]
    job_id: uuid.UUID | None = None  # for a single upload: take this id
    idempotency_key: str | None = None
    # The image subtypes the client's Accept header names (for format=auto), e.g. {"avif", "webp", "*"}.
    accepts: frozenset[str] = frozenset()
    callback_url: str = ""  # where each job's end is POSTed (processing.callbacks)


@dataclass
class Prepared:
    """A submission parsed once: its fingerprint and its jobs are both made from this."""

    submission: Submission
    recipe: Recipe
    canonical: dict[str, Any]  # the parameters as parsed, as JSON: what a job stores and a fingerprint hashes
    negotiated_format: str
    preset: str = ""  # the preset's name, when the recipe is one

    @cached_property
    def inputs(self) -> list[tuple[Upload, ImageInfo]]:
        """Each upload with its header facts, read on first use: after the Idempotency-Key's checks,
        so that a key's errors come before an upload's and a replay reads no upload."""
        return [(upload, inspect(upload)) for upload in self.submission.uploads]

    def negotiated_for(self, info: ImageInfo) -> str:
        """What format=auto negotiates for this upload: for an animation that keeps its frames, among
        the formats that hold them; for anything else, what the submission negotiated."""
        if not animation.recipe_keeps_frames(self.recipe, info.frames):
            return self.negotiated_format
        return formats.negotiated_format(self.canonical.get("format"), self.submission.accepts, animated=True)

    def fingerprint(self) -> str:
        hashes = [upload.sha256 for upload in self.submission.uploads]
        return idempotency.fingerprint(
            self.recipe.service,
            self.canonical,
            hashes,
            self.negotiated_format,
            self.submission.callback_url,
        )


@dataclass
class Accepted:
    """A submission's jobs; `replayed` when an earlier request with its Idempotency-Key made them."""

    jobs: list[Job]
    replayed: bool = False


def find_operation(service: str) -> Operation[Any]:
    """The operation a client names as `service`; UnknownOperation if there is none."""
    try:
        return get_operation(service)
    except KeyError:
        raise UnknownOperation(service) from None


def prepare(submission: Submission) -> Prepared:
    """Parse the submission once: its recipe (refused here when a service, a step or a preset is
    unknown, or a parameter invalid), and the format format=auto negotiates with the client's Accept
    header."""
    recipe, preset = recipe_of(submission)
    canonical = recipe.parameters()
    negotiated = formats.negotiated_format(canonical.get("format"), submission.accepts)
    return Prepared(submission, recipe, canonical, negotiated, preset)


def recipe_of(submission: Submission) -> tuple[Recipe, str]:
    """The submission's recipe, and the name of the preset it is, if it is one."""
    if submission.service != STEPS_SERVICE:
        return recipes.single(find_operation(submission.service), submission.raw_parameters), ""
    raw = {name: value for name, value in submission.raw_parameters.items() if value != ""}
    preset = raw.pop("preset", None)
    if preset is not None:
        if raw:
            problem = "a preset carries its own parameters: send the preset's name alone"
            raise InvalidParameters(next(iter(raw)), problem)
        return presets.recipe_named(str(preset)), str(preset)
    if "steps" not in raw:
        raise InvalidParameters("steps", f"send steps (a list of {recipes.STEP_SHAPE}) or a preset")
    return recipes.from_steps(raw.pop("steps"), raw, settings.MAX_STEPS), ""


def submit(submission: Submission) -> Accepted:
    """Make the submission's jobs, or, for a repeated Idempotency-Key, give the ones it made before."""
    prepared = prepare(submission)
    if submission.callback_url:
        check_callback(submission.owner, submission.callback_url)
    key = submission.idempotency_key
    if not key:
        return Accepted(create_jobs(prepared))
    jobs, replayed = idempotency.once(
        submission.owner.identity, key, prepared.fingerprint(), lambda: create_jobs(prepared)
    )
    return Accepted(jobs, replayed)


def check_callback(owner: Owner, url: str) -> None:
    """A callback_url must be an http(s) URL whose host, if written as an address, callbacks may reach
    (its name's addresses are checked at each attempt), and its owner must have a secret to sign with."""
    targets.check(url, addresses.networks(settings.CALLBACK_ALLOWED_NETWORKS))
    if not signing.has_secret(owner.identity):
        raise CallbackRefused(
            "no_callback_secret",
            "callbacks are signed with a secret of the caller's own, and this caller has none: an operator "
            "issues one (manage.py callback_secret)",
        )


def create_jobs(prepared: Prepared) -> list[Job]:
    """Validate every upload against the recipe, then store, create, publish and announce the jobs."""
    recipe = prepared.recipe
    recipe.check_references(prepared.submission.owner)
    limits, animation_limits = OutputLimits.of(settings), animation.AnimationLimits.of(settings)
    for _, info in prepared.inputs:
        output_format, frames = animation.recipe_result(
            recipe, info.frames, prepared.canonical.get("format"), prepared.negotiated_for(info), info.format
        )
        recipe.check_job(info.width, info.height, output_format, limits)
        animation.check_recipe_budget(frames, recipe, info.width, info.height, animation_limits)

    single_id = prepared.submission.job_id if len(prepared.inputs) == 1 else None
    created: list[Job] = []
    try:
        for upload, info in prepared.inputs:
            created.append(create_job(prepared, upload, info, single_id or uuid.uuid4()))
        publishing.enqueue(created)
    except Exception:
        withdraw(created)
        raise
    for job in created:
        logger.info("accepted a %s job (%s)", job.service, job.status, extra={"job_id": str(job.id)})
    return created


def inspect(upload: Upload) -> ImageInfo:
    """The upload's header facts; an UnprocessableImage names the file it is about (`filename`)."""
    try:
        return probe(upload.file, settings.MAX_IMAGE_PIXELS, settings.MAX_JPEG_SCANS)
    except UnprocessableImage as exc:
        exc.filename = upload.name
        raise


def create_job(prepared: Prepared, upload: Upload, info: ImageInfo, job_id: uuid.UUID) -> Job:
    submission, service = prepared.submission, prepared.recipe.service
    job = Job(
        id=job_id,
        service=service,
        parameters=prepared.canonical,
        preset=prepared.preset,
        request_id=submission.request_id,
        input_filename=(upload.name or "")[:255],
        input_sha256=upload.sha256,
        input_format=info.format.lower(),
        input_bytes=upload.size,
        input_width=info.width,
        input_height=info.height,
        input_frames=info.frames,
        negotiated_format=prepared.negotiated_for(info),
        pool=pools.pool_for(settings.TRAFFIC_SPLIT, service, job_id),
        callback_url=submission.callback_url,
        **submission.owner.fields(),
    )
    job.input_key = stored(storage.save_upload, storage.input_key(str(job_id), info.extension), upload)
    donor = reusable_result(job) if settings.RESULT_REUSE else None
    if donor:
        complete_from(job, donor)
    else:
        publishing.stamped_as_published(job)
    job.save(force_insert=True)
    return job


def reusable_result(job: Job) -> Job | None:
    """The same owner's completed job with the same input bytes, service and parameters (for a recipe
    of several steps, the same canonical chain), whose files still exist. Never another owner's: that
    would tell them someone processed this image before."""
    return (
        Job.objects.filter(
            owned_by(job.owner),
            status=Job.COMPLETED,
            service=job.service,
            input_sha256=job.input_sha256,
            parameters=job.parameters,
            negotiated_format=job.negotiated_format,
            files_removed_at__isnull=True,
        )
        .order_by("-finished_at")
        .first()
    )


def complete_from(job: Job, donor: Job) -> None:
    """Finish `job` at once with a copy of `donor`'s result: no worker, no second computation."""
    now = timezone.now()
    job.output_key = copied(donor.output_key, storage.output_key, job.id)
    job.fallback_key = copied(donor.fallback_key, storage.fallback_key, job.id)
    for name in RESULT_FIELDS:
        setattr(job, name, getattr(donor, name))
    job.status, job.progress = Job.COMPLETED, 1.0
    job.started_at = job.finished_at = now
    job.processing_ms = 0.0
    job.metrics = {"cache_hit": True, "reused_job_id": str(donor.id)}


def copied(source_key: str, key_for: Callable[[str, str], str], job_id: JobId) -> str:
    """A copy of the file at `source_key` at the key `key_for` gives the new job; "" when there is none."""
    if not source_key:
        return ""
    extension = source_key.rsplit(".", 1)[-1]
    return stored(storage.copy, source_key, key_for(str(job_id), extension))


def stored(save: Callable[..., str], *args: Any) -> str:
    """`save(*args)` (a storage call), its failure named StorageUnavailable."""
    try:
        return save(*args)
    except Exception as exc:
        logger.exception("storing a file failed")
        raise StorageUnavailable(str(exc)) from exc


def withdraw(created: list[Job]) -> None:
    """Undo a submission that can't be completed: no half-made job is left behind."""
    for job in created:
        storage.delete_job_files(*job.file_keys)
        Job.objects.filter(id=job.id).delete()
