"""Settings come from the environment; bad values stop the start with a clear message."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from project import config
from project.management.commands.settings_reference import REFERENCE, reference

ROOT = Path(__file__).resolve().parent.parent


def check_with(**env) -> subprocess.CompletedProcess:
    """`manage.py check` in a process of its own, as a start with `env` runs it: a second of CPU a call,
    for the tests of the start itself. `check_errors` asks the same checks in the test's process."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_UPLOAD_BYTES": "lots"}, "MAX_UPLOAD_BYTES='lots' is not an integer"),
        ({"BROKER_URL": "redis://127.0.0.1:6379"}, "BROKER_URL must start with amqp:// or amqps://"),
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL must start with"),
        ({"EMBEDDED_WORKERS": "maybe"}, "EMBEDDED_WORKERS='maybe' is not a boolean"),
        ({"JOB_LEASE_SECONDS": "1"}, "JOB_LEASE_SECONDS=1 must be at least 3"),
        ({"SCALE_UP_THRESHOLD": "ten"}, "SCALE_UP_THRESHOLD='ten' is not a number"),
        ({"RATE_LIMIT_READ": "fast"}, "RATE_LIMIT_READ='fast' is not a rate"),
        ({"SCALER_BACKEND": "nomad"}, "SCALER_BACKEND='nomad' is not local or kubernetes"),
        # Either spelling is checked, even when the other one wins.
        ({"SERVICES_MAX_INSTANCES": "4", "MAX_INSTANCES": "many"}, "MAX_INSTANCES='many' is not an integer"),
        ({"COOLDOWN_PERIOD": "-1"}, "COOLDOWN_PERIOD=-1.0 must be at least 0"),
        ({"SECURE_PROXY_SSL_HEADER": "https"}, "is not a header and value like 'X-Forwarded-Proto: https'"),
        ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS='a year' is not an integer"),
        ({"SESSION_COOKIE_SECURE": "sometimes"}, "SESSION_COOKIE_SECURE='sometimes' is not a boolean"),
        ({"AVIF_SPEED": "11"}, "AVIF_SPEED=11 must be at most 10"),
        ({"JXL_EFFORT": "10"}, "JXL_EFFORT=10 must be at most 9"),
        ({"TRAFFIC_SPLIT": "sobel: images x"}, "not `pool weight`"),
        ({"TRUSTED_PROXIES": "10.0.0.1, nginx"}, "TRUSTED_PROXIES: 'nginx' is not an IP address or network"),
        # nginx joins the prefix and the key: a prefix without its slashes would name another location.
        ({"DOWNLOAD_ACCEL_PREFIX": "/_results"}, "DOWNLOAD_ACCEL_PREFIX='/_results' is not a path like"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(env, message):
    with pytest.raises(ImproperlyConfigured) as refused:
        config.load(env)
    assert message in str(refused.value)


def check_errors(settings, **env) -> list[str]:
    """The ids of the errors the system checks find with the settings `env` gives (and the embedded
    defaults for the rest, as `check_with`), asked in this process through pytest-django's `settings`."""
    return [message.id for message in check_messages(settings, **env) if message.is_serious()]


def check_warnings(settings, **env) -> list[str]:
    """The ids of the warnings (said at the start, which goes on) that `check_errors` leaves out."""
    return [message.id for message in check_messages(settings, **env) if not message.is_serious()]


def check_messages(settings, **env) -> list[checks.CheckMessage]:
    values = config.load(env)
    for name, value in config.django_settings(values).items():
        setattr(settings, name, value)
    return checks.run_checks()


def test_each_check_id_names_one_check():
    """An id is how an operator looks a failed start up: two checks must never share one."""
    written = re.findall(r'id="(darkroom\.\w+)"', (ROOT / "project" / "checks.py").read_text())
    ids = written + [rule.id for rule in config.RULES]
    assert sorted(ids) == sorted(set(ids))


def test_a_bad_value_stops_the_start():
    result = check_with(MAX_UPLOAD_BYTES="lots")
    assert result.returncode != 0
    assert "MAX_UPLOAD_BYTES='lots' is not an integer" in result.stderr


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({}, "MAX_OUTPUT_PIXELS", 50_000_000),
        ({"MAX_IMAGE_PIXELS": "1000"}, "MAX_OUTPUT_PIXELS", 1000),
        ({"MAX_IMAGE_PIXELS": "1000", "MAX_OUTPUT_PIXELS": "5000"}, "MAX_OUTPUT_PIXELS", 5000),
        ({"MAX_UPLOAD_BYTES": "1000"}, "MAX_REQUEST_BYTES", 1000 + 1024 * 1024),
        ({"JOB_MAX_RETRIES": "5"}, "JOB_MAX_ATTEMPTS", 6),
        ({}, "EMBEDDED_WORKERS", True),
        ({"BROKER_URL": "amqp://rabbit"}, "EMBEDDED_WORKERS", False),
        ({}, "API_KEYS_REQUIRED", False),
        ({"DATABASE_URL": "postgres://db/darkroom"}, "API_KEYS_REQUIRED", True),
        ({"DEPLOYMENT": "true"}, "API_KEYS_REQUIRED", True),
        ({"REDIS_URL": "redis://cache:6379/0", "DEPLOYMENT": "false"}, "API_KEYS_REQUIRED", False),
        ({"BROKER_URL": "amqp://rabbit", "API_KEYS_REQUIRED": "false"}, "API_KEYS_REQUIRED", False),
        ({"MIN_INSTANCES": "2", "SERVICES_MIN_INSTANCES": "3"}, "MIN_INSTANCES", 3),
        ({"COOLDOWN_PERIOD": "60"}, "SERVICES_COOLDOWN_PERIOD", 60.0),
    ],
)
def test_a_default_computed_from_another_setting_follows_it(env, name, expected):
    assert config.load(env)[name] == expected


