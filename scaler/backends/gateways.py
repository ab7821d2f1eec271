"""Gateway processes (uvicorn) on local ports, behind the scaler's own nginx.

A new gateway joins nginx's upstream list once it answers /health/live, so nginx never sends a
request to a process still importing Django. A gateway leaves the list before it is stopped,
and uvicorn's graceful shutdown finishes the requests it already has. A gateway that exits on
its own is taken out of the list and replaced.
"""

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from django.conf import settings

from project.serving import UVICORN_FLAGS
from scaler.backends.nginx import DOWNLOAD_PREFIX, Nginx
from scaler.backends.processes import describe_exit, free_port, spawn, utc_now, wait_all
from scaler.readings import answers, probe_ms

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 30
STARTUP_TIMEOUT = 60


@dataclass
class Gateway:
    port: int
    process: subprocess.Popen
    host: str = "127.0.0.1"
    in_service: bool = False  # listed in nginx's upstreams
    started_at: str = field(default_factory=utc_now)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def describe(self) -> dict:
        return {
            "pid": self.process.pid,
            "port": self.port,
            "in_service": self.in_service,
            "started_at": self.started_at,
        }


def gateway_command(host: str, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "project.asgi:application"),
        *("--host", host, "--port", str(port), "--no-access-log"),
        *("--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_SECONDS)),
        # X-Forwarded-For only from our nginx and TRUSTED_PROXIES; uvicorn's default trusts any local client.
        *("--forwarded-allow-ips", ",".join(trusted_proxies(host))),
        *UVICORN_FLAGS,
    ]


def gateway_environment(host: str) -> dict[str, str]:
    """The gateway's Django counts X-Forwarded-For from the same proxies as its uvicorn, and leaves
    sending a result on local disk to the nginx in front of it."""
    return {"TRUSTED_PROXIES": ",".join(trusted_proxies(host)), "DOWNLOAD_ACCEL_PREFIX": DOWNLOAD_PREFIX}


def trusted_proxies(host: str) -> list[str]:
    """Our own nginx, which runs on this machine and so reaches a gateway from the gateway's own
    address, and the operator's TRUSTED_PROXIES (a proxy in front of that nginx). Without nginx's
    address, every client would be counted as nginx: one rate limit for all."""
    return [host, *(proxy for proxy in settings.TRUSTED_PROXIES if proxy != host)]


class LocalGateways:
    """Keeps `target()` gateway processes running behind nginx."""

    name = "gateways"

    def __init__(self, nginx: Nginx, port_start: int = 0, host: str = "127.0.0.1"):
        self.nginx = nginx
        self.port_start = port_start  # ports port_start, port_start + 1, ...; 0: any free port
        self.host = host
        self.gateways: list[Gateway] = []
        self.stopping: list[Gateway] = []
        self.nginx_restarts = 0

    # --- the pool ---------------------------------------------------------------------
    def target(self) -> int:
        return len(self.gateways)

    def start(self, count: int) -> None:
        """Start `count` gateways and nginx in front of them, once they answer."""
        self.scale_to(count)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(gateway.in_service for gateway in self.gateways):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateways did not answer /health/live within {STARTUP_TIMEOUT}s")
            self._replace_crashed()
            self._admit_live_gateways()
            time.sleep(0.1)
        self.nginx.start(self.upstreams())

    def scale_to(self, target: int) -> None:
        while len(self.gateways) < target:
            self.gateways.append(self._start())
        removed = []
        while len(self.gateways) > target:
            removed.append(self.gateways.pop())
        if removed:
            self._update_nginx()  # out of the list first, so nginx sends them nothing new
            for gateway in removed:
                gateway.process.send_signal(signal.SIGTERM)
                self.stopping.append(gateway)
                logger.info("stopping gateway on port %d", gateway.port)

    def supervise(self) -> int:
        """Admit gateways that came up, replace crashed ones, restart nginx if it died."""
        self.stopping = [g for g in self.stopping if g.process.poll() is None]
        crashed = self._replace_crashed()
        admitted = self._admit_live_gateways()
        if self.nginx.process is not None and not self.nginx.is_running():
            logger.warning("nginx exited unexpectedly: restarting it")
            self.nginx.start(self.upstreams())
            self.nginx_restarts += 1
        elif crashed or admitted:
            self._update_nginx()
        return len(crashed)

    def describe(self) -> dict:
        return {
            "target": len(self.gateways),
            "running": sum(1 for g in self.gateways if g.process.poll() is None),
            "in_service": sum(1 for g in self.gateways if g.in_service),
            "stopping": len(self.stopping),
            "nginx": {
                "url": self.nginx.url,
                "running": self.nginx.is_running(),
                "restarts": self.nginx_restarts,
            },
            "processes": [gateway.describe() for gateway in self.gateways],
        }

    def shutdown(self) -> None:
        self.nginx.stop()
        self.scale_to(0)
        for process in wait_all([g.process for g in self.stopping], GRACEFUL_SHUTDOWN_SECONDS + 5):
            process.kill()
            process.wait()

    # --- the load score's health-check part --------------------------------------------
    def response_ms(self) -> float:
        """The mean time the gateways in service take to answer /health/ready."""
        timings = [probe_ms(f"{g.url}/health/ready") for g in self.gateways if g.in_service]
        return sum(timings) / len(timings) if timings else 0.0

    # --- inside ---------------------------------------------------------------------------
    def upstreams(self) -> list[str]:
        serving = [g.address for g in self.gateways if g.in_service]
        # nginx refuses an empty upstream; while none answers, list those coming up: nginx
        # answers 503 in JSON for what fails meanwhile.
        return serving or [g.address for g in self.gateways]

    def _update_nginx(self) -> None:
        if self.nginx.is_running():
            self.nginx.set_upstreams(self.upstreams())

    def _admit_live_gateways(self) -> bool:
        """Put gateways that answer /health/live in service; True when any was."""
        admitted = False
        for gateway in self.gateways:
            if (
                not gateway.in_service
                and gateway.process.poll() is None
                and answers(f"{gateway.url}/health/live")
            ):
                gateway.in_service = admitted = True
                logger.info("gateway on port %d is live", gateway.port)
        return admitted

    def _replace_crashed(self) -> list[Gateway]:
        """Start a gateway (on another port) for each that exited: a crash, or, as it starts, a port
        another process took between the check that it was free and the gateway's bind."""
        crashed = [gateway for gateway in self.gateways if gateway.process.poll() is not None]
        for gateway in crashed:
            logger.warning(
                "gateway on port %d exited unexpectedly (%s): replacing it",
                gateway.port,
                describe_exit(gateway.process.returncode),
            )
            self.gateways[self.gateways.index(gateway)] = self._start()
        return crashed

    def _start(self) -> Gateway:
        port = self._next_port()
        process = spawn(gateway_command(self.host, port), env=gateway_environment(self.host))
        logger.info("started gateway %d on port %d", process.pid, port)
        return Gateway(port=port, process=process, host=self.host)

    def _next_port(self) -> int:
        if not self.port_start:
            return free_port(self.host)
        taken = {g.port for g in [*self.gateways, *self.stopping]}
        return next(port for port in range(self.port_start, self.port_start + 1000) if port not in taken)
