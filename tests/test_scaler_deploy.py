"""The deployment files (docker-compose.yml, deploy/nginx, deploy/k8s) parse and agree with each
other and with the application: service names, ports, credentials, labels, selectors, ConfigMap
and Secret keys, and the environment variables the settings actually read."""

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from django.conf import settings

from gateway.http.body_limits import body_limits
from processing.worker.actors import process_job
from project import config
from tests.services import IN_CI
from tests.test_settings import check_errors

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "darkroom.conf"

# Read by something other than Darkroom: Django itself and Dramatiq (set by the scaler for its workers).
READ_ELSEWHERE = {"DJANGO_SETTINGS_MODULE", "dramatiq_queue_prefetch", "dramatiq_delay_queue_prefetch"}


def settings_variables() -> set[str]:
    """Every variable declared in project/config.py, and the few read by others."""
    return {variable for setting in config.SETTINGS for variable in setting.variables} | READ_ELSEWHERE


# --- docker-compose.yml ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def app_services(services: dict) -> dict:
    return {name: service for name, service in services.items() if service.get("image") == "darkroom:latest"}


def test_compose_runs_every_part_of_the_stack(services):
    for name in (
        "nginx",
        "gateway",
        "scaler",
        "requeue",
        "migrate",
        "postgres",
        "rabbitmq",
        "redis",
        "minio",
    ):
        assert name in services, name
    assert "management" in services["rabbitmq"]["image"]
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert "8000:8000" in services["nginx"]["ports"]
    assert "ports" not in services["gateway"], "gateways are reached through nginx only"


def test_compose_can_run_a_canary_pool_that_scales_on_its_own_queue(services):
    canary = services["scaler-canary"]
    assert canary["profiles"] == ["canary"]  # not started unless asked for
    command = canary["command"]
    assert command[:4] == ["python", "manage.py", "scale_workers", "--backend"]
    assert command[command.index("--pool") + 1] == "${CANARY_POOL:-canary}"
    assert "TRAFFIC_SPLIT" in services["gateway"]["environment"]  # the gateways choose each job's pool


def test_compose_dependencies_name_services_that_exist(services):
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_every_app_container_is_built_from_the_dockerfile_and_reads_only_real_settings(services):
    known = settings_variables()
    for name, service in app_services(services).items():
        assert service["build"] == "."
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"
    assert (ROOT / "Dockerfile").exists()


def test_the_app_reaches_each_backing_service_by_its_compose_name_and_credentials(services):
    env = services["gateway"]["environment"]
    database, broker = urlparse(env["DATABASE_URL"]), urlparse(env["BROKER_URL"])
    postgres = services["postgres"]["environment"]
    assert database.hostname == "postgres"
    assert (database.username, database.password, database.path[1:]) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    rabbitmq = services["rabbitmq"]["environment"]
    assert broker.hostname == "rabbitmq"
    assert (broker.username, broker.password) == (
        rabbitmq["RABBITMQ_DEFAULT_USER"],
        rabbitmq["RABBITMQ_DEFAULT_PASS"],
    )
    assert urlparse(env["REDIS_URL"]).hostname == "redis"
    minio = services["minio"]["environment"]
    assert urlparse(env["AWS_S3_ENDPOINT_URL"]).hostname == "minio"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )


def test_minio_init_creates_the_bucket_the_app_uses(services):
    init = services["minio-init"]
    assert init["environment"]["BUCKET"] == services["gateway"]["environment"]["AWS_STORAGE_BUCKET_NAME"]
    assert "mc mb" in init["entrypoint"][-1] and init["depends_on"] == ["minio"]
    for name in app_services(services):
        if name != "migrate":
            assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_nginx_in_compose_fills_every_template_variable_and_fronts_the_gateways(services):
    nginx = services["nginx"]
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", NGINX_TEMPLATE.read_text()))
    assert placeholders == {"LISTEN", "CLIENT_MAX_BODY_SIZE", "UPSTREAMS", "ACCESS_LOG", "MEDIA_ROOT"}
    assert placeholders <= set(nginx["environment"])
    # Compose turns $$ into $: the image's envsubst then touches these names and no others.
    only = re.fullmatch(r"\^\((.*)\)\$\$", nginx["environment"]["NGINX_ENVSUBST_FILTER"])
    assert set(only.group(1).split("|")) == placeholders

    mounts = dict(volume.rsplit(":", 2)[:2] for volume in nginx["volumes"])
    assert mounts["./deploy/nginx/darkroom.conf"] == "/etc/nginx/templates/darkroom.conf.template"
    upstreams_file = next(
        local for local, inside in mounts.items() if inside == nginx["environment"]["UPSTREAMS"]
    )
    upstreams = (ROOT / upstreams_file).read_text()
    assert re.search(r"^server gateway:8000 ", upstreams, re.MULTILINE)
    assert nginx["environment"]["LISTEN"] == "8000"


