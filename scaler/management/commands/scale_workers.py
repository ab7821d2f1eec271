import json
import logging
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from scaler import observe
from scaler.autoscaler import Autoscaler
from scaler.backends.gateways import LocalGateways
from scaler.backends.kubernetes import KubernetesApi, KubernetesDeployment, KubernetesError, pod_namespace
from scaler.backends.local import LocalWorkers, ObservedWorkers
from scaler.backends.nginx import Nginx, NginxError
from scaler.backends.processes import SUPERVISE_EVERY, stop_on_signals
from scaler.observability import serve_health, serve_metrics
from scaler.policy import GatewayPolicy, WorkerPolicy
from scaler.status import Status


class Command(BaseCommand):
    help = (
        "Keep the number of worker processes (and, with --gateways, gateway processes behind nginx) "
        "matched to the load: queue depth and jobs in flight, checked every SCALE_CHECK_INTERVAL. "
        "Every setting has a flag; the defaults come from the environment (project/settings.py)."
    )

    def add_arguments(self, parser):
        s = settings
        workers = parser.add_argument_group("workers")
        workers.add_argument("--interval", type=float, default=s.SCALE_CHECK_INTERVAL, metavar="SECONDS")
        workers.add_argument("--min-instances", type=int, default=s.MIN_INSTANCES)
        workers.add_argument("--max-instances", type=int, default=s.MAX_INSTANCES)
        workers.add_argument("--scale-up-threshold", type=float, default=s.SCALE_UP_THRESHOLD)
        workers.add_argument("--scale-down-threshold", type=float, default=s.SCALE_DOWN_THRESHOLD)
        workers.add_argument("--cooldown", type=float, default=s.SERVICES_COOLDOWN_PERIOD, metavar="SECONDS")
        workers.add_argument("--threads", type=int, default=s.WORKER_THREADS, help="per worker process")
        workers.add_argument("--no-workers", action="store_true", help="leave the workers alone")

        gateways = parser.add_argument_group("gateways (local backend)")
        gateways.add_argument("--gateways", action="store_true", help="also run gateways behind nginx")
        gateways.add_argument("--gateway-min", type=int, default=s.GATEWAY_MIN_INSTANCES)
        gateways.add_argument("--gateway-max", type=int, default=s.GATEWAY_MAX_INSTANCES)
        gateways.add_argument("--gateway-up", type=float, default=s.GATEWAY_LOAD_THRESHOLD_UP)
        gateways.add_argument("--gateway-down", type=float, default=s.GATEWAY_LOAD_THRESHOLD_DOWN)
        gateways.add_argument("--gateway-cooldown", type=float, default=s.GATEWAY_COOLDOWN_PERIOD)
        gateways.add_argument("--gateway-sustain", type=float, default=s.GATEWAY_SUSTAIN_PERIOD)
        gateways.add_argument("--gateway-port-start", type=int, default=s.GATEWAY_PORT_START)
        gateways.add_argument("--nginx-listen", default=s.NGINX_LISTEN, metavar="HOST:PORT")
        gateways.add_argument("--nginx-prefix", type=Path, default=Path(s.VAR_DIR) / "nginx")
        gateways.add_argument("--nginx-binary", default=s.NGINX_BINARY)

        parser.add_argument("--backend", choices=("local", "kubernetes"), default=s.SCALER_BACKEND)
        parser.add_argument("--namespace", default=s.KUBERNETES_NAMESPACE, help="kubernetes backend")
        parser.add_argument("--worker-deployment", default=s.KUBERNETES_WORKER_DEPLOYMENT)
        parser.add_argument(
            "--host", default=s.SCALER_HOST, help="where the health and metrics endpoints listen"
        )
        parser.add_argument("--health-port", type=int, default=s.SCALER_HEALTH_PORT, help="0: none")
        parser.add_argument("--metrics-port", type=int, default=s.SCALER_METRICS_PORT, help="0: none")
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
        if options["gateways"] and options["backend"] != "local":
            raise CommandError("--gateways runs gateway processes locally: it needs --backend local")
        status = Status(options["backend"], options["interval"])
        if options["once"]:
            self.check_once(status, worker_policy, options)
            return
        autoscaler = Autoscaler(status, worker_policy=worker_policy, gateway_policy=gateway_policy)
        servers = []
        stop = stop_on_signals()
        try:
            autoscaler.workers = None if options["no_workers"] else worker_pool(options)
            if options["gateways"]:
                # Known to the autoscaler before they start, so that a failed start still stops them.
                autoscaler.gateways = local_gateways(options)
                autoscaler.gateways.start(gateway_policy.min_instances)
            servers = serve(status, options)
            run(autoscaler, options["interval"], stop)
        except (KubernetesError, NginxError, TimeoutError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            autoscaler.shutdown()  # drains the workers: may take as long as their longest job
            for server in servers:
                server.shutdown()

    def check_once(self, status: Status, worker_policy: WorkerPolicy, options) -> None:
        if options["no_workers"] or options["gateways"]:
            raise CommandError("--once checks the workers only")
        readings = observe.read()
        if options["backend"] == "local":
            workers = ObservedWorkers(readings.consumers)
        else:
            workers = worker_pool(options)
        autoscaler = Autoscaler(status, workers=workers, worker_policy=worker_policy, read=lambda: readings)
        autoscaler.check()
        autoscaler.supervise()
        self.stdout.write(json.dumps(status.snapshot(), indent=2))


def policies(options) -> tuple[WorkerPolicy, GatewayPolicy]:
    workers = WorkerPolicy(
        min_instances=options["min_instances"],
        max_instances=options["max_instances"],
        scale_up_threshold=options["scale_up_threshold"],
        scale_down_threshold=options["scale_down_threshold"],
        cooldown=options["cooldown"],
    )
    gateways = GatewayPolicy(
        min_instances=options["gateway_min"],
        max_instances=options["gateway_max"],
        load_threshold_up=options["gateway_up"],
        load_threshold_down=options["gateway_down"],
        cooldown=options["gateway_cooldown"],
        sustain=options["gateway_sustain"],
    )
    problems = [
        (
            workers.min_instances < 0 or workers.min_instances > workers.max_instances,
            "0 <= min <= max instances",
        ),
        (
            workers.scale_down_threshold >= workers.scale_up_threshold,
            "scale-down threshold < scale-up threshold",
        ),
        (
            gateways.min_instances < 1 or gateways.min_instances > gateways.max_instances,
            "1 <= gateway min <= max",
        ),
        (gateways.load_threshold_down >= gateways.load_threshold_up, "gateway down threshold < up threshold"),
        (options["interval"] <= 0 or options["threads"] < 1, "a positive interval and at least one thread"),
    ]
    for wrong, rule in problems:
        if wrong:
            raise CommandError(f"inconsistent settings: need {rule}")
    return workers, gateways


def worker_pool(options):
    if options["backend"] == "local":
        return LocalWorkers(threads=options["threads"])
    namespace = options["namespace"] or pod_namespace()
    return KubernetesDeployment(KubernetesApi.in_cluster(), namespace, options["worker_deployment"])


def local_gateways(options) -> LocalGateways:
    nginx = Nginx(
        prefix=options["nginx_prefix"],
        listen=options["nginx_listen"],
        max_body_bytes=settings.MAX_REQUEST_BYTES,
        binary=options["nginx_binary"],
    )
    return LocalGateways(nginx, port_start=options["gateway_port_start"])


def serve(status: Status, options) -> list:
    servers = []
    if options["health_port"]:
        servers.append(serve_health(status, options["host"], options["health_port"]))
    if options["metrics_port"]:
        servers.append(serve_metrics(status, options["host"], options["metrics_port"]))
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
