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


class AssetTooLarge(ImageTooLarge):
    """An asset upload of more bytes than MAX_ASSET_BYTES."""

    def __init__(self, message: str):
        UnprocessableImage.__init__(self, "asset_too_large", message)


class AssetNotFound(UnprocessableImage):
    """A job names an asset its owner does not have: none by that id, or someone else's. The same
    answer either way, so that nobody learns whether another owner has an asset of that id."""

    field = "asset_id"

    def __init__(self, asset_id: object):
        super().__init__("asset_not_found", f"there is no asset {asset_id}")
        self.asset_id = str(asset_id)


class AnimationTooLarge(OutputTooLarge):
    """An animation whose frames, kept, would be over MAX_ANIMATION_PIXELS or MAX_ANIMATION_FRAMES
    (`limit`); `fields` names the parameters that would make it fit (a smaller size, another format)."""

    def __init__(self, fields: tuple[str, ...], message: str, limit: str):
        super().__init__(fields, message, limit)
        self.code = "animation_too_large"


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


class AssetLimitReached(DomainError):
    """The owner already has MAX_ASSETS_PER_OWNER assets: one must go before another comes."""

    def __init__(self, limit: int):
        super().__init__(
            "too_many_assets",
            f"an owner may keep at most {limit} assets (MAX_ASSETS_PER_OWNER); delete one first",
        )
        self.limit = limit


class UnknownOperation(DomainError):
    """No operation has this name (the client asked for a service that doesn't exist)."""

    def __init__(self, name: str):
        super().__init__("unknown_service", f"there is no service named {name!r}")
        self.name = name


class StepRefused(DomainError):
    """A step of a recipe refused at submit (or found not to fit by the worker): `cause` is what was
    wrong with it, a domain error or the parameters' ValidationError; `index` and `service` name the
    step, as `steps[index] (service)`, whatever the cause's own kind."""

    def __init__(self, index: int, service: str, cause: Exception):
        self.index, self.service, self.cause = index, service, cause
        code = cause.code if isinstance(cause, DomainError) else "invalid_parameters"
        super().__init__(code, f"{self.step}: {cause}")

    @property
    def step(self) -> str:
        return f"steps[{self.index}] ({self.service})" if self.service else f"steps[{self.index}]"

    @property
    def path(self) -> str:
        """Where the step is in the request, as a field path: steps[2]."""
        return f"steps[{self.index}]"


class UnknownPreset(DomainError):
    """No preset has this name; `available` lists those that do exist."""

    def __init__(self, name: str, available: list[str]):
        known = ", ".join(available) if available else "none are declared"
        super().__init__("unknown_preset", f"there is no preset named {name!r}; the presets: {known}")
        self.name, self.available = name, available


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


class CallbackRefused(DomainError):
    """A submission's callback_url can't be used: not an http(s) URL, an address callbacks may not
    reach, or an owner without a callback secret to sign with. `code` says which."""

    field = "callback_url"


class Cancelled(Exception):
    """Raised by a progress callback to stop an operation at its next checkpoint.

    Not a DomainError: nobody is told of it, the job was cancelled on purpose."""