def test_every_declared_django_setting_is_a_setting_of_the_same_name():
    from django.conf import settings

    missing = [
        setting.name for setting in config.SETTINGS if setting.django and not hasattr(settings, setting.name)
    ]
    assert missing == []


def variables_read_in(source: str) -> set[str]:
    reads = r'(?:os\.getenv|os\.environ\.get|config\.read)\(\s*"([A-Z][A-Z0-9_]+)"'
    return set(re.findall(reads, source)) | set(re.findall(r'os\.environ\["([A-Z][A-Z0-9_]+)"\]', source))


def test_every_variable_the_code_reads_is_declared_once():
    declared = [variable for setting in config.SETTINGS for variable in setting.variables]
    assert len(declared) == len(set(declared))
    code = [
        path
        for folder in ("project", "gateway", "processing", "scaler")
        for path in (ROOT / folder).rglob("*.py")
    ]
    read = {variable for path in code for variable in variables_read_in(path.read_text())}
    assert read - set(declared) - {"DJANGO_SETTINGS_MODULE"} == set()
    makefile = set(re.findall(r"\$\$\{([A-Z][A-Z0-9_]+)", (ROOT / "Makefile").read_text()))
    assert makefile - set(declared) == set()


def test_the_settings_reference_is_current():
    """docs/settings.md is generated: after changing project/config.py, run manage.py settings_reference."""
    assert REFERENCE.read_text() == reference()


def test_the_settings_reference_lists_every_variable_with_its_default():
    written = REFERENCE.read_text()
    for setting in config.SETTINGS:
        row = next(line for line in written.splitlines() if line.startswith(f"| `{setting.variables[0]}`"))
        assert setting.default_text() in row, setting.name
    for variable in ("EMBEDDED_WORKERS", "MAX_BATCH_FILES", "DATABASE_POOL_SIZE", "COOLDOWN_PERIOD"):
        assert f"`{variable}`" in written


def test_no_environment_gives_the_embedded_default():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='project.settings'; "
            "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
            "s.DRAMATIQ_BROKER['BROKER'], s.CHANNEL_LAYERS['default']['BACKEND'], s.EMBEDDED_WORKERS)",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "REDIS_URL")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "dramatiq.brokers.stub.StubBroker",
        "channels.layers.InMemoryChannelLayer",
        "True",
    ]


def test_a_request_limit_below_the_upload_limit_fails_the_system_check_and_stops_the_start(settings):
    assert "darkroom.E001" in check_errors(settings, MAX_UPLOAD_BYTES="2000000", MAX_REQUEST_BYTES="1000")
    assert "darkroom.E001" not in check_errors(settings, MAX_UPLOAD_BYTES="2000000")

    result = check_with(MAX_UPLOAD_BYTES="2000000", MAX_REQUEST_BYTES="1000")
    assert result.returncode != 0
    assert "darkroom.E001" in result.stderr


# --- Production defaults: with any sign of a deployment ---------------------------------------
SERVICE = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused"}

# Each says "this server serves others" on its own: a box on SQLite with Redis and S3 is a deployment.
DEPLOYMENT_SIGNALS = [
    SERVICE,
    {"BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"},
    {"REDIS_URL": "redis://127.0.0.1:6379/0"},
    {"AWS_STORAGE_BUCKET_NAME": "darkroom"},
    {"ALLOWED_HOSTS": "darkroom.example.com"},
    {"ALLOWED_HOSTS": "*"},
]


