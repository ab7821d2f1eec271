from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def forget_api_keys(**_: Any) -> None:
    """A key saved or deleted in this process (the admin, manage.py) is read anew here at once."""
    from gateway.auth.callers import forget_keys  # on use: a worker process never loads the callers

    forget_keys()


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        from gateway.models import ApiKey

        post_save.connect(forget_api_keys, sender=ApiKey, dispatch_uid="forget_api_keys_saved")
        post_delete.connect(forget_api_keys, sender=ApiKey, dispatch_uid="forget_api_keys_deleted")
