"""docs/settings.md: every setting declared in project/config.py, by group, and the checks between them."""

from django.core.management.base import BaseCommand, CommandError

from gateway.http.body_limits import body_limits
from project import config
from project.config import RULES, SETTINGS, Computed, Setting

REFERENCE = config.BASE_DIR / "docs" / "settings.md"

GROUPS = (
    config.SERVICES,
    config.STORAGE,
    config.SECURITY,
    config.LIMITS,
    config.JOBS,
    config.CALLBACKS,
    config.SCALER_WORKERS,
    config.SCALER_GATEWAYS,
    config.SCALER_PROCESS,
    config.PROCESSES,
)


class Command(BaseCommand):
    help = (
        "Write docs/settings.md, the reference of every environment variable, from its declaration in "
        "project/config.py. With --check, only say whether the file is current."
    )
    requires_system_checks = []  # it documents the settings: a wrong value must not stop it

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="fail when docs/settings.md is not current")

    def handle(self, check: bool, **options):
        current = reference()
        if check:
            if not REFERENCE.exists() or REFERENCE.read_text() != current:
                raise CommandError(f"{REFERENCE.name} is not current: run manage.py settings_reference")
            return
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(current)
        self.stdout.write(f"wrote {REFERENCE.relative_to(config.BASE_DIR)}")


def reference() -> str:
    """docs/settings.md: every setting by group, as project/config.py declares it."""
    lines = [
        "# Settings",
        "",
        "Every environment variable Darkroom reads. Generated from `project/config.py` by",
        "`python manage.py settings_reference`: edit the table there, not this file (a test checks that",
        "this file is current). A bad value stops the start with a message naming the variable; the",
        "relations between settings are system checks (`manage.py check`).",
        "",
        "With no variable set, Darkroom runs embedded: SQLite and files under `var/`, workers inside the",
        "server process. `DATABASE_URL`, `BROKER_URL`, `REDIS_URL` and `AWS_STORAGE_BUCKET_NAME` switch each",
        "part to its service.",
    ]
    for group in GROUPS:
        lines += [
            "",
            f"## {group}",
            "",
            "| variable | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        lines += [reference_row(setting) for setting in SETTINGS if setting.group == group]
    lines += ["", "## Checks between settings", "", "| check | rule | hint |", "| --- | --- | --- |"]
    lines += [f"| `{rule.id}` | {rule.describe(code)} | {rule.hint} |" for rule in RULES]
    default_batch = body_limits(config.defaults()).batch
    lines += [
        "",
        "## Request bodies",
        "",
        "One rule (`gateway.http.body_limits`) sets every body limit: a one-file request may carry",
        "`MAX_REQUEST_BYTES`; a batch (`POST /api/v1/jobs/batch`, the upload form) `MAX_BATCH_FILES`",
        "uploads of `MAX_UPLOAD_BYTES` with the same allowance for framing and form fields. nginx's",
        "`client_max_body_size` is the batch size (the scaler's nginx, and docker-compose.yml's value for",
        f"the defaults: {default_batch}); the gateway answers 413 past each request's own.",
    ]
    return "\n".join(lines) + "\n"


def code(text: str) -> str:
    return f"`{text}`"


def reference_row(setting: Setting) -> str:
    names = " or ".join(code(variable) for variable in setting.variables)
    if setting.variables != (setting.name,):
        names += f" (setting `{setting.name}`)"
    default = setting.default_text()
    default = code(default) if default and not isinstance(setting.default, Computed) else default or "empty"
    about = setting.description
    if setting.minimum is not None:
        about += f" At least {setting.minimum:g}."
    if setting.maximum is not None:
        about += f" At most {setting.maximum:g}."
    if setting.flag:
        about += f" Flag: `{setting.flag}`."
    return f"| {names} | {setting.type.label} | {default} | {about.replace('|', '&#124;')} |"
