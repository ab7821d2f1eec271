"""A recipe: the steps a job runs on its one decode, and the output options of its one encode.

Every job runs a recipe. A job submitted to one service (`/process/resize`) is a recipe of one step,
stored as it always was: service "resize" and its parameters. A job submitted with `steps` is stored
as service "steps" and its canonical chain,

    {"steps": [{"service": "resize", "parameters": {...}}, ...],
     "format": ..., "quality": ..., "max_bytes": ...}

each step's parameters as parsed (defaults filled in, without the output options, which belong to
the job). The same recipe, however it was written, is the same JSON: result reuse and the
Idempotency-Key compare it. A `steps` of one step is stored as that service's job, the same job as
the single-operation endpoint's.

A recipe is checked whole before a pixel is made, from the upload's size: each step is checked
against the size the steps before it make (`walk`), and a refusal names the step it is about
(`steps[2] (sharpen): ...`, processing.errors.StepRefused). A report (analyze) is no step of a
recipe of several: its result is no image for the next step, and no image to encode.

Django-free, like the operations.
"""

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import ValidationError

from processing.errors import DomainError, InvalidParameters, StepRefused, UnknownOperation
from processing.imaging.codecs import DecodeHint
from processing.imaging.operations import (
    Operation,
    OperationResult,
    OutputLimits,
    OutputOptions,
    get_operation,
)
from processing.imaging.operations.base import ProgressCallback

# The service of a job of several steps (Job.service): no operation is called this.
STEPS_SERVICE = "steps"
# The options of the one encode (format, quality, max_bytes): the job's, not any one step's.
OUTPUT_FIELDS = tuple(OutputOptions.model_fields)
# A preset's name (processing.jobs.presets): what a client sends as preset=<name>.
PRESET_NAME = r"[A-Za-z0-9_-]{1,64}"
STEP_SHAPE = '{"service": <a service of /api/v1/services>, "parameters": {...}}'


@dataclass(frozen=True)
class Step:
    operation: Operation[Any]
    params: Any  # the operation's parameters model, the job's output options in it (for an image)

    @property
    def service(self) -> str:
        return self.operation.name

    def canonical(self) -> dict[str, Any]:
        """The step as a job stores it: its service and its own parameters, the output options left out."""
        own = self.params.model_dump(mode="json", exclude=set(OUTPUT_FIELDS))
        return {"service": self.service, "parameters": own}


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    named: bool = False  # written as steps: a refusal names its step (steps[2] (sharpen): ...)

    @property
    def service(self) -> str:
        """Job.service: the operation's name for one step, else "steps"."""
        return self.steps[0].service if len(self.steps) == 1 else STEPS_SERVICE

    @property
    def produces(self) -> str:
        return self.steps[-1].operation.produces

    @property
    def output(self) -> Any:
        """The options of the one encode (format, quality, max_bytes): every step's parameters hold the
        job's, the last step's among them."""
        return self.steps[-1].params

    def parameters(self) -> dict[str, Any]:
        """What the job stores, and what result reuse and the Idempotency-Key compare: the canonical chain."""
        if len(self.steps) == 1:
            return dict(self.steps[0].params.model_dump(mode="json"))
        return {"steps": [step.canonical() for step in self.steps], **self.output_options()}

    def output_options(self) -> dict[str, Any]:
        """The options of the one encode, as parsed (none for a report)."""
        return dict(self.output.model_dump(mode="json", include=set(OUTPUT_FIELDS)))

    def walk(self, width: int, height: int) -> Iterator[tuple[int, Step, int, int]]:
        """Each step with the size of the image it is given: the upload's, then the one before it makes.

        A step's result size is asked for only after the caller has seen the step (and checked it fits)."""
        for index, step in enumerate(self.steps):
            yield index, step, width, height
            made = step.operation.output_size(step.params, width, height)
            if made is not None:
                width, height = made

    def check_job(self, width: int, height: int, output_format: str, limits: OutputLimits) -> None:
        """Operation.check_job for every step, each on the size the steps before it make: its parameters
        fit, and its result is within the output limits, MAX_ENLARGEMENT counted from the upload; the
        format's own limit (AVIF's) for the last step, whose result is encoded."""
        last = len(self.steps) - 1
        for index, step, step_width, step_height in self.walk(width, height):
            encoded_as = output_format if index == last else ""
            with self.naming(index, step):
                step.operation.check_job(
                    step.params, step_width, step_height, encoded_as, limits, input_pixels=width * height
                )

    def check_references(self, owner: Any) -> None:
        """Each step's check of what it refers to (an operation's optional `check_references(params,
        owner)`: e.g. an asset of the owner's), at submit."""
        for index, step in enumerate(self.steps):
            check = getattr(step.operation, "check_references", None)
            if check is not None:
                with self.naming(index, step):
                    check(step.params, owner)

    def decode_hint(self, width: int, height: int) -> DecodeHint | None:
        """The first step's hint, and only its: a hint changes how that step makes its result, never the
        result's size or mode, so the steps after it are given the same image either way. A later
        step's hint would change what the steps before it see."""
        first = self.steps[0]
        return first.operation.decode_hint(first.params, width, height)

    def apply(self, image: Image.Image, progress: ProgressCallback) -> OperationResult:
        """Each step on the image the one before made; progress in equal shares, a step's in its own.

        A recipe of several steps has in its metrics each step's service, time and own metrics."""
        if len(self.steps) == 1:
            step = self.steps[0]
            with self.naming(0, step):
                return step.operation.apply(image, step.params, progress)
        timings: list[dict[str, Any]] = []
        for index, step in enumerate(self.steps):
            started = time.perf_counter()
            with self.naming(index, step):
                result = step.operation.apply(image, step.params, self.share(progress, index))
            assert result.image is not None  # a report is no step of a recipe of several (step_of)
            image = result.image
            # The upload's size, which a reduced decode leaves for the first step (codecs.source_size),
            # is not the size of what the next step is given.
            image.info.pop("source_size", None)
            ms = round((time.perf_counter() - started) * 1000, 2)
            timings.append({"service": step.service, "ms": ms, **result.metrics})
        return OperationResult(image=image, metrics={"steps": timings})

    def share(self, progress: ProgressCallback, index: int) -> ProgressCallback:
        """Step `index`'s progress, as the recipe's: each step an equal share."""
        count = len(self.steps)
        return lambda done: progress((index + done) / count)

    @contextmanager
    def naming(self, index: int, step: Step) -> Iterator[None]:
        """A refusal in the block, as StepRefused naming the step, for a recipe written as steps."""
        try:
            yield
        except StepRefused:
            raise
        except (DomainError, ValidationError) as exc:
            if not self.named:
                raise
            raise StepRefused(index, step.service, exc) from exc


