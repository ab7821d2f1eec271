import json
import logging
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from gateway.http.body_limits import body_limits
from project import config
from project.serving import raise_open_files_limit
from scaler import readings
from scaler.autoscaler import Autoscaler
from scaler.backends.gateways import LocalGateways
from scaler.backends.kubernetes import KubernetesApi, KubernetesDeployment, KubernetesError, pod_namespace
from scaler.backends.local import LocalWorkers, ObservedWorkers
from scaler.backends.nginx import Nginx, NginxError
from scaler.backends.processes import SUPERVISE_EVERY, stop_on_signals
from scaler.checks import SCALER_GROUPS
from scaler.endpoints import serve_health, serve_metrics
from scaler.flags import add_setting_flag, add_setting_flags, chosen, refuse_contradictions
from scaler.policy import GatewayPolicy, WorkerPolicy
from scaler.status import Status


class Command(BaseCommand):
    help = (
        "Keep the number of worker processes (and, with --gateways, gateway processes behind nginx) "
        "matched to the load: queue depth and jobs in flight, checked every SCALE_CHECK_INTERVAL. "
        "Every setting has a flag; the defaults come from the environment (docs/settings.md)."
    )

    def add_arguments(self, parser):
        # Every setting of the scaler's groups is a flag (scaler/flags.py); these few are flags only.
        add_setting_flags(parser, settings, SCALER_GROUPS)
        add_setting_flag(parser, config.BY_NAME["WORKER_POOL"], settings.WORKER_POOL)
        parser.add_argument("--no-workers", action="store_true", help="leave the workers alone")
        parser.add_argument("--gateways", action="store_true", help="also run gateways behind nginx")
        parser.add_argument(
            "--nginx-prefix",
            type=Path,
            default=Path(settings.VAR_DIR) / "nginx",
            help="the folder of the scaler's nginx: its configuration, logs and pid file",
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="one check, printed as JSON. Applied with the kubernetes backend; the local backend "
            "only reports (its processes live as long as the scaler), counting RabbitMQ's consumers "
            "as the current workers",
        )

    def handle(self, **options):
        # Reading the depth of a queue no worker has declared yet is a refused passive declare,
        # which pika logs as a warning at every check: expected here, so keep it out of the log.
        logging.getLogger("pika.channel").setLevel(logging.ERROR)
        worker_policy, gateway_policy = policies(options)
        if options["gateways"] and options["SCALER_BACKEND"] != "local":
            raise CommandError("--gateways runs gateway processes locally: it needs --backend local")
        if options["gateways"]:
            raise_open_files_limit()  # the gateways and nginx it starts hold a socket per client
        if options["gateways"] and options["WORKER_POOL"] == LocalGateways.name:
            raise CommandError(f"--pool {LocalGateways.name} is the gateways' name in the health and metrics")
        status = Status(options["SCALER_BACKEND"], options["SCALE_CHECK_INTERVAL"])
        if options["once"]:
            self.check_once(status, worker_policy, options)
            return
        pool = options["WORKER_POOL"]
        autoscaler = Autoscaler(
            status,
            worker_policy=worker_policy,
            gateway_policy=gateway_policy,
            read=lambda: readings.read(pool),
        )
        servers = []
        stop = stop_on_signals()
        try:
            autoscaler.workers = None if options["no_workers"] else worker_pool(options)
            if options["gateways"]:
                # Known to the autoscaler before they start, so that a failed start still stops them.
                autoscaler.gateways = local_gateways(options)
                autoscaler.gateways.start(gateway_policy.min_instances)
            servers = serve(status, options)
            run(autoscaler, options["SCALE_CHECK_INTERVAL"], stop)
        except (KubernetesError, NginxError, TimeoutError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            autoscaler.shutdown()  # drains the workers: may take as long as their longest job
            for server in servers:
                server.shutdown()

    def check_once(self, status: Status, worker_policy: WorkerPolicy, options) -> None:
        if options["no_workers"] or options["gateways"]:
            raise CommandError("--once checks the workers only")
        current = readings.read(options["WORKER_POOL"])
        if options["SCALER_BACKEND"] == "local":
            workers = ObservedWorkers(current.consumers, options["WORKER_POOL"])
        else:
            workers = worker_pool(options)
        autoscaler = Autoscaler(status, workers=workers, worker_policy=worker_policy, read=lambda: current)
        autoscaler.check()
        autoscaler.supervise()
        self.stdout.write(json.dumps(status.snapshot(), indent=2))


def policies(options) -> tuple[WorkerPolicy, GatewayPolicy]:
    """The policies the flags and the settings give, refused when they contradict each other."""
    values = chosen(options, SCALER_GROUPS)
    refuse_contradictions(values, SCALER_GROUPS)
    return WorkerPolicy.from_settings(values), GatewayPolicy.from_settings(values)


def worker_pool(options):
    if options["SCALER_BACKEND"] == "local":
        return LocalWorkers(threads=options["WORKER_THREADS"], pool=options["WORKER_POOL"])
    namespace = options["KUBERNETES_NAMESPACE"] or pod_namespace()
    return KubernetesDeployment(
        KubernetesApi.in_cluster(), namespace, options["KUBERNETES_WORKER_DEPLOYMENT"], options["WORKER_POOL"]
    )


def local_gateways(options) -> LocalGateways:
    nginx = Nginx(
        prefix=options["nginx_prefix"],
        listen=options["NGINX_LISTEN"],
        # Batches are the largest bodies: nginx takes them, and the gateway refuses each request
        # past its own limit (gateway.http.body_limits).
        max_body_bytes=body_limits(settings).batch,
        media_root=settings.MEDIA_ROOT,
        binary=options["NGINX_BINARY"],
    )
    return LocalGateways(nginx, port_start=options["GATEWAY_PORT_START"])


def serve(status: Status, options) -> list:
    servers = []
    if options["SCALER_HEALTH_PORT"]:
        servers.append(serve_health(status, options["SCALER_HOST"], options["SCALER_HEALTH_PORT"]))
    if options["SCALER_METRICS_PORT"]:
        servers.append(serve_metrics(status, options["SCALER_HOST"], options["SCALER_METRICS_PORT"]))
    return servers


def run(autoscaler: Autoscaler, interval: float, stop: threading.Event) -> None:
    """Supervise every second and check every `interval`, until `stop` is set."""
    next_check = time.monotonic()
    while not stop.is_set():
        autoscaler.supervise()
        if time.monotonic() >= next_check:
            # A long-running process: let Django drop database connections that died or aged meanwhile.
            close_old_connections()
            autoscaler.check()
            next_check = time.monotonic() + interval
        stop.wait(min(SUPERVISE_EVERY, max(0.05, next_check - time.monotonic())))
