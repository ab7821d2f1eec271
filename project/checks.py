"""System checks (stable ids) for the configuration Darkroom depends on; `manage.py check [--deploy]`."""

from django.conf import settings
from django.core import checks

DEFAULT_SECRET_KEY_PREFIX = "embedded-default-insecure-key"


@checks.register("darkroom")
def check_limits(app_configs=None, **kwargs):
    if settings.MAX_REQUEST_BYTES < settings.MAX_UPLOAD_BYTES:
        return [
            checks.Error(
                "MAX_REQUEST_BYTES is smaller than MAX_UPLOAD_BYTES: uploads near it would be refused.",
                hint="Leave MAX_REQUEST_BYTES unset, or make it MAX_UPLOAD_BYTES plus 1 MB.",
                id="darkroom.E001",
            )
        ]
    return []


@checks.register("darkroom")
def check_object_storage(app_configs=None, **kwargs):
    if settings.AWS_STORAGE_BUCKET_NAME and not settings.STORAGES["default"]["OPTIONS"].get("endpoint_url"):
        return [
            checks.Info(
                "AWS_STORAGE_BUCKET_NAME is set without AWS_S3_ENDPOINT_URL: files go to AWS S3 itself.",
                hint="For MinIO, set AWS_S3_ENDPOINT_URL (e.g. http://minio:9000).",
                id="darkroom.I001",
            )
        ]
    return []


@checks.register("darkroom", deploy=True)
def check_deployment(app_configs=None, **kwargs):
    problems = []
    if settings.SECRET_KEY.startswith(DEFAULT_SECRET_KEY_PREFIX):
        problems.append(
            checks.Warning("SECRET_KEY is the embedded default.", hint="Set SECRET_KEY.", id="darkroom.W001")
        )
    if settings.EMBEDDED_WORKERS and settings.BROKER_URL:
        problems.append(
            checks.Warning(
                "EMBEDDED_WORKERS is on with RabbitMQ: every gateway process also consumes jobs.",
                hint="Run workers with `manage.py rundramatiq` and leave EMBEDDED_WORKERS unset.",
                id="darkroom.W002",
            )
        )
    return problems