def single(operation: Operation[Any], raw: Mapping[str, Any]) -> Recipe:
    """One service's job (/process/{service}); its parameters' ValidationError as it is."""
    return Recipe((Step(operation, operation.parse(raw)),))


def from_steps(raw_steps: Any, raw_output: Mapping[str, Any], max_steps: int) -> Recipe:
    """A recipe as a client writes it: `steps` (a list, or its JSON text) and the output options beside
    them, or on the last step (not both). Every refusal names the step it is about."""
    listed = step_list(raw_steps, max_steps)
    output = output_options(listed, raw_output)
    steps = tuple(step_of(index, item, output, len(listed)) for index, item in enumerate(listed))
    return Recipe(steps, named=True)


def stored(service: str, parameters: Mapping[str, Any]) -> Recipe:
    """The recipe of a job as it stored it (Recipe.parameters): what the worker runs."""
    if service != STEPS_SERVICE:
        return single(get_operation(service), parameters)
    output = {name: parameters[name] for name in OUTPUT_FIELDS if name in parameters}
    listed = parameters["steps"]
    return Recipe(tuple(step_of(index, item, output, len(listed)) for index, item in enumerate(listed)), True)


def step_list(raw: Any, max_steps: int) -> list[dict[str, Any]]:
    """The steps, each {"service": name, "parameters": {...}}, 1 to max_steps of them."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than any recipe
            raise InvalidParameters("steps", f"not JSON ({exc}); give a list of {STEP_SHAPE}") from None
    if not isinstance(raw, list) or not raw:
        raise InvalidParameters("steps", f"give a list of one or more steps, each {STEP_SHAPE}")
    if len(raw) > max_steps:
        raise InvalidParameters(
            "steps", f"{len(raw)} steps; a recipe may have at most {max_steps} (MAX_STEPS)"
        )
    for index, item in enumerate(raw):
        well_formed = (
            isinstance(item, dict)
            and isinstance(item.get("service"), str)
            and isinstance(item.get("parameters", {}), dict)
            and not set(item) - {"service", "parameters"}
        )
        if not well_formed:
            service = item.get("service") if isinstance(item, dict) else None
            problem = InvalidParameters("", f"a step is {STEP_SHAPE}")
            raise StepRefused(index, service if isinstance(service, str) else "", problem)
    return raw


def output_options(listed: list[dict[str, Any]], raw_output: Mapping[str, Any]) -> dict[str, Any]:
    """The job's output options: beside the steps, or on the last step (not both). No other step may
    give one: only the result is encoded. An untouched form field ("") is not given."""
    beside = {name: value for name, value in raw_output.items() if value != ""}
    for name in beside:
        if name not in OUTPUT_FIELDS:
            raise InvalidParameters(
                name, f"beside steps, only the output options ({', '.join(OUTPUT_FIELDS)}) are given"
            )
    OutputOptions.model_validate(beside)  # its errors name the option, not a step
    last = len(listed) - 1
    for index, item in enumerate(listed):
        parameters = item.get("parameters", {})
        given = [name for name in OUTPUT_FIELDS if parameters.get(name, "") != ""]
        if not given:
            continue
        if index != last:
            problem = (
                "an output option belongs to the last step, or beside the steps: only the result is encoded"
            )
            raise StepRefused(index, item["service"], InvalidParameters(given[0], problem))
        if beside:
            problem = "the output options are given beside the steps too: give them in one place"
            raise StepRefused(index, item["service"], InvalidParameters(given[0], problem))
        return {name: parameters[name] for name in given}
    return beside


def step_of(index: int, item: Mapping[str, Any], output: Mapping[str, Any], count: int) -> Step:
    """Step `index` of `count`: its operation and its parameters, the job's output options in them."""
    service = item["service"]
    try:
        operation = get_operation(service)
    except KeyError:
        raise StepRefused(index, service, UnknownOperation(service)) from None
    makes_image = operation.produces == "image"
    if not makes_image and count > 1:
        problem = f"{service} makes a report, not an image: it can't be a step of several; submit it alone"
        raise StepRefused(index, service, InvalidParameters("service", problem))
    if not makes_image and output:
        problem = f"{service} makes a report: there is no image to encode, and no output option"
        raise StepRefused(index, service, InvalidParameters(next(iter(output)), problem))
    raw = {**item.get("parameters", {}), **output} if makes_image else dict(item.get("parameters", {}))
    try:
        return Step(operation, operation.parse(raw))
    except ValidationError as exc:
        raise StepRefused(index, service, exc) from None
