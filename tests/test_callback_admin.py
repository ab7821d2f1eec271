"""Callbacks for operators: every delivery in the admin (its own list, and on its job's page), a
given-up one delivered again; API keys' default callback URL and secrets, in the admin and by
manage.py callback_secret / create_api_key --callback-url, each secret shown once."""

import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gateway.models import ApiKey
from processing.callbacks import deliveries, signing
from processing.jobs import lifecycle
from processing.models import CallbackDelivery, CallbackSecret
from tests.factories import stored_job
from tests.receivers import Receiver, Reply

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERIES = "/admin/processing/callbackdelivery/"
KEYS = "/admin/gateway/apikey/"


@pytest.fixture
def given_up(settings, stub_broker) -> CallbackDelivery:
    """A cancelled job's callback, given up on: its receiver answered 410."""
    settings.CALLBACK_ALLOWED_NETWORKS = ["127.0.0.1"]
    signing.issue("key:7")
    with Receiver(replies=[Reply(410, body=b"hook removed")]) as receiver:
        job = stored_job(callback_url=receiver.url, owner_key="7")
        lifecycle.cancel(job.id)
        delivery = deliveries.attempt(CallbackDelivery.objects.get(job=job).id)
    assert delivery is not None and delivery.state == "given_up"
    return delivery


def test_deliveries_are_listed_and_shown_on_their_jobs_page(admin_client, given_up):
    listing = admin_client.get(DELIVERIES).content.decode()
    assert str(given_up.id)[:8] in listing and given_up.url in listing and "given up" in listing

    page = admin_client.get(f"{DELIVERIES}{given_up.id}/change/").content.decode()
    assert "answered 410: hook removed" in page and "job.cancelled" in page
    assert 'name="_save"' not in page  # a record: nothing to edit

    job_page = admin_client.get(f"/admin/processing/job/{given_up.job_id}/change/").content.decode()
    assert given_up.url in job_page and "answered 410: hook removed" in job_page
    assert f"{DELIVERIES}{given_up.id}/change/" in job_page


def test_a_given_up_delivery_can_be_delivered_again_with_the_same_event_id(
    admin_client, given_up, stub_broker, stub_worker
):
    with Receiver() as receiver:
        CallbackDelivery.objects.filter(id=given_up.id).update(url=receiver.url)
        data = {"action": "deliver_again", "_selected_action": [str(given_up.id)]}
        response = admin_client.post(DELIVERIES, data, follow=True)
        assert "1 callback(s) will be delivered again" in response.content.decode()
        stub_broker.join(deliveries.CALLBACK_QUEUE)
        stub_worker.join()
    [received] = receiver.received
    assert received.headers["Darkroom-Event-Id"] == str(given_up.id)
    assert CallbackDelivery.objects.get(id=given_up.id).state == "delivered"


def test_an_api_keys_callback_secret_is_issued_in_the_admin_and_shown_once(admin_client, api_key):
    api_key("hooks")
    key = ApiKey.objects.get(name="hooks")
    response = admin_client.post(
        KEYS, {"action": "issue_callback_secrets", "_selected_action": [str(key.pk)]}
    )
    assert "no-store" in response["Cache-Control"]
    [shown] = re.findall(r'class="callback-secret">([^<]+)<', response.content.decode())
    assert signing.signing_secrets(f"key:{key.pk}") == [shown]

    again = admin_client.get(f"{KEYS}{key.pk}/change/").content.decode()
    assert shown not in again and "issued " in again  # the secret itself is never shown again


def test_an_api_keys_default_callback_url_is_checked_when_saved_in_the_admin(admin_client, api_key):
    api_key("hooks")
    key = ApiKey.objects.get(name="hooks")
    refused = admin_client.post(f"{KEYS}{key.pk}/change/", {"callback_url": "http://10.0.0.1/hook"})
    assert "10.0.0.1 is a private address" in refused.content.decode()
    # Without a secret, every submission of the key would be refused: a secret comes first.
    unsigned = admin_client.post(f"{KEYS}{key.pk}/change/", {"callback_url": "https://hooks.example.com/d"})
    assert "This key has no callback secret yet" in unsigned.content.decode()
    assert ApiKey.objects.get(pk=key.pk).callback_url == ""
    signing.issue(f"key:{key.pk}")
    admin_client.post(f"{KEYS}{key.pk}/change/", {"callback_url": "https://hooks.example.com/d"})
    assert ApiKey.objects.get(pk=key.pk).callback_url == "https://hooks.example.com/d"


def test_callback_secret_prints_a_new_secret_once_and_sets_the_default_url(api_key, capsys):
    api_key("hooks")
    key = ApiKey.objects.get(name="hooks")
    call_command("callback_secret", key.prefix, "--default-url", "https://hooks.example.com/d")
    first = capsys.readouterr().out.strip()
    call_command("callback_secret", key.prefix)
    second = capsys.readouterr().out.strip()
    assert first.startswith(signing.SECRET_PREFIX) and second != first
    assert signing.signing_secrets(f"key:{key.pk}") == [second, first]  # the old one, for a day
    assert ApiKey.objects.get(pk=key.pk).callback_url == "https://hooks.example.com/d"

    call_command("callback_secret", "--owner", "token:alice")
    assert CallbackSecret.objects.filter(owner="token:alice").exists()
    with pytest.raises(CommandError, match="169.254.169.254 is a cloud metadata address"):
        call_command("callback_secret", key.prefix, "--default-url", "http://169.254.169.254/")
    with pytest.raises(CommandError, match="no API key"):
        call_command("callback_secret", "nosuchprefix")


def test_create_api_key_with_a_callback_url_prints_the_key_then_its_secret(capsys, db):
    call_command("create_api_key", "robot", "--callback-url", "https://hooks.example.com/robot")
    key_line, secret_line = capsys.readouterr().out.split()
    key = ApiKey.find(key_line)
    assert key is not None and key.callback_url == "https://hooks.example.com/robot"
    assert signing.signing_secrets(f"key:{key.pk}") == [secret_line]

    with pytest.raises(CommandError, match="must be an http"):
        call_command("create_api_key", "refused", "--callback-url", "gopher://x")
    assert not ApiKey.objects.filter(name="refused").exists()  # nothing made for a refused URL
