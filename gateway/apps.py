from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"

    def ready(self) -> None:
        from django.core import checks

        from gateway.live import events
        from processing.signals import job_changed

        checks.register(events.check_channel_layer)
        # Every process that changes jobs (server, workers) tells WebSocket subscribers.
        job_changed.connect(events.on_job_changed, dispatch_uid="gateway.live.events.on_job_changed")
