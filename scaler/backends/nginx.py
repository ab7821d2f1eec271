"""A private nginx in front of the gateway processes: its own prefix, ports and pid file.

The configuration is deploy/nginx/darkroom.conf (shared with docker-compose), wrapped in a small
main file that keeps every path nginx writes inside the prefix, so it never touches a system-wide
nginx. Changing the gateways rewrites the upstreams file and reloads nginx: requests in flight
finish on the old worker processes while new ones already use the new list.
"""

import getpass
import logging
import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from string import Template

from django.conf import settings

from project.serving import DESCRIPTORS_FOR_ITSELF
from scaler.backends.processes import port_open, spawn

logger = logging.getLogger(__name__)

TEMPLATE = Path(settings.BASE_DIR) / "deploy" / "nginx" / "darkroom.conf"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# darkroom.conf's internal location of the media folder: the gateways behind this nginx answer a
# download with "X-Accel-Redirect: DOWNLOAD_PREFIX<key>", and nginx sends the file.
DOWNLOAD_PREFIX = "/_darkroom/media/"


class NginxError(Exception):
    """nginx refused its configuration or did not start."""


def upstream_lines(servers: list[str]) -> str:
    # max_fails=1: one refused connection takes a dead gateway out for fail_timeout; the
    # scaler replaces it meanwhile and rewrites this list.
    return "".join(f"server {server} max_fails=1 fail_timeout=5s;\n" for server in servers)


def main_config(prefix: Path) -> str:
    temp_paths = "".join(f"    {name}_temp_path {prefix / name};\n" for name in TEMP_PATHS)
    # As root, nginx would run its workers as `nobody`, who can't read a private prefix.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    # A WebSocket through nginx holds two connections, the client's and the gateway's: the worker
    # takes as many as its descriptors allow (`make scale --gateways` raises them to the hard limit).
    # One worker: least_conn counts requests in flight per worker, and the gateways are few.
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    connections = max(1024, descriptors - DESCRIPTORS_FOR_ITSELF)
    return (
        f"{user}daemon off;\n"
        "worker_processes 1;\n"
        f"worker_rlimit_nofile {descriptors};\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        f"events {{ worker_connections {connections}; }}\n"
        "http {\n"
        f"{temp_paths}"
        f"    include {prefix / 'darkroom.conf'};\n"
        "}\n"
    )


class Nginx:
    def __init__(
        self, prefix: Path, listen: str, max_body_bytes: int, media_root: Path, binary: str = "nginx"
    ):
        self.prefix = Path(prefix).resolve()
        self.listen = listen
        self.max_body_bytes = max_body_bytes
        self.media_root = Path(media_root).resolve()  # the gateways' MEDIA_ROOT: nginx sends results from it
        self.binary = binary
        self.process: subprocess.Popen | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return (host or "127.0.0.1"), int(port)

    @property
    def url(self) -> str:
        host, port = self.host_port
        return f"http://{host}:{port}"

    @property
    def config_file(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def upstreams_file(self) -> Path:
        return self.prefix / "upstreams.conf"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def write_config(self, servers: list[str]) -> None:
        for name in TEMP_PATHS:
            (self.prefix / name).mkdir(parents=True, exist_ok=True)
        site = Template(TEMPLATE.read_text()).safe_substitute(
            LISTEN=self.listen,
            CLIENT_MAX_BODY_SIZE=str(self.max_body_bytes),
            UPSTREAMS=str(self.upstreams_file),
            ACCESS_LOG=str(self.access_log),
            MEDIA_ROOT=str(self.media_root),
        )
        (self.prefix / "darkroom.conf").write_text(site)
        self.config_file.write_text(main_config(self.prefix))
        self.write_upstreams(servers)

    def write_upstreams(self, servers: list[str]) -> None:
        # Write aside, then rename: a reload never reads a half-written file.
        pending = self.upstreams_file.with_suffix(".tmp")
        pending.write_text(upstream_lines(servers))
        pending.replace(self.upstreams_file)

    def start(self, servers: list[str], timeout: float = 10) -> None:
        self.write_config(servers)
        self.check_config()
        self.process = spawn(self.command())
        deadline = time.monotonic() + timeout
        while not port_open(*self.host_port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise NginxError(f"nginx did not start; see {self.prefix / 'error.log'}")
            time.sleep(0.05)
        logger.info("nginx listening on %s in front of %s", self.listen, ", ".join(servers))

    def set_upstreams(self, servers: list[str]) -> None:
        self.write_upstreams(servers)
        self.check_config()
        self.run("-s", "reload")
        logger.info("nginx reloaded: gateways %s", ", ".join(servers))

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        process = self.process
        if process is None or not self.is_running():
            return
        process.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def command(self, *args: str) -> list[str]:
        # -e: nginx opens its error log before reading the configuration; keep even that private.
        prefix = str(self.prefix)
        return [self.binary, "-p", prefix, "-c", str(self.config_file), "-e", f"{prefix}/error.log", *args]

    def check_config(self) -> None:
        self.run("-t", "-q")

    def run(self, *args: str) -> None:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise NginxError(f"nginx {' '.join(args)} failed: {done.stderr.strip()}")
