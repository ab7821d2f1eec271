from django.apps import AppConfig


class ProcessingConfig(AppConfig):
    name = "processing"
    verbose_name = "Image processing"

    def ready(self):
        from processing import metrics  # noqa: F401  (connects the metrics to job events)