def test_the_scalers_nginx_fills_every_template_variable(tmp_path):
    from scaler.backends.nginx import Nginx

    nginx = Nginx(tmp_path / "nginx", "127.0.0.1:8000", 1000, media_root=tmp_path / "media")
    nginx.write_config(["127.0.0.1:8001"])
    site = (tmp_path / "nginx" / "darkroom.conf").read_text()
    assert not re.findall(r"\$\{[A-Z_]+\}", site)
    assert f'alias "{tmp_path / "media"}/";' in site


def test_nginx_sends_local_results_from_an_internal_location_at_the_gateways_prefix():
    """The prefix the scaler gives its gateways is the location nginx sends files from, and no client
    reaches that location but through a gateway's answer."""
    from scaler.backends.gateways import gateway_environment
    from scaler.backends.nginx import DOWNLOAD_PREFIX

    prefix = gateway_environment("127.0.0.1")["DOWNLOAD_ACCEL_PREFIX"]
    assert prefix == DOWNLOAD_PREFIX and config.load({"DOWNLOAD_ACCEL_PREFIX": prefix}).DOWNLOAD_ACCEL_PREFIX
    location = re.search(
        rf"location {re.escape(prefix)} {{(.*?)\n    }}", NGINX_TEMPLATE.read_text(), re.DOTALL
    )
    assert location, f"no location {prefix} in {NGINX_TEMPLATE.name}"
    directives = [line.strip() for line in location.group(1).splitlines()]
    assert "internal;" in directives and 'alias "${MEDIA_ROOT}/";' in directives
    assert "sendfile on;" in directives


def test_nginx_takes_batches_as_large_as_the_gateway_does(services):
    """Compose leaves the body limits at their defaults: nginx's cap is the rule's batch size for them."""
    body_limit = int(services["nginx"]["environment"]["CLIENT_MAX_BODY_SIZE"])
    limit_settings = ("MAX_UPLOAD_BYTES", "MAX_REQUEST_BYTES", "MAX_BATCH_FILES")
    assert not any(
        name in service["environment"]
        for service in app_services(services).values()
        for name in limit_settings
    )
    assert body_limit == body_limits(config.defaults()).batch


def test_the_gateways_trust_x_forwarded_for_from_nginx_alone(services):
    nginx_address = services["nginx"]["networks"]["default"]["ipv4_address"]
    for name, service in app_services(services).items():
        assert service["environment"]["TRUSTED_PROXIES"] == nginx_address, name


def test_the_scaler_publishes_its_health_and_metrics_ports(services):
    scaler = services["scaler"]
    env = scaler["environment"]
    assert scaler["command"][:3] == ["python", "manage.py", "scale_workers"]
    assert f"127.0.0.1:{env['SCALER_HEALTH_PORT']}:8082" in scaler["ports"]
    assert f"127.0.0.1:{env['SCALER_METRICS_PORT']}:9090" in scaler["ports"]
    assert env["SCALER_HEALTH_PORT"] == "8082"
    assert env["SCALER_HOST"] == "0.0.0.0" and scaler["init"] is True
    assert int(scaler["stop_grace_period"].rstrip("s")) > settings.JOB_TIME_LIMIT_SECONDS