@pytest.mark.parametrize(
    "signal", DEPLOYMENT_SIGNALS, ids=lambda env: ",".join(f"{k}={v}" for k, v in env.items())
)
def test_any_sign_of_a_deployment_requires_keys_and_refuses_the_default_secret_key(settings, signal):
    assert config.load(signal).DEPLOYMENT and config.load(signal).API_KEYS_REQUIRED
    assert "darkroom.E005" in check_errors(settings, **signal)
    assert "darkroom.E005" not in check_errors(settings, **signal, SECRET_KEY="k3y-" + "x" * 46)


def test_this_machine_alone_is_the_embedded_default(settings):
    local = {"ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]", "DEBUG": "false"}
    assert not config.load(local).DEPLOYMENT and not config.load(local).API_KEYS_REQUIRED
    assert check_errors(settings, **local) == []


@pytest.mark.parametrize(
    "secret",
    [
        "replace-me",  # deploy/k8s/secret.yaml
        "replace-me-with-50-random-characters",
        "embedded-default-insecure-key-change-me-for-any-real-deployment",  # the built-in default
        "embedded-default-insecure-key-of-my-own",  # of its kind
        "CHANGEME",
        "change_me_in_production",
    ],
)
def test_a_placeholder_secret_is_refused(settings, secret):
    assert "darkroom.E005" in check_errors(settings, **SERVICE, SECRET_KEY=secret)
    assert "darkroom.E006" in check_errors(settings, METRICS_TOKEN=secret)  # embedded default or not


def test_a_random_metrics_token_is_accepted_and_none_is_staff_only(settings):
    assert check_errors(settings, METRICS_TOKEN="kq3VQn0m8hHk2yZ4xJw1uP9tRb6sLc7E") == []
    assert check_errors(settings, METRICS_TOKEN="") == []


def test_a_server_refuses_to_start_with_a_placeholder_metrics_token():
    started = run_python("import project.asgi", METRICS_TOKEN="replace-me", EMBEDDED_WORKERS="false")
    assert started.returncode != 0 and "darkroom.E006" in started.stderr


def test_optional_keys_in_a_deployment_are_warned_about(settings):
    assert "darkroom.W003" in check_warnings(
        settings, **SERVICE, SECRET_KEY="k" * 50, API_KEYS_REQUIRED="false"
    )
    assert "darkroom.W003" not in check_warnings(settings, **SERVICE, SECRET_KEY="k" * 50)
    assert "darkroom.W003" not in check_warnings(settings, API_KEYS_REQUIRED="false")


def test_scaler_endpoints_open_beyond_this_machine_without_a_token_are_warned_about(settings):
    assert "darkroom.W101" in check_warnings(settings, SCALER_HOST="0.0.0.0")
    assert "darkroom.W101" not in check_warnings(settings, SCALER_HOST="0.0.0.0", METRICS_TOKEN="t" * 32)
    assert "darkroom.W101" not in check_warnings(settings)


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    unset = ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "SECRET_KEY", "API_KEYS_REQUIRED")
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def setting(name: str, **env) -> str:
    done = run_python(f"from django.conf import settings; print(repr(settings.{name}))", **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("service", [SERVICE, {"BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}])
def test_with_a_service_configured_api_keys_are_required_unless_the_environment_says_not(service):
    assert setting("API_KEYS_REQUIRED") == "False"  # the embedded default
    assert setting("API_KEYS_REQUIRED", **service) == "True"
    assert setting("API_KEYS_REQUIRED", **service, API_KEYS_REQUIRED="false") == "False"


def test_the_default_secret_key_is_refused_once_a_service_is_configured():
    refused = run_python(
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('check')",
        **SERVICE,
    )
    assert refused.returncode != 0 and "darkroom.E005" in refused.stderr

    assert (
        run_python(
            "import django; django.setup(); from django.core.management import call_command; "
            "call_command('check')",
            **SERVICE,
            SECRET_KEY="x" * 50,
        ).returncode
        == 0
    )
    # The embedded default still starts with its own key.
    assert (
        run_python(
            "import django; django.setup(); from django.core.management import call_command; "
            "call_command('check')"
        ).returncode
        == 0
    )


def test_a_server_refuses_to_start_with_the_default_secret_key_and_a_service():
    started = run_python("import project.asgi", **SERVICE, EMBEDDED_WORKERS="false")
    assert started.returncode != 0 and "darkroom.E005" in started.stderr
    assert run_python("import project.wsgi", **SERVICE).returncode != 0


def test_https_settings_come_from_the_environment():
    https = {
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "true",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_SSL_REDIRECT": "true",
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    }
    names = ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT"]
    assert [setting(name, **https) for name in names] == ["True", "True", "31536000", "True"]
    assert setting("SECURE_PROXY_SSL_HEADER", **https) == "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert setting("SECURE_PROXY_SSL_HEADER") == "None"
    assert [setting(name) for name in names] == ["False", "False", "0", "False"]
