"""An owner's images to overlay on their results (assets): uploaded once, named by id in watermark jobs.

An asset is checked as any upload is, and further: a supported format (codecs.ALLOWED_INPUT_FORMATS)
of at most MAX_ASSET_BYTES and MAX_ASSET_PIXELS that decodes whole, and at most MAX_ASSETS_PER_OWNER
of them per owner. It is stored as a PNG of its decoded pixels (sRGB, no metadata) under
`assets/<id>/`, so that no worker ever decodes a client's file again.

Only its owner sees it, lists it, names it in a job or deletes it: to anyone else it does not exist,
and an id nobody has gets the same answer (AssetNotFound). A job that names an asset deleted after
it was accepted fails with that error too.

The workers read assets through `StoredAssets`, the watermark operation's AssetSource, installed
by processing.apps: each process keeps the most recently used ones decoded (CACHED_PIXELS).
"""

import io
import threading
import uuid
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.db.transaction import on_commit
from PIL import Image

from processing import storage
from processing.errors import AssetLimitReached, AssetNotFound, AssetTooLarge
from processing.imaging.codecs import encode_image, load_image
from processing.jobs.submissions import Upload, stored
from processing.models import Asset
from processing.owners import Owner, owned_by

# Pixels of decoded assets one process keeps (RGBA: four bytes each, 32 MB): two of the largest
# assets, or a few hundred logos.
CACHED_PIXELS = 8_000_000


def owned_assets(owner: Owner) -> QuerySet[Asset]:
    """The owner's assets, newest first."""
    return Asset.objects.filter(owned_by(owner)).order_by("-created_at", "-id")


def find(asset_id: uuid.UUID, owner: Owner) -> Asset | None:
    """The owner's asset of this id; None for one that is someone else's, or nobody's."""
    return owned_assets(owner).filter(id=asset_id).first()


def create(owner: Owner, upload: Upload, name: str = "") -> Asset:
    """Check the upload, store its pixels as a PNG and record it as the owner's asset."""
    limit: int = settings.MAX_ASSETS_PER_OWNER
    if owned_assets(owner).count() >= limit:
        raise AssetLimitReached(limit)
    if upload.size > settings.MAX_ASSET_BYTES:
        raise AssetTooLarge(
            f"the asset is {upload.size} bytes; the limit is {settings.MAX_ASSET_BYTES} (MAX_ASSET_BYTES)"
        )
    # Decoded whole now: damage is the uploader's answer today, not a failed job later.
    image, info = load_image(upload.file, settings.MAX_ASSET_PIXELS, None, settings.MAX_JPEG_SCANS)
    data = encode_image(image, "png", quality=100)
    asset = Asset(
        name=(name or upload.name or "")[:255],
        source_format=info.format.lower(),
        width=image.width,
        height=image.height,
        bytes=len(data),
        sha256=upload.sha256,
        **owner.fields(),
    )
    asset.key = stored(storage.save_output, storage.asset_key(str(asset.id)), data)
    try:
        asset.save(force_insert=True)
    except Exception:
        storage.delete_job_files(asset.key)
        raise
    return asset


def delete_file_of_deleted_asset(sender: type[Asset], instance: Asset, **kwargs: Any) -> None:
    """post_delete of an Asset (API, admin, shell): its file and admin thumbnail go once the deletion
    commits."""
    key = instance.key
    on_commit(lambda: storage.delete_job_files(key))  # a file and its thumbnail, as for a job's


class StoredAssets:
    """The watermark operation's AssetSource: owners and sizes from the rows, pixels from storage,
    decoded once per process. Every read asks the row first, so a deleted asset is gone at once,
    even from a process that has it decoded."""

    def __init__(self, cached_pixels: int = CACHED_PIXELS):
        self.cache = DecodedCache(cached_pixels)

    def check_owned(self, asset_id: uuid.UUID, owner: Owner) -> None:
        if not owned_assets(owner).filter(id=asset_id).exists():
            raise AssetNotFound(asset_id)

    def size(self, asset_id: uuid.UUID) -> tuple[int, int]:
        width, height, _ = self.row(asset_id)
        return width, height

    def image(self, asset_id: uuid.UUID) -> Image.Image:
        _, _, key = self.row(asset_id)
        found = self.cache.get(key)
        if found is None:
            found = decoded(storage.read(key))
            self.cache.put(key, found)
        return found

    def row(self, asset_id: uuid.UUID) -> tuple[int, int, str]:
        row = Asset.objects.filter(id=asset_id).values_list("width", "height", "key").first()
        if row is None:
            raise AssetNotFound(asset_id)
        return row


def decoded(data: bytes) -> Image.Image:
    """A stored asset's pixels, in RGBA (stored by `create`, so a PNG of a size already checked)."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as opened:
        return opened.convert("RGBA")


class DecodedCache:
    """Decoded images by key, the least recently used dropped past `capacity` pixels in all; shared
    by a process's worker threads."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.images: OrderedDict[str, Image.Image] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Image.Image | None:
        with self.lock:
            image = self.images.get(key)
            if image is not None:
                self.images.move_to_end(key)
            return image

    def put(self, key: str, image: Image.Image) -> None:
        with self.lock:
            self.images[key] = image
            self.images.move_to_end(key)
            while len(self.images) > 1 and self.pixels() > self.capacity:
                self.images.popitem(last=False)

    def pixels(self) -> int:
        return sum(image.width * image.height for image in self.images.values())