def test_compose_publishes_nothing_but_nginx_beyond_this_machine(services):
    """MinIO (its root credentials), RabbitMQ's management (darkroom/darkroom) and the scaler's
    endpoints are in this file for anyone to read: their ports stay on the host's loopback."""
    published = {
        (name, port)
        for name, service in services.items()
        for port in service.get("ports", ())
        if name != "nginx"
    }
    assert published and all(port.startswith("127.0.0.1:") for _, port in published), published


def compose_command(tmp_path: Path) -> list[str]:
    """`docker compose config` (Compose v2) where installed, else Debian's docker-compose (v1), which
    predates the top-level `name:` key and so checks a copy without it."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"]
    if shutil.which("docker-compose"):
        copy = tmp_path / "docker-compose.yml"
        copy.write_text(
            re.sub(r"^name: .*\n", "", (ROOT / "docker-compose.yml").read_text(), flags=re.MULTILINE)
        )
        return ["docker-compose", "-f", str(copy), "--project-directory", str(ROOT), "config", "-q"]
    missing = "no Compose client installed (docker compose, or Debian's docker-compose)"
    pytest.fail(missing) if IN_CI else pytest.skip(missing)


def test_docker_compose_accepts_the_file(tmp_path):
    done = subprocess.run(compose_command(tmp_path), capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr


# --- Dockerfile -------------------------------------------------------------------------------
def test_the_image_is_multi_stage_non_root_healthchecked_with_static_files_collected(manifests):
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 2
    build, runtime = dockerfile.split(f"AS {stages[-1]}")
    assert "collectstatic" in build and "COPY --from=build /app /app" in runtime
    user = re.search(r"useradd .*--uid (\d+)", runtime).group(1)
    assert re.search(r"^USER darkroom$", runtime, re.MULTILINE)
    assert "HEALTHCHECK" in runtime and "/health/live" in runtime
    assert "EXPOSE 8000" in runtime
    for name, spec in pod_specs(manifests):
        assert spec["securityContext"]["runAsUser"] == int(user), (
            f"{name} runs as another user than the image's"
        )


# --- Kubernetes -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    documents = []
    for path in sorted(set(K8S.glob("*.yaml")) - {K8S / "kustomization.yaml"}):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def find(manifests: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(manifests: list[dict], kind: str, name: str) -> dict:
    (found,) = find(manifests, kind, name)
    return found


def pod_specs(manifests: list[dict]) -> list[tuple[str, dict]]:
    return [
        (m["metadata"]["name"], m["spec"]["template"]["spec"])
        for m in manifests
        if m["kind"] in ("Deployment", "Job")
    ]


def test_the_kustomization_lists_existing_files_and_one_worker_scaler():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource
    # KEDA or the scaler sets darkroom-worker's replicas, never both.
    assert ("keda.yaml" in kustomization["resources"]) != ("scaler.yaml" in kustomization["resources"])


def test_every_deployment_selects_its_own_pods(manifests):
    for deployment in find(manifests, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_gateway_service_and_hpa_point_at_the_gateway_deployment(manifests):
    gateway = one(manifests, "Deployment", "darkroom-gateway")
    service = one(manifests, "Service", "darkroom-gateway")
    assert service["spec"]["selector"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    hpa = one(manifests, "HorizontalPodAutoscaler", "darkroom-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "darkroom-gateway",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)  # the local gateways
    assert gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], (
        "HPA needs it"
    )


def test_keda_scales_the_worker_deployment_on_the_actors_queue(manifests):
    scaled = one(manifests, "ScaledObject", "darkroom-worker")
    assert find(manifests, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == process_job.queue_name
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert float(trigger["metadata"]["value"]) == settings.SCALE_UP_THRESHOLD
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 5)

    auth = one(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret = one(manifests, "Secret", "darkroom-secrets")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "darkroom-secrets" and ref["key"] in secret["stringData"]


def test_every_pod_refers_to_config_and_secrets_that_exist(manifests):
    config = {m["metadata"]["name"]: m["data"] for m in find(manifests, "ConfigMap")}
    secrets = {m["metadata"]["name"]: m["stringData"] for m in find(manifests, "Secret")}
    for name, spec in pod_specs(manifests):
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config, name
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, name
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounts <= {volume["name"] for volume in spec.get("volumes", [])}, name


def test_config_and_secret_keys_are_variables_the_app_reads(manifests):
    known = settings_variables()
    for kind, field in (("ConfigMap", "data"), ("Secret", "stringData")):
        for manifest in find(manifests, kind):
            unknown = set(manifest[field]) - known
            assert not unknown, f"{manifest['metadata']['name']} sets variables nothing reads: {unknown}"


def test_every_pod_loading_the_app_has_the_prometheus_directory(manifests):
    directory = one(manifests, "ConfigMap", "darkroom-config")["data"]["PROMETHEUS_MULTIPROC_DIR"]
    for name, spec in pod_specs(manifests):
        for container in spec["containers"]:
            mounted = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            assert directory in mounted, f"{name}: prometheus_client fails at start without {directory}"


def test_probes_send_a_host_that_allowed_hosts_accepts(manifests):
    allowed = one(manifests, "ConfigMap", "darkroom-config")["data"]["ALLOWED_HOSTS"].split(",")
    gateway = one(manifests, "Deployment", "darkroom-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        hosts = [h["value"] for h in probe["httpGet"]["httpHeaders"] if h["name"] == "Host"]
        assert hosts and hosts[0] in allowed


def test_the_scaler_may_patch_exactly_the_worker_deployment(manifests):
    scaler = one(manifests, "Deployment", "darkroom-scaler")
    spec = scaler["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"][-2:] == ["--backend", "kubernetes"]
    account = one(manifests, "ServiceAccount", spec["serviceAccountName"])
    binding = one(manifests, "RoleBinding", "darkroom-scaler")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "darkroom"}
    ]
    role = one(manifests, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    worker_deployment = one(manifests, "ConfigMap", "darkroom-config")["data"]["KUBERNETES_WORKER_DEPLOYMENT"]
    assert find(manifests, "Deployment", worker_deployment)
    (rule,) = role["rules"]
    assert rule["resources"] == ["deployments/scale"] and rule["resourceNames"] == [worker_deployment]
    assert {"get", "patch"} <= set(rule["verbs"])
    service = one(manifests, "Service", "darkroom-scaler")
    assert {p["port"] for p in service["spec"]["ports"]} == {
        settings.SCALER_HEALTH_PORT,
        settings.SCALER_METRICS_PORT,
    }


def test_workers_get_time_to_drain_and_hold_no_more_than_they_work_on(manifests):
    worker = one(manifests, "Deployment", "darkroom-worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > settings.JOB_TIME_LIMIT_SECONDS
    (container,) = spec["containers"]
    threads = container["command"][container["command"].index("--threads") + 1]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["dramatiq_queue_prefetch"] == threads
    assert container["command"][container["command"].index("--processes") + 1] == "1"


def test_every_documented_way_to_run_workers_supervises_them(manifests, services):
    # A dead worker process is replaced by the same code everywhere: scaler.backends.local.LocalWorkers.
    container = one(manifests, "Deployment", "darkroom-worker")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "manage.py", "run_workers"]
    assert services["scaler"]["command"][:3] == ["python", "manage.py", "scale_workers"]
    assert not any("dramatiq" in str(service.get("command", "")) for service in services.values())
    make_worker = re.search(r"^worker:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert "manage.py run_workers" in make_worker.group(1)
    assert "manage.py run_workers" in procfile_line("worker")


def test_every_namespaced_object_lives_in_the_darkroom_namespace(manifests):
    for manifest in manifests:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "darkroom", manifest["metadata"]["name"]


# --- Forwarded headers ------------------------------------------------------------------------
def procfile_line(process: str) -> str:
    """The command of `process` in the Procfile (`make stack`)."""
    return re.search(rf"^{process}: (.*)$", (ROOT / "Procfile").read_text(), re.MULTILINE).group(1)


def test_every_uvicorn_command_line_trusts_forwarded_headers_from_trusted_proxies_alone(manifests):
    """uvicorn's own default trusts X-Forwarded-For from 127.0.0.1: a local client could then pick
    its address, and so its rate-limit counter."""
    from scaler.backends.gateways import gateway_command

    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "serve", "serve-http", "serve-ws"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
        assert "$(UVICORN_TRUST)" in recipe, target
    assert 'UVICORN_TRUST = --forwarded-allow-ips "$${TRUSTED_PROXIES:-}"' in makefile
    assert '--forwarded-allow-ips \\"${TRUSTED_PROXIES:-}\\"' in (ROOT / "Dockerfile").read_text()
    assert '--forwarded-allow-ips "${TRUSTED_PROXIES:-}"' in procfile_line("web")
    gateway = one(manifests, "Deployment", "darkroom-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert "--forwarded-allow-ips=$(TRUSTED_PROXIES)" in gateway["command"]
    command = gateway_command("127.0.0.1", 8001)  # the scaler's own nginx (loopback) and TRUSTED_PROXIES
    trusted = ["127.0.0.1", *settings.TRUSTED_PROXIES]
    assert command[command.index("--forwarded-allow-ips") + 1] == ",".join(trusted)


def test_every_uvicorn_command_line_serves_websockets_with_the_lean_protocol(manifests):
    """Ten thousand sockets in a process are ten thousand times what uvicorn's protocol keeps for
    one (gateway/live/ws_protocol.py): every way a gateway is started uses the same flags."""
    from project.serving import UVICORN_FLAGS
    from scaler.backends.gateways import gateway_command

    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "serve", "serve-http", "serve-ws"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
        assert "$(UVICORN_WS)" in recipe, target
    flags = " ".join(UVICORN_FLAGS)
    assert f"UVICORN_WS := {flags}" in makefile.replace("\\\n\t", "")
    assert flags in (ROOT / "Dockerfile").read_text()
    assert flags in procfile_line("web")
    gateway = one(manifests, "Deployment", "darkroom-gateway")["spec"]["template"]["spec"]["containers"][0]
    pairs = zip(UVICORN_FLAGS[::2], UVICORN_FLAGS[1::2], strict=True)
    assert all(f"{flag}={value}" in gateway["command"] for flag, value in pairs)
    assert " ".join(gateway_command("127.0.0.1", 8001)).endswith(flags)


def test_compose_and_kubernetes_set_the_production_settings(services, manifests):
    environment = services["gateway"]["environment"]
    assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")  # no known default key
    https = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT")
    for name in (*https, "SECURE_PROXY_SSL_HEADER", "METRICS_TOKEN"):
        assert name in environment, name
    config = one(manifests, "ConfigMap", "darkroom-config")["data"]
    assert all(config[name] not in ("false", "0") for name in https)
    assert config["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto: https"
    assert "METRICS_TOKEN" in one(manifests, "Secret", "darkroom-secrets")["stringData"]


def test_an_unchanged_kubernetes_install_refuses_to_start(manifests, settings):
    """deploy/k8s/secret.yaml's placeholders are refused (`Bearer replace-me` used to read /metrics)."""
    environment = {
        **one(manifests, "ConfigMap", "darkroom-config")["data"],
        **one(manifests, "Secret", "darkroom-secrets")["stringData"],
    }
    errors = check_errors(settings, **environment)
    assert "darkroom.E005" in errors and "darkroom.E006" in errors


def test_file_cleanup_runs_on_a_schedule_in_compose_and_kubernetes(services, manifests):
    assert services["cleanup"]["command"][:3] == ["python", "manage.py", "cleanup_files"]
    (cronjob,) = find(manifests, "CronJob")
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "manage.py", "cleanup_files"]


def test_stale_jobs_are_republished_in_compose_and_kubernetes(services, manifests):
    """Without the re-publisher, a job whose message never reached the broker waits forever."""
    command = ["python", "manage.py", "requeue_stale", "--every", "30"]
    assert services["requeue"]["command"] == command
    requeue = one(manifests, "Deployment", "darkroom-requeue")
    assert requeue["spec"]["replicas"] == 1
    assert requeue["spec"]["template"]["spec"]["containers"][0]["command"] == command
