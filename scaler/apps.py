from django.apps import AppConfig


class ScalerConfig(AppConfig):
    name = "scaler"
    verbose_name = "Autoscaler"

    def ready(self):
        from scaler import checks  # noqa: F401  (registers the scaler's system checks)
