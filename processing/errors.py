"""The domain's errors: the actors turn them into job failures, the gateway into HTTP answers."""


class UnprocessableImage(Exception):
    """The image can't be processed; retrying won't help. `code` is a stable machine-readable string."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class UnsupportedImage(UnprocessableImage):
    """Not an image, or not one of the allowed input formats."""

    def __init__(self, message: str):
        super().__init__("unsupported_image", message)


class ImageTooLarge(UnprocessableImage):
    """More pixels than the configured limit."""

    def __init__(self, message: str):
        super().__init__("image_too_large", message)


class OutputTooLarge(UnprocessableImage):
    """The parameters ask for a result with more pixels than MAX_OUTPUT_PIXELS; `fields` names them."""

    def __init__(self, fields: tuple[str, ...], message: str):
        super().__init__("output_too_large", message)
        self.fields = fields


class TooManyScans(UnprocessableImage):
    """A progressive JPEG with so many scans that decoding it would cost far more than its size says."""

    def __init__(self, message: str):
        super().__init__("too_many_scans", message)


class EmptyImage(UnprocessableImage):
    """A zero-byte upload."""

    def __init__(self, message: str = "the uploaded file is empty"):
        super().__init__("empty_image", message)


class InvalidParameters(Exception):
    """A parameter is valid on its own but doesn't fit this image (e.g. a crop box outside it)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class Cancelled(Exception):
    """Raised by a progress callback to stop an operation at its next checkpoint."""


class BrokerUnavailable(Exception):
    """The broker did not confirm the message: the job is not queued."""


class StorageUnavailable(Exception):
    """The file storage refused to store or copy a file."""


class UnknownService(Exception):
    """No operation has this name."""

    def __init__(self, name: str):
        super().__init__(f"there is no service named {name!r}")
        self.name = name


class IdempotencyKeyInvalid(Exception):
    """An Idempotency-Key that can't be stored (too long)."""


class IdempotencyKeyInUse(Exception):
    """The first request with this Idempotency-Key is still being handled."""


class IdempotencyKeyMismatch(Exception):
    """An Idempotency-Key used again for a different request."""
