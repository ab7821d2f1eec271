"""The Idempotency-Key: a request repeated with the same key gets the jobs the first one made.

One record per owner and key holds the first request's fingerprint and, once it succeeded, its
job ids. A repeat of the same request replays those jobs; a different request with the key is a
mismatch; a repeat while the first is still being handled finds the key in use. A request that
fails gives its key back.
"""

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, connection, transaction

from processing.errors import IdempotencyKeyInUse, IdempotencyKeyInvalid, IdempotencyKeyMismatch
from processing.models import IdempotencyKey, Job

MAX_IDEMPOTENCY_KEY_LENGTH = 200


def fingerprint(
    service: str,
    parameters: dict[str, Any],
    input_hashes: list[str],
    negotiated_format: str,
    callback_url: str = "",
) -> str:
    """What makes two requests the same: the service, its parameters as parsed, each input's bytes,
    the format format=auto negotiated, and where the jobs' callbacks go."""
    request = {"service": service, "parameters": parameters, "inputs": input_hashes}
    if negotiated_format:  # only then: fingerprints made before format=auto existed stay the same
        request["negotiated_format"] = negotiated_format
    if callback_url:  # the same: fingerprints made before callbacks existed stay the same
        request["callback_url"] = callback_url
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def once(owner: str, key: str, request: str, create: Callable[[], list[Job]]) -> tuple[list[Job], bool]:
    """(the jobs `create()` makes, False) for a first use of the key; (the jobs the first request
    made, True) for a repeat of the request whose `fingerprint` is `request`."""
    record, remembered = reserve(owner, key, request)
    if remembered is not None:
        return remembered, True
    assert record is not None  # reserve() gives either the record or the jobs
    try:
        created = create()
    except BaseException:
        record.delete()  # the request failed: the key may be used again
        raise
    record.job_ids = [str(job.id) for job in created]
    record.save(update_fields=["job_ids"])
    return created, False


def reserve(owner: str, key: str, request: str) -> tuple[IdempotencyKey | None, list[Job] | None]:
    """(the new record, None) for a first use of the key; (None, its jobs) for a repeat of the
    request whose `fingerprint` is `request`.

    Raises IdempotencyKeyMismatch when the key was used for a different request, and
    IdempotencyKeyInUse while the first request with the key is still being handled.
    """
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    record = IdempotencyKey(owner=owner, key=key, fingerprint=request)
    if not inserted(record):
        return None, remembered_jobs(owner, key, request)
    return record, None


def inserted(record: IdempotencyKey) -> bool:
    """Insert the record; False when the owner has used its key before. Outside a transaction the
    INSERT goes alone, its failure harmless; inside one, within a savepoint, so that its failure
    doesn't end the transaction."""
    guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    try:
        with guard:
            record.save(force_insert=True)
    except IntegrityError:
        return False
    return True


def remembered_jobs(owner: str, key: str, request: str) -> list[Job]:
    record = IdempotencyKey.objects.get(owner=owner, key=key)
    if record.fingerprint and record.fingerprint != request:  # keys from before fingerprints match all
        raise IdempotencyKeyMismatch(
            "this Idempotency-Key was used for a different request (service, parameters or image); "
            "use a new key for a new request"
        )
    if not record.job_ids:
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still in progress")
    found = {str(job.id): job for job in Job.objects.filter(id__in=record.job_ids)}
    return [found[job_id] for job_id in record.job_ids if job_id in found]
