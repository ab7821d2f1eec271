from typing import Any

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from gateway.models import ApiKey

        # A key revoked or deleted here is refused at once by this process (see KEY_MEMORY_SECONDS).
        post_save.connect(forget_api_keys, sender=ApiKey, dispatch_uid="forget-api-keys")
        post_delete.connect(forget_api_keys, sender=ApiKey, dispatch_uid="forget-api-keys")


def forget_api_keys(**signal: Any) -> None:
    # Imported when a key changes, not at start: a worker process sets Django up without the API.
    from gateway.auth.callers import forget_keys

    forget_keys()
