"""PostgreSQL, RabbitMQ and Redis servers of a test's own, for the tests that stop and start them.

The machine's servers are shared by every test running beside it: a test that restarts one of
them would break the others. These run on free ports from a temporary folder and go away with the
test. The test points the stacks at them through the environment (`env`): the URLs a stack reads,
and RABBITMQ_NODENAME, which `rabbitmqctl` (vhosts, stop_app, start_app) follows, and PGDATA,
which the fault suite's PostgreSQL restart follows (bench.chaos).
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.ports import unused_ports
from scaler.backends.processes import port_open

START_SECONDS = 120  # a busy two-core machine boots RabbitMQ in 10-20 s


def as_user(user: str, command: list[str]) -> list[str]:
    """`command` as the service's own user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", user, "--", *command] if os.geteuid() == 0 else command


def own_folder(path: Path, user: str) -> Path:
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(path, user, user)
    return path


def wait_for_port(port: int, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) before listening on {port}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {START_SECONDS}s")


class PrivatePostgres:
    def __init__(self, folder: Path):
        self.data = folder / "data"
        self.port = unused_ports(1)[0]
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        own_folder(self.data, "postgres")
        initdb = ["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"]
        subprocess.run(as_user("postgres", initdb), check=True, capture_output=True, timeout=120)
        settings = {
            "port": self.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.data}'",
            "fsync": "off",
            "shared_buffers": "'32MB'",
        }
        with open(self.data / "postgresql.conf", "a") as conf:  # so that a plain `pg_ctl start` serves here
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.pg_ctl("start", "-w", "-l", str(self.data / "server.log"))

    def pg_ctl(self, *args: str) -> None:
        command = as_user("postgres", ["pg_ctl", "-D", str(self.data), "-s", *args])
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.pg_ctl("stop", "-m", "immediate")


class PrivateRabbitMQ:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port, self.dist_port = unused_ports(2)
        self.node = f"darkroom-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        folder = self.folder
        return {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "pid"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(folder / "feature_flags"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(folder / "plugins"),
            "RABBITMQ_QUORUM_DIR": str(folder / "quorum"),
            "RABBITMQ_STREAM_DIR": str(folder / "stream"),
        }

    def start(self) -> None:
        own_folder(self.folder, "rabbitmq")
        # The machine's own rabbitmq.conf names its listener: this node's names this port instead.
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            for name in ("rabbitmq.conf", "enabled_plugins"):
                shutil.chown(self.folder / name, "rabbitmq", "rabbitmq")
        log = open(self.folder / "server.out", "ab")  # noqa: SIM115 (the server keeps it)
        env = {**os.environ, **self.env()}
        self.process = subprocess.Popen(
            ["rabbitmq-server"], env=env, stdout=log, stderr=log, start_new_session=True
        )
        wait_for_port(self.port, "a private RabbitMQ", self.process)

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node, "stop"], capture_output=True, timeout=120, check=False
        )
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
            if self.process.poll() is None:
                os.killpg(self.process.pid, 9)
                self.process.wait()


def start_redis(host: str, port: int, folder: Path | None = None) -> None:
    """A Redis without persistence, daemonized: stopped by its address (stop_redis), not by a pid,
    so that whoever restarts it need not be whoever started it (the fault suite's restart)."""
    command = ["redis-server", "--daemonize", "yes", "--bind", host, "--port", str(port)]
    options = ["--save", "", "--appendonly", "no", *(["--dir", str(folder)] if folder else [])]
    subprocess.run([*command, *options], check=True, capture_output=True, timeout=30)


def stop_redis(host: str, port: int) -> None:
    command = ["redis-cli", "-h", host, "-p", str(port), "shutdown", "nosave"]
    subprocess.run(command, capture_output=True, timeout=30, check=False)


class PrivateRedis:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = unused_ports(1)[0]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True)
        start_redis("127.0.0.1", self.port, self.folder)
        wait_for_port(self.port, "a private Redis")

    def stop(self) -> None:
        stop_redis("127.0.0.1", self.port)


class PrivateServices:
    """`with PrivateServices("rabbitmq") as services:` then run stacks under `services.env`."""

    def __init__(self, *names: str):
        # Its own temporary folder, which the service users may enter (pytest's is its user's only).
        self.folder = Path(tempfile.mkdtemp(prefix="darkroom-services-"))
        self.folder.chmod(0o755)
        kinds = {"postgres": PrivatePostgres, "rabbitmq": PrivateRabbitMQ, "redis": PrivateRedis}
        self.servers = {name: kinds[name](self.folder / name) for name in names}

    @property
    def env(self) -> dict[str, str]:
        env = {}
        if postgres := self.servers.get("postgres"):
            env |= {"DATABASE_URL": postgres.url, "PGDATA": str(postgres.data)}
        if rabbitmq := self.servers.get("rabbitmq"):
            env |= {"BROKER_URL": rabbitmq.url, "RABBITMQ_NODENAME": rabbitmq.node}
        if redis := self.servers.get("redis"):
            env |= {"REDIS_URL": redis.url}
        return env

    def __enter__(self):
        try:
            for server in self.servers.values():
                server.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info):
        for server in self.servers.values():
            server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
