"""The domain's errors: the actors turn them into job failures, the gateway into HTTP answers.

Every error a request or a job can meet is a DomainError: a stable machine-readable `code`, a
`message` fit to show the client, and the data fields of its kind. Which HTTP status each one is
the gateway decides (gateway.http.errors), not the domain.
"""


class DomainError(Exception):
    """An error a request or a job can meet; `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class UnprocessableImage(DomainError):
    """The image can't be processed; retrying won't help. `filename`, once known, names the upload."""

    filename: str | None = None


class UnsupportedImage(UnprocessableImage):
    """Not an image, or not one of the allowed input formats."""

    def __init__(self, message: str):
        super().__init__("unsupported_image", message)


class UnsupportedVariant(UnprocessableImage):
    """An allowed format, but a variant of it this server does not decode (a BMP holding a PNG, a TIFF
    compression its TIFF library lacks): another file of the same format would be processed."""

    def __init__(self, message: str):
        super().__init__("unsupported_variant", message)


class ImageTooLarge(UnprocessableImage):
    """More pixels than the configured limit (MAX_IMAGE_PIXELS)."""

    def __init__(self, message: str):
        super().__init__("image_too_large", message)


class OutputTooLarge(UnprocessableImage):
    """The parameters ask for a result over an output limit; `fields` names them, `limit` the setting
    (MAX_OUTPUT_PIXELS, MAX_ENLARGEMENT or MAX_AVIF_OUTPUT_PIXELS)."""

    def __init__(self, fields: tuple[str, ...], message: str, limit: str = "MAX_OUTPUT_PIXELS"):
        super().__init__("output_too_large", message)
        self.fields = fields
        self.limit = limit


class TooManyScans(UnprocessableImage):
    """A progressive JPEG with so many scans that decoding it would cost far more than its size says."""

    def __init__(self, message: str):
        super().__init__("too_many_scans", message)


class EmptyImage(UnprocessableImage):
    """A zero-byte upload."""

    def __init__(self, message: str = "the uploaded file is empty"):
        super().__init__("empty_image", message)


class InvalidParameters(DomainError):
    """A parameter is valid on its own but doesn't fit this image (e.g. a crop box outside it)."""

    def __init__(self, field: str, message: str):
        super().__init__("invalid_parameters", message)
        self.field = field


class UnknownOperation(DomainError):
    """No operation has this name (the client asked for a service that doesn't exist)."""

    def __init__(self, name: str):
        super().__init__("unknown_service", f"there is no service named {name!r}")
        self.name = name


class DependencyUnavailable(DomainError):
    """A service the domain relies on didn't answer: nothing was done, and the same request may well
    succeed shortly. The message is the same whatever failed; `cause` says what did, for the logs."""

    dependency = ""

    def __init__(self, cause: str):
        super().__init__(
            f"{self.dependency}_unavailable", f"the {self.dependency} is unavailable; try again shortly"
        )
        self.cause = cause


class BrokerUnavailable(DependencyUnavailable):
    """The broker did not confirm the message: the job is not queued."""

    dependency = "broker"


class StorageUnavailable(DependencyUnavailable):
    """The file storage refused to store or copy a file."""

    dependency = "storage"


class IdempotencyKeyInvalid(DomainError):
    """An Idempotency-Key that can't be stored (too long)."""

    def __init__(self, message: str):
        super().__init__("invalid_idempotency_key", message)


class IdempotencyKeyInUse(DomainError):
    """The first request with this Idempotency-Key is still being handled."""

    def __init__(self, message: str):
        super().__init__("idempotency_key_in_use", message)


class IdempotencyKeyMismatch(DomainError):
    """An Idempotency-Key used again for a different request."""

    def __init__(self, message: str):
        super().__init__("idempotency_mismatch", message)


class Cancelled(Exception):
    """Raised by a progress callback to stop an operation at its next checkpoint.

    Not a DomainError: nobody is told of it, the job was cancelled on purpose."""
