"""Where a job's files live: `uploads/<job id>/` and `results/<job id>/` in the default storage,
and their admin thumbnails under `thumbnails/`, the previews of results under `previews/`; an owner's
overlay images under `assets/<asset id>/`."""

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import transaction

if TYPE_CHECKING:
    from processing.models import Job

JOB_FOLDERS = ("uploads", "results")
# The longest edges a result's previews may have (processing.imaging.previews makes them).
PREVIEW_SIZES = (320, 640, 1280)


def input_key(job_id: str, extension: str) -> str:
    return f"uploads/{job_id}/input.{extension}"


def output_key(job_id: str, extension: str) -> str:
    return f"results/{job_id}/output.{extension}"


def fallback_key(job_id: str, extension: str) -> str:
    """The result as JPEG or PNG, for a download that does not accept the format=auto result's format."""
    return f"results/{job_id}/fallback.{extension}"


def asset_key(asset_id: str) -> str:
    """An asset's PNG (processing.assets): a folder of its own, which the job file cleanup never lists."""
    return f"assets/{asset_id}/overlay.png"


def thumbnail_key(key: str) -> str:
    """Where the admin's thumbnail of the file at `key` is stored: a folder of their own, so that
    a job's results folder holds its output (and fallback) and nothing else."""
    return f"thumbnails/{key}.webp"


def preview_key(key: str, size: int) -> str:
    """Where the preview of the result at `key` whose longest edge is at most `size` is stored."""
    return f"previews/{key}.{size}.webp"


def save_upload(key: str, uploaded_file: "File[bytes]") -> str:
    """Store an uploaded file under exactly `key` (never the client's filename)."""
    return default_storage.save(key, uploaded_file)


def save_output(key: str, data: bytes) -> str:
    """Store `data` under exactly `key`, replacing what is there whole: a reader gets the old file or
    the new one, never part of either (a redelivered job rewrites its one output)."""
    if not isinstance(default_storage, FileSystemStorage) or default_storage.directory_permissions_mode:
        # Object storage (S3) replaces an object in one PUT; the storages are configured to overwrite.
        return default_storage.save(key, ContentFile(data))
    write_whole(default_storage, key, data)
    return key


def write_whole(disk: FileSystemStorage, key: str, data: bytes) -> None:
    """What FileSystemStorage.save does for a key of ours, minus its per-file work (a safe_join of
    absolute paths, makedirs, a lock, a stat of the root), and atomically: written beside, then renamed
    over the file. The key's folder is made only when the write finds it missing (once per job)."""
    if key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"{key!r} is not a storage key")  # our keys never leave the storage's folder
    path = os.path.join(disk.location, key)
    part = f"{path}.{uuid.uuid4().hex}.part"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            if disk.file_permissions_mode is not None:
                os.fchmod(out.fileno(), disk.file_permissions_mode)
            out.write(data)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise


def copy(source_key: str, target_key: str) -> str:
    with default_storage.open(source_key, "rb") as source:
        return default_storage.save(target_key, source)


def read(key: str) -> bytes:
    """The stored file's bytes (for small files: thumbnails); OSError (FileNotFoundError) if it is absent."""
    with default_storage.open(key, "rb") as stored:
        data: bytes = stored.read()
        return data


def delete_job_files(*keys: str) -> None:
    """Delete each file, its thumbnail and a result's previews (any of which may never have been made)."""
    for key in keys:
        if key:
            default_storage.delete(key)
            default_storage.delete(thumbnail_key(key))
            if key.startswith("results/"):
                for size in PREVIEW_SIZES:
                    default_storage.delete(preview_key(key, size))


def delete_files_of_deleted_job(sender: type["Job"], instance: "Job", **kwargs: Any) -> None:
    """post_delete of a Job, however it was deleted (admin, shell, a withdrawn submission): its files
    go once the deletion commits, so that a rolled-back deletion keeps them."""
    keys = instance.file_keys
    transaction.on_commit(lambda: delete_job_files(*keys))


def modified_time(key: str) -> datetime:
    return default_storage.get_modified_time(key)


def stored_job_folders(folder: str) -> list[str]:
    """The job ids that have a folder under `folder` ("uploads" or "results")."""
    # Listed, not tested with exists(): object storage has no folders, only keys under a prefix, and
    # exists("uploads") there is always False.
    try:
        job_ids, _ = default_storage.listdir(folder)
    except FileNotFoundError:  # disk storage before its first file
        return []
    return job_ids


def folder_files(folder: str, job_id: str) -> list[str]:
    _, names = default_storage.listdir(f"{folder}/{job_id}")
    return [f"{folder}/{job_id}/{name}" for name in names]


@contextmanager
def local_path(key: str) -> Iterator[str]:
    """A filesystem path to the stored file: the file itself on disk storage, a temporary copy otherwise."""
    try:
        yield default_storage.path(key)
        return
    except NotImplementedError:
        pass  # remote storage (S3/MinIO): copy it down
    suffix = os.path.splitext(key)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as copy, default_storage.open(key, "rb") as remote:
        shutil.copyfileobj(remote, copy, length=1024 * 1024)
        copy.flush()
        yield copy.name
