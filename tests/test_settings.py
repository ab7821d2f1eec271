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
