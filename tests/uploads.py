"""Posting images to the API from Django's test client."""

from django.core.files.uploadedfile import SimpleUploadedFile

from tests import images


def png(name: str = "image.png", image=None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, images.png_bytes(image if image is not None else images.gradient()))


def submit(client, service: str = "grayscale", headers: dict | None = None, image=None, **params):
    data = {"image": image or png(), **{k: str(v) for k, v in params.items()}}
    return client.post(f"/api/v1/process/{service}", data, headers=headers or {})
