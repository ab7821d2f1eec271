from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from gateway.auth.callers import forget_keys
        from gateway.models import ApiKey

        # A key revoked or deleted here is refused at once by this process (see KEY_MEMORY_SECONDS).
        post_save.connect(forget_keys, sender=ApiKey, dispatch_uid="forget-api-keys")
        post_delete.connect(forget_keys, sender=ApiKey, dispatch_uid="forget-api-keys")
