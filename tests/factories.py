"""Jobs made directly in the database, with a real stored input, for tests that skip the upload."""

import dramatiq

from processing import storage
from processing.models import Job
from processing.worker.actors import process_job
from tests import images


def stored_job(service: str = "grayscale", data: bytes | None = None, **fields) -> Job:
    """A saved job whose input (a 64x48 PNG unless `data` is given) is in storage."""
    data = data or images.png_bytes(images.gradient(64, 48))
    job = Job(
        service=service,
        input_sha256="0" * 64,
        input_format="png",
        input_width=64,
        input_height=48,
        input_bytes=len(data),
        **fields,
    )
    job.input_key = storage.save_output(storage.input_key(str(job.id), "png"), data)
    job.save()
    return job


def process_queued(broker) -> None:
    """Run a worker over everything queued so far, then stop it: jobs wait until a test says so, so
    that it may first change what the worker will find."""
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    broker.join(process_job.queue_name, fail_fast=False)
    worker.join()
    worker.stop()
