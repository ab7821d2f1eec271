"""Pillow's own test images (`Tests/images` in its source distribution), fetched once and kept under var/.

Pillow's licence, the MIT-CMU licence (the Historical Permission Notice and Disclaimer, HPND), covers
its test images as it covers its code: they may be copied and used for any purpose, the notice kept
with them. They are fetched rather than vendored all the same: 47 MB of source distribution for 59 MB
of images, which the repository need not carry. The cache is keyed by the pinned Pillow version
(requirements.txt), so upgrading Pillow fetches the images its tests go with.

Under CI=true a failed fetch fails the tests that need the images; elsewhere (a laptop offline) they
are skipped with the reason.
"""

import fcntl
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.services import IN_CI

PROJECT = Path(__file__).resolve().parent.parent
PILLOW_VERSION = importlib.metadata.version("pillow")
CACHE = PROJECT / "var" / "cache" / "pillow-test-images" / PILLOW_VERSION
FETCH_SECONDS = 600


def pillow_test_images() -> Path:
    """The folder of Pillow's test images for the installed Pillow, fetched on first use."""
    images = CACHE / "images"
    if images.is_dir():
        return images
    CACHE.mkdir(parents=True, exist_ok=True)
    # Test processes running side by side (pytest-xdist) fetch once: the others wait for the first.
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not images.is_dir():
            try:
                fetch_into(images)
            except subprocess.CalledProcessError as exc:
                unavailable(f"pip could not download Pillow {PILLOW_VERSION}: {exc.stderr.decode()[-1000:]}")
            except (OSError, subprocess.SubprocessError, tarfile.TarError, ValueError) as exc:
                unavailable(f"Pillow {PILLOW_VERSION}'s test images could not be fetched: {exc}")
    return images


def fetch_into(images: Path) -> None:
    """Download Pillow's source distribution and extract its Tests/images alone, whole or not at all."""
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
            + [f"pillow=={PILLOW_VERSION}", "--dest", work],
            check=True,
            capture_output=True,
            timeout=FETCH_SECONDS,
        )
        (archive,) = Path(work).glob("pillow-*.tar.gz")
        inside = f"pillow-{PILLOW_VERSION}/Tests/images/"
        with tarfile.open(archive) as sdist:
            members = [member for member in sdist.getmembers() if member.name.startswith(inside)]
            sdist.extractall(work, members=members, filter="data")
        # Renamed into place once complete: a fetch cut short leaves nothing that looks done.
        shutil.move(Path(work) / inside, images)


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
