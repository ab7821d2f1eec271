"""The HTML pages: the adaptive home page (desktop, mobile or lite), and the lite UI's
server-side upload, job list and job status pages, which work with JavaScript turned off.

Every page makes sure the browser has a session: its jobs belong to that session (see
gateway.auth.callers), and the JavaScript client's API calls and WebSocket carry its cookie. With
API keys required, a session calls only once its user has signed in: every page sends anyone else to
the sign-in page first (`sign_in_first`).
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET, require_POST
from pydantic import ValidationError

from gateway.auth import callers
from gateway.auth.ratelimit import charge_submissions, refuse_spent_submissions
from gateway.http import csrf, intake
from gateway.http.errors import ApiError, from_domain, from_validation_errors
from gateway.http.uploads import UploadTooLarge
from gateway.pages import devices
from processing.errors import DomainError
from processing.imaging import formats
from processing.imaging.codecs import ALLOWED_INPUT_FORMATS
from processing.imaging.operations import OPERATIONS
from processing.imaging.operations.base import Operation, OutputOptions
from processing.imaging.recipes import STEPS_SERVICE
from processing.jobs import presets, submissions
from processing.jobs.public import job_urls
from processing.models import Job

PAGE_TEMPLATES = {"desktop": "desktop.html", "mobile": "mobile.html", "lite": "lite.html"}
UI_NAMES = {"desktop": "Desktop", "mobile": "Mobile", "lite": "Lite"}
DEFAULT_SERVICE = "grayscale"
# Parameters every image service shares: shown after the service's own, unless required.
OUTPUT_OPTIONS = ("format", "quality", "max_bytes")
COLOUR_PATTERN = "^#[0-9a-fA-F]{6}$"
# The status page reloads itself after 1, 2, 4, 8... seconds, up to the lite polling interval:
# a quick job shows its result at once, a slow one costs a small page every few seconds.
FIRST_REFRESH_SECONDS = 1
MAX_REFRESH_SECONDS = devices.POLLING_MS["lite"] // 1000

ERROR_TITLES = {
    400: "Something is missing from the upload",
    403: "That isn't allowed",
    404: "Not found",
    411: "The upload could not be read",
    413: "That upload is too large",
    415: "That file isn't an image Darkroom can read",
    422: "Some options need changing",
    429: "Too many uploads at once",
    503: "Darkroom is busy",
}
# An image that can't be processed is a 422, as are options that need changing: these say which.
IMAGE_ERROR_TITLES = {
    "corrupt_image": "That image is damaged",
    "image_too_large": "That image has too many pixels",
    "unsupported_variant": "Darkroom can't read that kind of image",
}


# --- Pages ------------------------------------------------------------------------------


def sign_in_first(page: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A page for callers only (gateway.auth.callers.session_may_call): with API keys required, a
    visitor who has not signed in is sent to sign in, and back here after (home after a form post)."""

    @wraps(page)
    def for_callers(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not callers.session_may_call(request.user):
            return redirect_to_login(request.get_full_path() if request.method == "GET" else reverse("home"))
        return page(request, *args, **kwargs)

    return for_callers


@gzip_page
@never_cache  # each page carries the visitor's CSRF token
@require_GET
@sign_in_first
def home(request: HttpRequest) -> HttpResponse:
    """The UI that fits the device and connection (or the visitor's ?ui= choice)."""
    profile = devices.detect(request)
    ui = profile.ui_mode
    context: dict[str, Any] = {
        "ui": ui,
        "profile": profile,
        "config": devices.frontend_config(profile),
        "services": [(op.name, op.description) for op in OPERATIONS.values()],
        "ui_links": ui_links(ui, profile.ui_choice),
        "max_upload_mb": settings.MAX_UPLOAD_BYTES // (1024 * 1024),
        "input_formats": input_formats_in_words(),
    }
    if ui == "lite":
        budget = context["config"]["save_data_max_bytes"]
        context.update(
            lite_form(request, budget),
            recent_jobs=browser_jobs(returning_caller(request), callers.RECENT_JOBS_ON_LITE_HOME),
        )
    else:
        session_caller(request)  # the page's API calls and WebSocket must carry the session cookie
    return devices.adapt(request, render(request, PAGE_TEMPLATES[ui], context))


@gzip_page
@never_cache
@require_GET
@sign_in_first
def job_list(request: HttpRequest) -> HttpResponse:
    """The session's recent jobs, server-rendered; reloads itself while any is unfinished."""
    jobs = browser_jobs(returning_caller(request), callers.RECENT_JOBS_ON_JOB_LIST)
    waiting = any(not job.is_finished for job in jobs)
    context = {"ui": "lite", "ui_links": ui_links("lite", None), "jobs": jobs, **refresh(request, waiting)}
    return render(request, "lite_jobs.html", context)


@gzip_page
@never_cache
@require_GET
@sign_in_first
def job_status(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """One job, server-rendered: reloads itself until the job is finished, then links the result."""
    caller = returning_caller(request)
    job = caller.visible_jobs().filter(id=job_id).first() if caller else None
    if job is None:
        return error_page(request, ApiError(404, "not_found", "There is no such job, or it isn't yours."))
    context = {
        "ui": "lite",
        "ui_links": ui_links("lite", None),
        "job": job,
        "urls": job_urls(job.id),
        "report": report_facts(job.report) if job.report else None,
        **refresh(request, not job.is_finished),
    }
    return render(request, "lite_status.html", context)


@csrf_exempt  # checked in two steps around reading the body (see below)
@gzip_page
@require_POST
@sign_in_first
def upload(request: HttpRequest) -> HttpResponse:
    """The forms' server-side submission: create the jobs, then show their status.

    Reading the multipart body stores every file it carries, so what the headers decide comes
    first: a request that fails the CSRF check on its headers (gateway.http.csrf), or whose caller
    has no submission left, is refused before its body is read. Then the body is read, which applies
    the upload size limit (Django's CSRF check would read it first and turn a too-large upload into
    a server error), and the CSRF check on the form's token follows.
    """
    forged = csrf.refusal(request, token_in_body=True)
    if forged is not None:
        return closing(forged)
    # Whom the rate limit charges, as the API's authentication would say (Django's request takes attributes).
    request.auth = session_caller(request)  # type: ignore[attr-defined]
    try:
        refuse_spent_submissions(request)
    except ApiError as exc:
        return closing(error_page(request, exc))
    try:
        request.FILES  # noqa: B018 (parses the body)
    except UploadTooLarge as exc:
        return error_page(request, ApiError(413, "upload_too_large", str(exc)))
    return csrf_protect(submit_form)(request)


def closing(refusal: HttpResponse) -> HttpResponse:
    """A refusal sent before the body was read: the connection closes, rather than receive the rest."""
    refusal["Connection"] = "close"
    return refusal


def submit_form(request: HttpRequest) -> HttpResponse:
    caller: callers.Caller = request.auth  # type: ignore[attr-defined]  # set by upload, above
    try:
        charge_submissions(request, files_in_form(request))
        created = submissions.submit(form_submission(request, caller)).jobs
    except ApiError as exc:
        return error_page(request, exc)
    except DomainError as exc:
        return error_page(request, from_domain(exc))
    except ValidationError as exc:
        return error_page(request, from_validation_errors(exc.errors(include_url=False)))
    if len(created) == 1:
        return see_other(reverse("job-status", args=[created[0].id]))
    return see_other(reverse("job-list"))


def files_in_form(request: HttpRequest) -> int:
    """The submissions a form upload costs: one per file it may make a job of, and one at least, as an
    API request costs."""
    most: int = settings.MAX_BATCH_FILES
    return max(1, min(len(request.FILES.getlist("image")), most))


def form_submission(request: HttpRequest, caller: callers.Caller) -> submissions.Submission:
    service = form_service(request.POST)
    parameters = form_parameters(request.POST, service)
    return intake.submission_from(
        request, caller, service, at_most=settings.MAX_BATCH_FILES, parameters=parameters
    )


def form_service(form: QueryDict) -> str:
    """The service a form asks for. The lite form always names an operation beside its preset choice:
    a preset chosen there replaces it. Otherwise a form with steps or a preset and no service is a
    recipe (gateway.http.intake.service_of)."""
    if form.get("preset"):
        return STEPS_SERVICE
    return intake.service_of(form) or DEFAULT_SERVICE


# --- Helpers ----------------------------------------------------------------------------


def session_caller(request: HttpRequest) -> callers.Caller:
    """The browser's caller, making its session (and owner token) on the first visit. Only pages that
    are `sign_in_first` ask, so there is always one."""
    caller = callers.issue_session(request.session, request.user)
    if caller is None:
        raise RuntimeError("a page that issues sessions must be sign_in_first")
    return caller


def returning_caller(request: HttpRequest) -> callers.Caller | None:
    """The caller of a browser that has a session already. Pages that only show jobs make none:
    crawlers get the lite page, and a session row per crawl would pile up for nothing."""
    if not callers.has_session_cookie(request):
        return None
    return callers.from_session(request.session, request.user)


def browser_jobs(caller: callers.Caller | None, count: int) -> list[Job]:
    """A returning browser's most recent jobs; none for a browser without a session."""
    return [] if caller is None else callers.recent_jobs(caller.sees_jobs_of, count)


def input_formats_in_words() -> str:
    """The formats an upload may be in, as people name them: "JPEG, PNG, …, HEIC or AVIF"."""
    names = [formats.display_name(name) for name in ALLOWED_INPUT_FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]


def ui_links(current: str, chosen: str | None) -> list[dict[str, Any]]:
    """The UI switcher: each UI, and "Automatic" to forget a choice."""
    links = [{"href": f"/?ui={ui}", "label": name, "current": ui == current} for ui, name in UI_NAMES.items()]
    if chosen:
        links.append({"href": "/?ui=auto", "label": "Automatic", "current": False})
    return links


def see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303  # after a POST, the browser GETs the new page
    return response


def refresh(request: HttpRequest, waiting: bool) -> dict[str, Any]:
    """The meta-refresh for a page that waits on jobs: the delay, and the URL doubling it next time."""
    if not waiting:
        return {"refresh_seconds": None}
    try:
        seconds = int(request.GET.get("wait", FIRST_REFRESH_SECONDS))
    except ValueError:
        seconds = FIRST_REFRESH_SECONDS
    seconds = max(FIRST_REFRESH_SECONDS, min(seconds, MAX_REFRESH_SECONDS))
    return {"refresh_seconds": seconds, "refresh_url": f"?wait={min(seconds * 2, MAX_REFRESH_SECONDS)}"}


def error_page(request: HttpRequest, error: ApiError) -> HttpResponse:
    context = {
        "ui": "lite",
        "ui_links": ui_links("lite", None),
        "title": IMAGE_ERROR_TITLES.get(error.code) or ERROR_TITLES.get(error.status, "Something went wrong"),
        "error": error,
        # invalid_parameters' message is its problems in one line: the page lists them instead.
        "message": "" if error.code == "invalid_parameters" else error.message,
        "problems": error.details.get("fields", []),
    }
    response = render(request, "error.html", context, status=error.status)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


# --- The lite upload form: parameter fields from the services' JSON schemas ---------------------
#
# Without JavaScript, choosing an operation must not reload the page (the file chosen would go):
# the form holds every operation's fields, named `<service>.<parameter>`, and the output options
# every image operation shares once, named `output.<parameter>`; the page's CSS shows the chosen
# operation's (form_parameters reads them back).

OUTPUT_PREFIX = "output"


@dataclass(frozen=True)
class FormField:
    name: str  # the parameter's
    key: str  # the form field's: `<service>.<name>` or `output.<name>`
    label: str
    help: str
    widget: str  # number, select, text or color
    required: bool
    value: str
    options: tuple[tuple[str, str], ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)  # min, max, step, pattern
    advanced: bool = False  # shown under "Advanced": a knob most people leave alone

    @property
    def id(self) -> str:
        return "f-" + self.key.replace(".", "-")

    @property
    def shared(self) -> bool:
        """An output option, shown with whichever operation is chosen unless it has no use for it."""
        return self.key.startswith(OUTPUT_PREFIX + ".")


@dataclass(frozen=True)
class ServiceFields:
    """One operation's own fields on the lite form, and the shared output options it has no use for
    (a report takes none; convert asks for its format itself)."""

    name: str
    description: str
    fields: list[FormField]
    advanced: list[FormField]
    hides: list[str]  # the ids of those output options' fields, or of their fieldset if it is all of them


# A watermark's overlay is an asset uploaded through the API, and its text options alone weigh as much
# as three everyday operations: the light page leaves it to the desktop and mobile pages and the API.
NOT_ON_THE_LITE_PAGE = ("watermark",)


def lite_form(request: HttpRequest, budget: int | None) -> dict[str, Any]:
    """Every operation's fields and the shared output options, the one chosen (?service=) selected,
    with `budget` filled in as max_bytes for a visitor saving data."""
    chosen = request.GET.get("service", DEFAULT_SERVICE)
    defaults = {"max_bytes": budget} if budget else {}
    output = parameter_fields(OutputOptions.model_json_schema(), OUTPUT_PREFIX, defaults)
    return {
        "chosen": chosen if chosen in OPERATIONS and chosen not in NOT_ON_THE_LITE_PAGE else DEFAULT_SERVICE,
        "service_fields": [
            service_fields(operation, output)
            for operation in OPERATIONS.values()
            if operation.name not in NOT_ON_THE_LITE_PAGE
        ],
        "output_fields": output,
        "presets": [definition for definition, _ in presets.usable()],
    }


def service_fields(operation: Operation[Any], output: list[FormField]) -> ServiceFields:
    schema = operation.json_schema()
    own = [f for f in parameter_fields(schema, operation.name) if f.name not in OUTPUT_OPTIONS or f.required]
    properties = schema.get("properties", {})
    unused = [f"{f.id}-p" for f in output if f.name not in properties or any(o.name == f.name for o in own)]
    hides = [OUTPUT_PREFIX] if len(unused) == len(output) else unused
    return ServiceFields(
        operation.name,
        operation.description,
        fields=[f for f in own if not f.advanced],
        advanced=[f for f in own if f.advanced],
        hides=hides,
    )


def form_parameters(form: QueryDict, service: str) -> dict[str, Any]:
    """The chosen operation's parameters from a form: its own fields (`<service>.<name>`) over the
    output options it takes (`output.<name>`); other operations' fields are not its. A plain name
    (the desktop form without JavaScript, a script) is a parameter as it is."""
    properties = OPERATIONS[service].json_schema().get("properties", {}) if service in OPERATIONS else {}
    plain, output, own = {}, {}, {}
    for key, value in intake.parameters_from(form).items():
        prefix, _, name = key.rpartition(".")
        if not prefix:
            plain[key] = value
        elif prefix == OUTPUT_PREFIX and name in properties:
            output[name] = value
        elif prefix == service:
            own[name] = value
    return {**plain, **output, **own}


def parameter_fields(
    schema: dict[str, Any], prefix: str, defaults: dict[str, Any] | None = None
) -> list[FormField]:
    """Form fields for a pydantic JSON schema, named `<prefix>.<parameter>`: the service's own
    parameters, then the output options. `defaults` replaces the schema's defaults for this page (a
    visitor saving data: a byte budget)."""
    required = set(schema.get("required", []))
    properties = schema.get("properties", {}).items()
    fields = [
        form_field(name, f"{prefix}.{name}", prop, name in required, (defaults or {}).get(name))
        for name, prop in properties
    ]
    return sorted(fields, key=lambda f: f.name in OUTPUT_OPTIONS and not f.required)


def form_field(
    name: str, key: str, prop: dict[str, Any], required: bool, page_default: Any = None
) -> FormField:
    spec = without_null(prop)
    default = prop.get("default") if page_default is None else page_default
    value = "" if default is None else str(default)
    common = {
        "name": name,
        "key": key,
        "label": prop.get("title", name),
        "help": prop.get("description", ""),
        "required": required,
        "advanced": bool(prop.get("x-advanced")) and not required,
    }
    if "enum" in spec:
        options = tuple((str(v), choice_label(prop, v)) for v in spec["enum"])
        if default is None and not required:
            options = (("", "Default"), *options)
        return FormField(**common, widget="select", value=value, options=options)
    kind = spec.get("type")
    if kind == "boolean":
        options = (("true", "Yes"), ("false", "No"))
        return FormField(**common, widget="select", value=str(bool(default)).lower(), options=options)
    if kind in ("integer", "number"):
        attrs = {
            "min": spec.get("minimum"),
            "max": spec.get("maximum"),
            "step": "1" if kind == "integer" else "any",
        }
        attrs = {key: val for key, val in attrs.items() if val is not None}
        return FormField(**common, widget="number", value=value, attrs=attrs)
    if spec.get("pattern") == COLOUR_PATTERN:
        return FormField(**common, widget="color", value=value or "#ffffff")
    attrs = {"pattern": spec["pattern"].strip("^$")} if spec.get("pattern") else {}
    return FormField(**common, widget="text", value=value, attrs=attrs)


def choice_label(prop: dict[str, Any], value: Any) -> str:
    """A choice as the form shows it: the schema's label for it (x-enum-labels), else capitalised."""
    text = str(value)
    label: str = prop.get("x-enum-labels", {}).get(text) or text[:1].upper() + text[1:]
    return label


def without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema (`anyOf: [X, null]`) is X's."""
    choices = [c for c in prop.get("anyOf", []) if c.get("type") != "null"]
    return choices[0] if len(choices) == 1 else prop


def report_facts(report: dict[str, Any]) -> dict[str, Any]:
    """The analyze report in words, for people: the JSON download has everything."""
    facts = []
    if "format" in report:
        facts.append(("Format", str(report["format"])))
    if "width" in report and "height" in report:
        facts.append(
            ("Size", f"{report['width']} × {report['height']} pixels ({report.get('megapixels', 0)} MP)")
        )
    if "has_alpha" in report:
        facts.append(("Transparency", "yes" if report["has_alpha"] else "no"))
    if "brightness" in report:
        facts.append(("Brightness", f"{report['brightness']} of 255"))
    if "contrast" in report:
        facts.append(("Contrast", f"{report['contrast']} (spread of brightness)"))
    if "sharpness" in report:
        facts.append(("Sharpness", f"{report['sharpness']} (higher is crisper)"))
    colours = [
        {"hex": c["hex"], "percent": round(c["fraction"] * 100)}
        for c in report.get("dominant_colors", [])
        if isinstance(c, dict) and "hex" in c and "fraction" in c
    ]
    return {"facts": facts, "colours": colours}
