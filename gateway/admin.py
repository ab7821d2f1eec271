"""The jobs admin: find jobs (status, service, owner, date; by id or sha256), see their
recipe, images, timings and audit trail, and act on them: retry, cancel, re-publish the dead
letters, delete with their files. The presets admin: named recipes, checked as they are saved. The
assets admin: every owner's overlay images (processing.assets), to see and delete. And each callback
delivery and its attempts (also on its job), and the API keys: their default callback URL, and a new
callback secret shown once.

Every field is read-only: a job changes only through its lifecycle (processing.jobs.lifecycle).
Storage keys never appear; images are shown as thumbnails (processing.imaging.admin_thumbnails),
through an admin-only view that makes each on its first view, within a bounded decode: a JPEG
at its smallest DCT scale, nothing past 4 megapixels (the worker stores the thumbnails of
larger files). The admin is a web concern, so it lives with the gateway, though the jobs are
processing's models.
"""

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from pydantic import ValidationError

from gateway.models import ApiKey
from processing import storage
from processing.callbacks import addresses, deliveries, signing, targets
from processing.errors import BrokerUnavailable, CallbackRefused, DomainError
from processing.imaging import admin_thumbnails, recipes
from processing.imaging.operations import OPERATIONS
from processing.imaging.operations.base import json_value
from processing.imaging.recipes import OUTPUT_FIELDS, STEPS_SERVICE
from processing.jobs import lifecycle, presets, publishing
from processing.models import Asset, CallbackDelivery, CallbackSecret, Job, Preset
from processing.owners import Owner, owned_by

logger = logging.getLogger(__name__)

THUMBNAIL_EDGE = admin_thumbnails.EDGE
IMAGE_SIDES = ("input", "output")
# Shown when a completed job's thumbnail can't be made: its file is gone or damaged, or too large
# to decode in a request and its worker stored none (it finished before thumbnails were stored).
PLACEHOLDER = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="160" viewBox="0 0 160 160">'
    b'<rect width="160" height="160" fill="#eee"/>'
    b'<text x="80" y="86" font-family="sans-serif" font-size="16" fill="#888" text-anchor="middle">'
    b"no preview</text></svg>"
)
# Failures recorded when a message died (retries used up, time limit, lost worker): the
# message went to the dead-letter queue, and the input may well be fine.
DEAD_LETTER_CODES = ("processing_error", "worker_lost", "time_limit_exceeded")

# ModelAdmin is generic to the type checker alone: Django's own class takes no [Job].
if TYPE_CHECKING:
    JobModelAdmin = admin.ModelAdmin[Job]
    AssetModelAdmin = admin.ModelAdmin[Asset]
    DeliveryModelAdmin = admin.ModelAdmin[CallbackDelivery]
    ApiKeyModelAdmin = admin.ModelAdmin[ApiKey]
    ApiKeyModelForm = forms.ModelForm[ApiKey]
else:
    JobModelAdmin = AssetModelAdmin = DeliveryModelAdmin = ApiKeyModelAdmin = admin.ModelAdmin
    ApiKeyModelForm = forms.ModelForm


class OwnerFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: "admin.ModelAdmin[Any]") -> list[tuple[str, str]]:
        keys = [
            (Owner(key=str(key.pk)).identity, f"API key: {key.name}")
            for key in ApiKey.objects.order_by("name")[:50]
        ]
        return [
            ("session", "Browser sessions"),
            ("token", "Bearer tokens"),
            ("anonymous", "Anonymous"),
            *keys,
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Jobs or assets: both have the owner columns."""
        value = self.value() or ""
        if value == "session":
            return queryset.filter(owner_key="", owner_subject="").exclude(owner_session="")
        if value == "token":
            return queryset.filter(owner_key="").exclude(owner_subject="")
        try:
            owner = Owner.from_identity(value)  # "anonymous" or an API key's
        except ValueError:
            return queryset
        return queryset.filter(owned_by(owner))


@admin.register(Job)
class JobAdmin(JobModelAdmin):
    list_display = (
        "short_id",
        "service_and_steps",
        "status",
        "owner",
        "input_thumbnail",
        "output_thumbnail",
        "timings",
        "created",
        "error_code",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        "service",
        "pool",
        OwnerFilter,
        ("owner_user", admin.RelatedOnlyFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
        "error_code",
    )
    list_select_related = ("owner_user",)
    list_per_page = 50
    search_fields = ("=id", "=input_sha256", "=output_sha256", "=request_id")
    search_help_text = "A job id, an input or output sha256, or a request id"
    date_hierarchy = "created_at"
    actions = ("retry_failed", "republish_dead_letters", "cancel_jobs")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "service",
                    "recipe",
                    "preset",
                    "pool",
                    "status",
                    "progress",
                    "parameters_json",
                    "request_id",
                )
            },
        ),
        ("Callback", {"fields": ("callback_url", "callback_deliveries")}),
        ("Owner", {"fields": ("owner_key", "owner_subject", "owner_session", "owner_user")}),
        (
            "Input",
            {
                "fields": (
                    "input_preview",
                    "input_filename",
                    "input_format",
                    "input_width",
                    "input_height",
                    "input_frames",
                    "input_bytes",
                    "input_sha256",
                )
            },
        ),
        (
            "Output",
            {
                "fields": (
                    "output_preview",
                    "output_format",
                    "output_content_type",
                    "output_width",
                    "output_height",
                    "output_frames",
                    "frames_note",
                    "output_bytes",
                    "output_sha256",
                    "report_json",
                )
            },
        ),
        (
            "Timings",
            {
                "fields": (
                    "created_at",
                    "enqueued_at",
                    "started_at",
                    "finished_at",
                    "queue_wait",
                    "processing_time",
                    "total_time",
                    "metrics_json",
                )
            },
        ),
        (
            "Attempts and errors",
            {
                "fields": (
                    "attempts",
                    "worker_id",
                    "lease_expires_at",
                    "error_code",
                    "error_message",
                    "files_removed_at",
                )
            },
        ),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    # --- Permissions and the change form -------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs come from uploads

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Job | None = None,
    ) -> HttpResponse:
        # Everything is read-only: offer the history and delete, not a Save that saves nothing.
        context.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, tuple[Callable[..., str], str, str] | None]:
        found = super().get_actions(request)
        delete = found.get("delete_selected")
        if delete is not None:
            function, name, _ = delete
            found["delete_selected"] = (function, name, "Delete the selected jobs and their files")
        return found

    # --- Columns and fields ----------------------------------------------------------------

    @admin.display(description="job", ordering="id")
    def short_id(self, job: Job) -> str:
        return str(job.id)[:8]

    @admin.display(description="service", ordering="service")
    def service_and_steps(self, job: Job) -> str:
        """The service, or a recipe's services in order (resize → sharpen), after its preset's name."""
        steps, _ = recipe_parts(job)
        services = " → ".join(str(step.get("service")) for step in steps)
        return f"{job.preset}: {services}" if job.preset else services

    @admin.display(description="recipe")
    def recipe(self, job: Job) -> str:
        """The steps in order, each with the parameters given a value, then the one encode's options."""
        steps, output = recipe_parts(job)
        items = format_html_join(
            "",
            "<li><strong>{}</strong> {}</li>",
            ((step.get("service"), described(step.get("service"), step.get("parameters"))) for step in steps),
        )
        encode = described(None, output) or "the defaults"
        return format_html(
            "<ol style='margin:0;padding-left:1.5em'>{}</ol>then encoded with {}", items, encode
        )

    @admin.display(description="owner")
    def owner(self, job: Job) -> str:
        return owner_label(job)

    @admin.display(description="input")
    def input_thumbnail(self, job: Job) -> str:
        return thumbnail_tag(job, "input", size=64)

    @admin.display(description="output")
    def output_thumbnail(self, job: Job) -> str:
        return thumbnail_tag(job, "output", size=64)

    @admin.display(description="image")
    def input_preview(self, job: Job) -> str:
        return thumbnail_tag(job, "input", size=THUMBNAIL_EDGE)

    @admin.display(description="image")
    def output_preview(self, job: Job) -> str:
        return thumbnail_tag(job, "output", size=THUMBNAIL_EDGE)

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="wait / processing", ordering="processing_ms")
    def timings(self, job: Job) -> str:
        return f"{milliseconds(job.queue_wait_ms)} / {milliseconds(job.processing_ms)}"

    @admin.display(description="queue wait")
    def queue_wait(self, job: Job) -> str:
        return milliseconds(job.queue_wait_ms)

    @admin.display(description="processing", ordering="processing_ms")
    def processing_time(self, job: Job) -> str:
        return milliseconds(job.processing_ms)

    @admin.display(description="total")
    def total_time(self, job: Job) -> str:
        return milliseconds(job.total_ms)

    @admin.display(description="parameters")
    def parameters_json(self, job: Job) -> str:
        return pretty_json(job.parameters)

    @admin.display(description="report")
    def report_json(self, job: Job) -> str:
        return pretty_json(job.report) if job.report is not None else "–"

    @admin.display(description="metrics")
    def metrics_json(self, job: Job) -> str:
        return pretty_json(job.metrics)

    @admin.display(description="deliveries")
    def callback_deliveries(self, job: Job) -> str:
        """Each callback of the job's ends: its state, attempts and last answer, linked to its page."""
        found = list(job.callback_deliveries.order_by("created_at"))
        if not found:
            return "–"
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:processing_callbackdelivery_change", args=[delivery.pk]),
                    delivery.event,
                    delivery.get_state_display(),
                    delivery.attempts,
                    delivery.last_status or "–",
                    delivery.last_error or "–",
                    delivery.next_attempt_at or "–",
                )
                for delivery in found
            ),
        )
        return format_html(
            "<table><tr><th>event</th><th>state</th><th>attempts</th><th>last answer</th><th>last error</th>"
            "<th>next attempt</th></tr>{}</table>",
            rows,
        )

    # --- Thumbnails ---------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        thumbnail = self.admin_site.admin_view(self.thumbnail_view)
        return [
            path("<uuid:job_id>/thumbnail/<str:side>/", thumbnail, name="processing_job_thumbnail"),
            *super().get_urls(),
        ]

    def thumbnail_view(self, request: HttpRequest, job_id: UUID, side: str) -> HttpResponse:
        """The job's input or output thumbnail, for staff only: stored, or made on this first view; a
        placeholder when it can't be made."""
        job = self.get_queryset(request).filter(pk=job_id).first()
        if job is None or not self.has_view_permission(request, job) or not has_thumbnail(job, side):
            raise Http404("no such image")
        return thumbnail_response(file_key(job, side))

    # --- Actions ----------------------------------------------------------------------

    @admin.action(description="Retry the selected failed jobs", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self.requeue(request, queryset.filter(status=Job.FAILED), "retried")

    @admin.action(
        description="Re-publish dead-lettered jobs (processing_error, worker_lost, time_limit_exceeded)",
        permissions=["change"],
    )
    def republish_dead_letters(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        dead = queryset.filter(status=Job.FAILED, error_code__in=DEAD_LETTER_CODES)
        skipped = queryset.count() - dead.count()
        self.requeue(request, dead, "re-published")
        if skipped:
            self.message_user(
                request,
                f"Left {skipped} selected job(s) alone: they did not die in the queue. "
                "Use Retry for other failures.",
                messages.WARNING,
            )
        self.message_user(
            request,
            "The old messages stay in the dead-letter queue: one delivered again later finds its job "
            "taken or finished and does nothing.",
            messages.INFO,
        )

    @admin.action(description="Cancel the selected queued or running jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = 0
        for job in queryset.filter(status__in=[Job.QUEUED, Job.PROCESSING]):
            if lifecycle.cancel(job.id):
                self.log_change(request, job, "Cancelled.")
                cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)

    def requeue(self, request: HttpRequest, failed: QuerySet[Job], verb: str) -> None:
        """Queue each failed job again with a clean slate, then publish it."""
        requeued, unpublished, gone = 0, 0, 0
        for job in failed:
            if job.files_removed_at:
                gone += 1  # its input was cleaned up: nothing to process
                continue
            error_code = job.error_code
            try:
                if not publishing.requeue(job):
                    continue  # it changed meanwhile (another admin's click), or ran out of attempts
            except BrokerUnavailable as exc:
                logger.warning("requeued, but not published: %s", exc.cause, extra={"job_id": str(job.id)})
                unpublished += 1
            self.log_change(request, job, f"{verb.capitalize()} after failing with {error_code}.")
            requeued += 1
        self.message_user(request, f"{verb.capitalize()} {requeued} job(s).", messages.SUCCESS)
        if unpublished:
            self.message_user(
                request,
                f"The broker did not confirm {unpublished} of them; they are queued and will be "
                "re-published automatically (requeue_stale).",
                messages.WARNING,
            )
        if gone:
            self.message_user(
                request, f"{gone} job(s) could not be retried: their files were removed.", messages.WARNING
            )

    # --- Deleting, with the files -------------------------------------------------------

    # The files go with the row (processing.storage.delete_files_of_deleted_job).
    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        stop_if_running(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            stop_if_running(job)
        super().delete_queryset(request, queryset)


@admin.register(Asset)
class AssetAdmin(AssetModelAdmin):
    """Every owner's overlay images: see them and whose they are, and delete them with their files.
    They come only from their owners' uploads (POST /api/v1/assets) and never change."""

    list_display = ("short_id", "name", "owner", "thumbnail", "size", "bytes", "created_at")
    list_display_links = ("short_id",)
    list_filter = (OwnerFilter, "source_format", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "=sha256", "name")
    search_help_text = "An asset id, an upload's sha256, or a name"
    list_per_page = 50
    fields = (
        "id",
        "preview",
        "name",
        "owner_key",
        "owner_subject",
        "owner_session",
        "owner_user",
        "source_format",
        "width",
        "height",
        "bytes",
        "sha256",
        "created_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # assets come from their owners' uploads

    def has_change_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        return False  # and never change: a job that names one gets the same pixels every time

    @admin.display(description="asset", ordering="id")
    def short_id(self, asset: Asset) -> str:
        return str(asset.id)[:8]

    @admin.display(description="owner")
    def owner(self, asset: Asset) -> str:
        return owner_label(asset)

    @admin.display(description="size")
    def size(self, asset: Asset) -> str:
        return f"{asset.width} × {asset.height}"

    @admin.display(description="image")
    def thumbnail(self, asset: Asset) -> str:
        return asset_thumbnail_tag(asset, size=64)

    @admin.display(description="image")
    def preview(self, asset: Asset) -> str:
        return asset_thumbnail_tag(asset, size=THUMBNAIL_EDGE)

    def get_urls(self) -> list[URLPattern]:
        thumbnail = self.admin_site.admin_view(self.thumbnail_view)
        return [
            path("<uuid:asset_id>/thumbnail/", thumbnail, name="processing_asset_thumbnail"),
            *super().get_urls(),
        ]

    def thumbnail_view(self, request: HttpRequest, asset_id: UUID) -> HttpResponse:
        asset = self.get_queryset(request).filter(pk=asset_id).first()
        if asset is None or not self.has_view_permission(request, asset):
            raise Http404("no such image")
        return thumbnail_response(asset.key)


# --- Presets -------------------------------------------------------------------------------

if TYPE_CHECKING:
    PresetModelAdmin = admin.ModelAdmin[Preset]
    PresetModelForm = forms.ModelForm[Preset]
else:
    PresetModelAdmin = admin.ModelAdmin
    PresetModelForm = forms.ModelForm


class PresetForm(PresetModelForm):
    """A preset is saved only as a recipe a client could send: a refusal names the step."""

    class Meta:
        model = Preset
        fields = ("name", "description", "steps", "output")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("output") is None:
            cleaned["output"] = {}  # left empty: the defaults
        if "steps" in cleaned:
            output = cleaned["output"]
            try:
                recipes.from_steps(
                    cleaned["steps"],
                    output if isinstance(output, dict) else {"output": output},
                    settings.MAX_STEPS,
                )
            except (DomainError, ValidationError) as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Preset)
class PresetAdmin(PresetModelAdmin):
    form = PresetForm
    list_display = ("name", "description", "services", "replaces_setting", "updated_at")
    search_fields = ("name", "description")

    @admin.display(description="steps")
    def services(self, preset: Preset) -> str:
        steps = preset.steps if isinstance(preset.steps, list) else []
        return " → ".join(str(step.get("service")) for step in steps if isinstance(step, dict))

    @admin.display(description="replaces the one in PRESETS", boolean=True)
    def replaces_setting(self, preset: Preset) -> bool:
        return preset.name in settings.PRESETS

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The presets declared in settings, each a link to a preset of its name filled in with it, to edit.
        declared = format_html_join(
            ", ",
            '<a href="{}?name={}">{}</a>',
            ((reverse("admin:processing_preset_add"), name, name) for name in settings.PRESETS),
        )
        subtitle = format_html(
            "Declared in the PRESETS setting: {}. A preset made here replaces the one of the same name.",
            declared or "none",
        )
        return super().changelist_view(request, {**(extra_context or {}), "subtitle": subtitle})

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """A new preset named after one in PRESETS starts as that one, to be edited."""
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        name = str(initial.get("name", ""))
        if name in settings.PRESETS:
            definition = presets.Definition.of_setting(name, settings.PRESETS[name])
            initial.update(
                description=definition.description, steps=definition.steps, output=definition.output
            )
        return initial


# --- Callbacks -------------------------------------------------------------------------------


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(DeliveryModelAdmin):
    """Every callback: where it went, how many attempts, the last answer or error, the next attempt.
    Read-only; a delivery given up on may be delivered again (same event id, same body)."""

    list_display = (
        "short_id",
        "job_link",
        "event",
        "url",
        "state",
        "attempts",
        "last_status",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("state", "event", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("job",)
    list_per_page = 50
    search_fields = ("=id", "=job__id", "url")
    search_help_text = "An event id, a job id, or part of a URL"
    date_hierarchy = "created_at"
    actions = ("deliver_again",)
    fields = (
        "id",
        "job_link",
        "event",
        "url",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "created_at",
        "last_attempt_at",
        "next_attempt_at",
        "finished_at",
        "payload_json",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # callbacks come from jobs that end

    def has_change_permission(self, request: HttpRequest, obj: CallbackDelivery | None = None) -> bool:
        return False  # a record of what happened; "deliver again" is an action

    @admin.display(description="event id", ordering="id")
    def short_id(self, delivery: CallbackDelivery) -> str:
        return str(delivery.id)[:8]

    @admin.display(description="job", ordering="job")
    def job_link(self, delivery: CallbackDelivery) -> str:
        url = reverse("admin:processing_job_change", args=[delivery.job_id])
        return format_html('<a href="{}">{}</a>', url, str(delivery.job_id)[:8])

    @admin.display(description="body")
    def payload_json(self, delivery: CallbackDelivery) -> str:
        try:
            return pretty_json(json.loads(delivery.payload))
        except ValueError:
            return delivery.payload

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        """Whoever may change deliveries (the form itself changes nothing)."""
        return request.user.has_perm("processing.change_callbackdelivery")

    @admin.action(description="Deliver the selected given-up callbacks again", permissions=["redeliver"])
    def deliver_again(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> None:
        again = sum(deliveries.redeliver(delivery) for delivery in queryset)
        self.message_user(request, f"{again} callback(s) will be delivered again.", messages.SUCCESS)
        if again < queryset.count():
            self.message_user(
                request, "Only given-up callbacks are delivered again: the others were left.", messages.INFO
            )


class ApiKeyForm(ApiKeyModelForm):
    class Meta:
        model = ApiKey
        fields = ("callback_url",)

    def clean_callback_url(self) -> str:
        """Checked as a submission's callback_url is; and only for a key with a secret to sign with, or
        every submission of the key would be refused (no_callback_secret)."""
        url: str = self.cleaned_data["callback_url"].strip()
        if not url:
            return url
        try:
            targets.check(url, addresses.networks(settings.CALLBACK_ALLOWED_NETWORKS))
        except CallbackRefused as exc:
            raise forms.ValidationError(exc.message) from None
        if not signing.has_secret(key_owner(self.instance)):
            raise forms.ValidationError(
                "This key has no callback secret yet: issue one first (the action "
                "“Issue a new callback secret”), then set its default callback URL."
            )
        return url


@admin.register(ApiKey)
class ApiKeyAdmin(ApiKeyModelAdmin):
    """API keys (made by manage.py create_api_key): their default callback URL, and a new callback
    secret, shown once, by an action. The key itself is never shown: only its hash is stored."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "is_staff",
        "created_at",
        "last_used_at",
        "revoked_at",
        "callback_url",
        "callback_secret",
    )
    list_filter = ("is_staff", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "=prefix")
    actions = ("issue_callback_secrets",)
    fields = (
        "name",
        "prefix",
        "is_staff",
        "created_at",
        "last_used_at",
        "revoked_at",
        "callback_url",
        "callback_secret",
    )
    readonly_fields = (
        "name",
        "prefix",
        "is_staff",
        "created_at",
        "last_used_at",
        "revoked_at",
        "callback_secret",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a key is shown once, by manage.py create_api_key

    @admin.display(description="callback secret")
    def callback_secret(self, key: ApiKey) -> str:
        record = CallbackSecret.objects.filter(owner=key_owner(key)).first()
        return "–" if record is None else f"issued {timezone.localtime(record.rotated_at):%Y-%m-%d %H:%M}"

    @admin.action(description="Issue a new callback secret (shown once)", permissions=["change"])
    def issue_callback_secrets(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> TemplateResponse:
        issued = []
        for key in queryset.order_by("name"):
            issued.append((str(key), signing.issue(key_owner(key))))
            self.log_change(request, key, "Issued a new callback secret.")
        context = {
            **self.admin_site.each_context(request),
            "title": "New callback secrets",
            "issued": issued,
            "back": reverse("admin:gateway_apikey_changelist"),
        }
        # The admin's pages are never cached (no-store): this one holds secrets.
        return TemplateResponse(request, "admin/callback_secrets.html", context)


def key_owner(key: ApiKey) -> str:
    """The owner identity of an API key's jobs, which its callback secret is kept under."""
    return Owner(key=str(key.pk)).identity


# --- Helpers ---------------------------------------------------------------------------------


def owner_label(row: Job | Asset) -> str:
    """Whose a job or an asset is, for people."""
    if row.owner_key:
        return f"API key #{row.owner_key}"
    if row.owner_subject:
        return f"token {row.owner_subject}"
    if row.owner_user_id:
        return f"user {row.owner_user}"
    if row.owner_session:
        return f"session {row.owner_session[:8]}"
    return "anonymous"


def thumbnail_response(key: str) -> HttpResponse:
    """The thumbnail of the stored file at `key`: stored, or made on this first view; a placeholder
    when it can't be made."""
    try:
        data: bytes | None = storage.read(storage.thumbnail_key(key))
    except OSError:  # not made yet: made now, within its bound, and kept for the next view
        data = admin_thumbnails.make_later(key, settings.MAX_IMAGE_PIXELS, settings.MAX_JPEG_SCANS)
    if data is None:  # see PLACEHOLDER
        response = HttpResponse(PLACEHOLDER, content_type="image/svg+xml")
        response["Cache-Control"] = "private, no-cache"
        return response
    response = HttpResponse(data, content_type=admin_thumbnails.CONTENT_TYPE)
    response["Cache-Control"] = "private, max-age=3600"
    return response


def asset_thumbnail_tag(asset: Asset, size: int) -> str:
    url = reverse("admin:processing_asset_thumbnail", args=[asset.pk])
    return image_tag(url, f"Asset {str(asset.pk)[:8]}", size)


def image_tag(url: str, alt: str, size: int) -> str:
    return format_html(
        '<img src="{}" alt="{}" width="{}" height="{}" loading="lazy" '
        'style="object-fit:contain;background:#eee">',
        url,
        alt,
        size,
        size,
    )


def recipe_parts(job: Job) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A job's steps ({"service", "parameters"} each) and its output options, from what it stored: a
    job of one service is a recipe of one step."""
    parameters = job.parameters if isinstance(job.parameters, dict) else {}
    output = {name: parameters[name] for name in OUTPUT_FIELDS if name in parameters}
    if job.service == STEPS_SERVICE:
        steps = [step for step in parameters.get("steps", []) if isinstance(step, dict)]
        return steps, output
    own = {name: value for name, value in parameters.items() if name not in OUTPUT_FIELDS}
    return [{"service": job.service, "parameters": own}], output


def described(service: Any, parameters: Any) -> str:
    """Parameters as a client would write them, those given a value, in the order the service's
    parameters are listed (stored JSON keeps none): width=800, fit=inside."""
    if not isinstance(parameters, dict):
        return ""
    operation = OPERATIONS.get(service) if isinstance(service, str) else None
    listed = [*(operation.params.model_fields if operation else ()), *OUTPUT_FIELDS]
    given = sorted(
        parameters.items(), key=lambda item: listed.index(item[0]) if item[0] in listed else len(listed)
    )
    return ", ".join(f"{name}={json_value(value)}" for name, value in given if value is not None)


def file_key(job: Job, side: str) -> str:
    return job.input_key if side == "input" else job.output_key


def has_thumbnail(job: Job, side: str) -> bool:
    """Whether the file has a thumbnail to show: a completed job's, while its files are kept."""
    if side not in IMAGE_SIDES or job.files_removed_at or job.status != Job.COMPLETED:
        return False
    return bool(file_key(job, side))


def thumbnail_tag(job: Job, side: str, size: int) -> str:
    if not has_thumbnail(job, side):
        # A running job's thumbnails come when it completes; other jobs have none to show.
        return "pending" if not job.is_finished else "–"
    url = reverse("admin:processing_job_thumbnail", args=[job.pk, side])
    return image_tag(url, f"{side.capitalize()} of job {str(job.pk)[:8]}", size)


def stop_if_running(job: Job) -> None:
    # A worker still on it stops at its next checkpoint; one that finishes first finds the row gone
    # and deletes the output it wrote (processing.worker.actors).
    if not job.is_finished:
        lifecycle.cancel(job.id)


def milliseconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def pretty_json(value: Any) -> str:
    return format_html("<pre style='margin:0;white-space:pre-wrap'>{}</pre>", json.dumps(value, indent=2))
