"""System checks (stable ids) for the configuration Darkroom depends on; `manage.py check [--deploy]`.

Every management command runs them; the ASGI and WSGI entry points run `refuse_unsafe_start`, so
that a server refuses to start on a configuration that must not serve.
"""

from typing import Any, cast

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from processing.imaging.operations import OPERATIONS
from processing.imaging.recipes import STEPS_SERVICE
from processing.jobs import presets
from project import config


def rule_errors(groups: tuple[str, ...]) -> list[checks.CheckMessage]:
    """An error (or a warning) for each rule between settings of `groups` (project/config.py, RULES)
    that they break."""
    values = {name: getattr(settings, name) for rule in config.RULES for name in rule.names}
    return [
        (checks.Warning if rule.warning else checks.Error)(
            rule.describe(lambda name: f"{name}={values[name]}"), hint=rule.hint, id=rule.id
        )
        for rule in config.broken_rules(values, groups)
    ]


@checks.register("darkroom")
def check_limits(app_configs=None, **kwargs):
    return rule_errors((config.LIMITS,))


@checks.register("darkroom")
def check_security(app_configs=None, **kwargs):
    return rule_errors((config.SECURITY,))


@checks.register("darkroom")
def check_traffic_split(app_configs=None, **kwargs):
    services = [*OPERATIONS, STEPS_SERVICE]  # a job of several steps is service "steps"
    unknown = sorted(set(settings.TRAFFIC_SPLIT) - set(services))
    if not unknown:
        return []
    return [
        checks.Error(
            f"TRAFFIC_SPLIT names {', '.join(unknown)}, which no service is called.",
            hint=f"Services: {', '.join(services)}.",
            id="darkroom.E004",
        )
    ]


@checks.register("darkroom")
def check_presets(app_configs=None, **kwargs):
    return [
        checks.Error(
            f"PRESETS: {problem}",
            hint='Each preset is {"steps": [{"service": ..., "parameters": {...}}, ...]} and the output '
            "options; see docs/recipes.md.",
            id="darkroom.E007",
        )
        for problem in presets.problems_of_setting(settings.PRESETS)
    ]


@checks.register("darkroom")
def check_object_storage(app_configs=None, **kwargs):
    options = cast(dict[str, Any], settings.STORAGES["default"]).get("OPTIONS", {})
    if settings.AWS_STORAGE_BUCKET_NAME and not options.get("endpoint_url"):
        return [
            checks.Info(
                "AWS_STORAGE_BUCKET_NAME is set without AWS_S3_ENDPOINT_URL: files go to AWS S3 itself.",
                hint="For MinIO, set AWS_S3_ENDPOINT_URL (e.g. http://minio:9000).",
                id="darkroom.I001",
            )
        ]
    return []


def refuse_unsafe_start() -> None:
    """Raise ImproperlyConfigured when a check of ours finds an error: a server must not start."""
    errors = [problem for problem in check_security() + check_limits() if problem.is_serious()]
    if errors:
        raise ImproperlyConfigured("; ".join(f"{error.id}: {error.msg} {error.hint}" for error in errors))


@checks.register("darkroom", deploy=True)
def check_deployment(app_configs=None, **kwargs):
    problems = []
    if config.is_placeholder(str(settings.SECRET_KEY)) and not settings.DEPLOYMENT:  # else darkroom.E005
        problems.append(
            checks.Warning(
                "SECRET_KEY is the embedded default, or a placeholder.",
                hint="Set SECRET_KEY.",
                id="darkroom.W001",
            )
        )
    if settings.EMBEDDED_WORKERS and settings.BROKER_URL:
        problems.append(
            checks.Warning(
                "EMBEDDED_WORKERS is on with RabbitMQ: every gateway process also consumes jobs.",
                hint="Run workers with `manage.py run_workers` and leave EMBEDDED_WORKERS unset.",
                id="darkroom.W002",
            )
        )
    return problems
