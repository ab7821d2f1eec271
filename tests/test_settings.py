"""Settings come from the environment; bad values stop the start with a clear message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def check_with(**env) -> subprocess.CompletedProcess:
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
    ],
)
def test_a_bad_value_fails_at_start_up_naming_the_variable(env, message):
    result = check_with(**env)
    assert result.returncode != 0
    assert message in result.stderr


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


def test_a_request_limit_below_the_upload_limit_fails_the_system_check():
    result = check_with(MAX_UPLOAD_BYTES="2000000", MAX_REQUEST_BYTES="1000")
    assert result.returncode != 0
    assert "darkroom.E001" in result.stderr


# --- Production defaults: with any service configured ----------------------------------------
SERVICE = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused"}


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
    assert refused.returncode != 0 and "darkroom.E002" in refused.stderr

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
    assert started.returncode != 0 and "darkroom.E002" in started.stderr
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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECURE_PROXY_SSL_HEADER": "https"}, "is not a header and value like 'X-Forwarded-Proto: https'"),
        ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS='a year' is not an integer"),
        ({"SESSION_COOKIE_SECURE": "sometimes"}, "SESSION_COOKIE_SECURE='sometimes' is not a boolean"),
    ],
)
def test_a_bad_https_setting_fails_at_start_up_naming_it(env, message):
    result = check_with(**env)
    assert result.returncode != 0 and message in result.stderr
