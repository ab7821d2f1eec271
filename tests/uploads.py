"""Posting images to the API from Django's test client."""

from django.core.files.uploadedfile import SimpleUploadedFile

from tests import images


def png(name: str = "image.png", image=None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, images.png_bytes(image if image is not None else images.gradient()))


def submit(client, service: str = "grayscale", headers: dict | None = None, image=None, **params):
    data = {"image": image or png(), **{k: str(v) for k, v in params.items()}}
    return client.post(f"/api/v1/process/{service}", data, headers=headers or {})


class LargeUpload:
    """A multipart body carrying one file of `size` zero bytes, made as it is read, that counts the
    bytes the server reads of it (a request refused on its headers reads none). Post it with
    `post_streamed`."""

    BOUNDARY = "large-upload-boundary"

    def __init__(self, size: int):
        self.head = (
            f'--{self.BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="large.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.BOUNDARY}--\r\n".encode()
        self.size = size
        self.length = len(self.head) + size + len(self.tail)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        end = self.length if size < 0 else min(self.length, self.bytes_read + size)
        start, self.bytes_read = self.bytes_read, end
        file_start, file_end = len(self.head), len(self.head) + self.size
        zeros = max(0, min(end, file_end) - max(start, file_start))
        tail = self.tail[max(0, start - file_end) : max(0, end - file_end)]
        return self.head[start:end] + bytes(zeros) + tail

    def readline(self, size: int = -1) -> bytes:  # WSGI asks for it; the multipart parser never calls it
        line = b""
        while not line.endswith(b"\n") and self.bytes_read < self.length and len(line) != size:
            line += self.read(1)
        return line


def post_streamed(client, path: str, body: LargeUpload, headers: dict | None = None):
    """POST `body` as it is read, as a server would hand it to Django."""
    return client.generic(
        "POST",
        path,
        headers=headers or {},
        CONTENT_TYPE=f"multipart/form-data; boundary={body.BOUNDARY}",
        CONTENT_LENGTH=str(body.length),
        **{"wsgi.input": body},
    )
