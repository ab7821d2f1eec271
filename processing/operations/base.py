"""What an operation is: a pure function on a PIL image, the pydantic model of its parameters, and a name."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ProgressCallback = Callable[[float], None]


class Params(BaseModel):
    """Parameters arrive as form strings ("4", "true") or as JSON; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def blank_fields_are_not_given(cls, data: Any) -> Any:
        # An HTML form sends an untouched field as "": that means "use the default".
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value != ""}
        return data


class OutputOptions(Params):
    """How an image result is encoded; the base of every image operation's parameters."""

    format: Literal["jpeg", "png", "webp"] | None = Field(
        None, description="Output format; by default the input's format (PNG for GIF, BMP and TIFF)."
    )
    quality: int = Field(85, ge=1, le=100, description="JPEG and WebP quality; PNG ignores it.")

    @field_validator("format", mode="before")
    @classmethod
    def format_names_are_forgiving(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "jpeg" if value == "jpg" else value
        return value


class ReportParams(Params):
    """The base for operations that produce a report rather than an image."""


@dataclass
class OperationResult:
    image: Image.Image | None = None
    report: dict | None = None
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    name: str
    description: str
    params: type[BaseModel]
    apply: Callable[[Image.Image, BaseModel, ProgressCallback], OperationResult]
    produces: Literal["image", "report"] = "image"

    def parse(self, raw: Mapping[str, Any]) -> BaseModel:
        """Validate raw parameters; raises pydantic.ValidationError."""
        return self.params.model_validate(dict(raw))

    def check_fits(self, params: BaseModel, width: int, height: int) -> None:
        """Raise InvalidParameters when valid parameters can't apply to an image of this size."""
        check = getattr(params, "check_fits", None)
        if check is not None:
            check(width, height)

    def json_schema(self) -> dict:
        return self.params.model_json_schema()
