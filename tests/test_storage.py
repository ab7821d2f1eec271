"""Files on the local disk: stored under exactly their key, each replaced whole."""

import os

import pytest
from django.core.files.storage import default_storage

from processing import storage


def test_an_output_is_stored_under_its_key_in_a_folder_made_for_it():
    assert storage.save_output("results/a-job/output.jpg", b"first") == "results/a-job/output.jpg"
    assert storage.read("results/a-job/output.jpg") == b"first"


def test_a_second_write_replaces_the_file_and_leaves_nothing_beside_it():
    storage.save_output("results/a-job/output.jpg", b"first")
    storage.save_output("results/a-job/output.jpg", b"second, longer")
    assert storage.read("results/a-job/output.jpg") == b"second, longer"
    assert default_storage.listdir("results/a-job") == ([], ["output.jpg"])


def test_a_write_that_fails_leaves_the_old_file_whole(monkeypatch):
    storage.save_output("results/a-job/output.jpg", b"first")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        storage.save_output("results/a-job/output.jpg", b"second")
    assert storage.read("results/a-job/output.jpg") == b"first"
    assert default_storage.listdir("results/a-job") == ([], ["output.jpg"])


def test_a_stored_file_gets_the_configured_permissions(settings):
    settings.FILE_UPLOAD_PERMISSIONS = 0o640
    storage.save_output("results/a-job/output.jpg", b"first")
    assert os.stat(default_storage.path("results/a-job/output.jpg")).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("key", ["../outside", "/etc/outside", "results/../../outside"])
def test_a_key_that_leaves_the_storage_is_refused(key):
    with pytest.raises(ValueError):
        storage.save_output(key, b"data")
