"""Workers as a Kubernetes Deployment: the scaler sets its replicas through the scale subresource.

Plain HTTPS to the API server with the pod's service-account token (deploy/k8s/scaler.yaml gives
it get/patch on deployments/scale and nothing more), so no client library is needed. Kubernetes
replaces crashed pods itself, and a pod it stops gets SIGTERM: Dramatiq drains it as it does
locally, within the pod's terminationGracePeriodSeconds.
"""

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from processing.jobs.pools import DEFAULT_POOL
from project import config

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesError(Exception):
    """The API server refused a call or could not be reached."""


class KubernetesApi:
    """The two calls the scaler makes: read and set a Deployment's replicas."""

    def __init__(self, base_url: str, token_file: Path | None, ssl_context: ssl.SSLContext | None = None):
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.ssl_context = ssl_context
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl_context)
        )

    @classmethod
    def in_cluster(cls) -> "KubernetesApi":
        # Set by Kubernetes in every pod; read when asked, not with Django's settings.
        host, port = config.read("KUBERNETES_SERVICE_HOST"), config.read("KUBERNETES_SERVICE_PORT")
        if not host:
            raise KubernetesError("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set")
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        return cls(f"https://{host}:{port}", SERVICE_ACCOUNT / "token", context)

    def get_replicas(self, namespace: str, deployment: str) -> int:
        return self._call("GET", scale_path(namespace, deployment))["spec"].get("replicas", 0)

    def set_replicas(self, namespace: str, deployment: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        self._call("PATCH", scale_path(namespace, deployment), body, "application/merge-patch+json")

    def _call(self, method: str, path: str, body: dict | None = None, content_type: str = "") -> dict:
        request = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Accept": "application/json",
                **({"Content-Type": content_type} if content_type else {}),
            },
        )
        if self.token_file:
            # Read each time: projected service-account tokens are rotated while the pod runs.
            request.add_header("Authorization", f"Bearer {self.token_file.read_text().strip()}")
        try:
            with self.opener.open(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise KubernetesError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None
        except OSError as exc:
            raise KubernetesError(f"{method} {path}: {exc}") from exc


def scale_path(namespace: str, deployment: str) -> str:
    return f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(deployment)}/scale"


def pod_namespace() -> str:
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip()
    except OSError:
        return "default"


class KubernetesDeployment:
    """A Deployment's replicas as the scaler's pool, named after the worker pool its pods consume."""

    def __init__(self, api: KubernetesApi, namespace: str, deployment: str, name: str = DEFAULT_POOL):
        self.api = api
        self.namespace = namespace
        self.deployment = deployment
        self.name = name
        self.replicas: int | None = None  # as last read or set

    def target(self) -> int:
        # The Deployment is the truth: someone may have scaled it by hand since the last check.
        self.replicas = self.api.get_replicas(self.namespace, self.deployment)
        return self.replicas

    def scale_to(self, target: int) -> None:
        self.api.set_replicas(self.namespace, self.deployment, target)
        self.replicas = target

    def supervise(self) -> int:
        return 0  # the Deployment's controller replaces pods that die

    def describe(self) -> dict:
        return {"target": self.replicas, "namespace": self.namespace, "deployment": self.deployment}

    def shutdown(self) -> None:
        pass  # the pods outlive the scaler; its replacement picks up from the Deployment
