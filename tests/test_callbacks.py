"""Callback deliveries, received by a real HTTP server on loopback: the signed POST of a job's JSON
when it ends, its retries and their backoff, what is given up at once, and the safety rules (no
loopback unless listed, no redirect followed, short timeouts, a bounded answer).

Backoffs are never slept through: a test either sets the first retry to 0 s and lets the worker run
the retries, or calls one attempt at a time and moves the next attempt's time itself.
"""

import json
import socket
import ssl
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from django.utils import timezone

from gateway.models import ApiKey
from processing.callbacks import addresses, deliveries, posting, signing
from processing.jobs import lifecycle
from processing.models import CallbackDelivery, Job
from scaler.backends.processes import worker_command
from tests import images
from tests.factories import stored_job
from tests.receivers import Receiver, Reply, certificate
from tests.services import require
from tests.stack import LiveStack
from tests.uploads import submit

pytestmark = pytest.mark.django_db(transaction=True)

OWNER_KEY = "7"  # the API key id the jobs made here belong to (an identity is all processing knows)


@pytest.fixture
def secret() -> str:
    return signing.issue(f"key:{OWNER_KEY}")


@pytest.fixture
def loopback_allowed(settings):
    settings.CALLBACK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def run_callbacks(stub_broker, stub_worker):
    """Deliver every callback queued so far, retries included: `run_callbacks()`."""

    def run():
        stub_broker.join(deliveries.CALLBACK_QUEUE, fail_fast=True)
        stub_worker.join()

    return run


def ended(url: str, end: str = "cancel") -> CallbackDelivery:
    """A job with this callback_url, ended now (cancelled, or failed): its delivery, not attempted."""
    job = stored_job(callback_url=url, owner_key=OWNER_KEY)
    if end == "cancel":
        assert lifecycle.cancel(job.id)
    else:
        assert lifecycle.fail(job.id, "unsupported_image", "not an image this service takes")
    return CallbackDelivery.objects.get(job=job)


def documented_verifier() -> Callable[[str, bytes, str], bool]:
    """`verified(signature_header, body, secret)`: the receiver's check docs/callbacks.md gives, run as
    it is written there (so the page's code is tested too)."""
    page = (Path(__file__).parent.parent / "docs" / "callbacks.md").read_text()
    code = page.split("## Verifying the signature")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102  (our own documentation's example)
    return namespace["verified"]


verified = documented_verifier()


def metric(client, settings, outcome: str) -> float:
    settings.METRICS_TOKEN = "metrics-token"
    text = client.get("/metrics", headers={"Authorization": "Bearer metrics-token"}).content.decode()
    sample = f'darkroom_callback_attempts_total{{outcome="{outcome}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample)), 0.0)


def test_a_completed_job_posts_its_json_signed_to_its_callback_url(
    client, api_key, run_jobs, run_callbacks, loopback_allowed, receiver
):
    headers = api_key("hooks")
    prefix = headers["X-API-Key"].split("_")[1]
    secret = signing.issue(f"key:{ApiKey.objects.get(prefix=prefix).pk}")
    job_id = submit(client, headers=headers, callback_url=receiver.url).json()["job_id"]
    run_jobs()
    run_callbacks()

    [received] = receiver.received
    delivery = CallbackDelivery.objects.get(job_id=job_id)
    assert received.path == "/hook" and received.headers["Content-Type"] == "application/json"
    assert received.headers["Darkroom-Event"] == "job.completed"
    assert received.headers["Darkroom-Event-Id"] == str(delivery.id)
    assert received.headers["Darkroom-Delivery-Attempt"] == "1"
    assert verified(received.headers["Darkroom-Signature"], received.body, secret)
    assert not verified(
        received.headers["Darkroom-Signature"], received.body, signing.SECRET_PREFIX + "guessed"
    )
    assert not verified(received.headers["Darkroom-Signature"], received.body + b" ", secret)
    # The same public JSON the API gives for the job.
    assert json.loads(received.body) == client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
    assert json.loads(received.body)["status"] == "completed"
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert delivery.finished_at is not None and delivery.next_attempt_at is None


def test_failed_and_cancelled_jobs_post_theirs_too(stub_broker, secret, loopback_allowed, receiver):
    for delivery in (ended(receiver.url, "fail"), ended(receiver.url, "cancel")):
        assert deliveries.attempt(delivery.id).state == "delivered"
    failed, cancelled = receiver.received
    assert failed.headers["Darkroom-Event"] == "job.failed"
    assert json.loads(failed.body)["error"] == {
        "code": "unsupported_image",
        "message": "not an image this service takes",
    }
    assert cancelled.headers["Darkroom-Event"] == "job.cancelled"
    assert json.loads(cancelled.body)["status"] == "cancelled"
    assert all(verified(each.headers["Darkroom-Signature"], each.body, secret) for each in receiver.received)


def test_a_failing_receiver_gets_the_same_event_again_until_it_takes_it(
    client, settings, stub_broker, run_callbacks, secret, loopback_allowed
):
    settings.CALLBACK_FIRST_RETRY_SECONDS = 0  # the retries come at once: nothing to wait for
    retried_before, delivered_before = (
        metric(client, settings, "retried"),
        metric(client, settings, "delivered"),
    )
    with Receiver(replies=[Reply(500, body=b"database down"), Reply(503), Reply(200)]) as receiver:
        delivery = ended(receiver.url)
        run_callbacks()

    assert [each.headers["Darkroom-Delivery-Attempt"] for each in receiver.received] == ["1", "2", "3"]
    assert {each.headers["Darkroom-Event-Id"] for each in receiver.received} == {str(delivery.id)}
    assert {each.body for each in receiver.received} == {delivery.payload.encode()}
    assert all(verified(each.headers["Darkroom-Signature"], each.body, secret) for each in receiver.received)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)
    assert metric(client, settings, "retried") - retried_before == 2
    assert metric(client, settings, "delivered") - delivered_before == 1


def test_each_retry_waits_twice_as_long_and_a_day_later_the_delivery_is_given_up(
    stub_broker, secret, loopback_allowed
):
    with Receiver(replies=[Reply(500, body=b"database down")]) as receiver:
        delivery = ended(receiver.url)
        first = deliveries.attempt(delivery.id)
        assert (first.state, first.last_status, first.last_error) == (
            "pending",
            500,
            "answered 500: database down",
        )
        wait = (first.next_attempt_at - first.last_attempt_at).total_seconds()
        assert 10 <= wait < 15  # CALLBACK_FIRST_RETRY_SECONDS, after the attempt itself took its time
        assert deliveries.attempt(delivery.id) is None  # not due: a duplicate message does nothing

        CallbackDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
        second = deliveries.attempt(delivery.id)
        assert 20 <= (second.next_attempt_at - second.last_attempt_at).total_seconds() < 25

        a_day_ago = timezone.now() - timedelta(days=1)
        CallbackDelivery.objects.filter(id=delivery.id).update(
            next_attempt_at=timezone.now(), created_at=a_day_ago
        )
        last = deliveries.attempt(delivery.id)
    assert last.state == "given_up" and last.next_attempt_at is None
    assert last.last_error.startswith("answered 500: database down; tried 3 times in 1 day")
    assert len(receiver.received) == 3


def test_a_4xx_is_given_up_at_once_but_a_429_waits_as_long_as_asked(stub_broker, secret, loopback_allowed):
    replies = [Reply(404, body=b"no such hook"), Reply(429, {"Retry-After": "120"}), Reply(408)]
    with Receiver(replies=replies) as receiver:
        not_found, too_many, timed_out = ended(receiver.url), ended(receiver.url), ended(receiver.url)
        not_found, too_many, timed_out = (deliveries.attempt(d.id) for d in (not_found, too_many, timed_out))
    assert not_found.state == "given_up" and not_found.last_status == 404
    assert not_found.last_error == "answered 404: no such hook (a 4xx other than 408 and 429 is not retried)"
    assert too_many.state == "pending"
    assert (too_many.next_attempt_at - too_many.last_attempt_at).total_seconds() >= 119
    assert timed_out.state == "pending" and timed_out.last_status == 408


def test_a_redirect_is_not_followed(stub_broker, secret, loopback_allowed):
    with Receiver() as elsewhere, Receiver(replies=[Reply(302, {"Location": elsewhere.url})]) as receiver:
        delivery = deliveries.attempt(ended(receiver.url).id)
    assert len(receiver.received) == 1 and elsewhere.received == []
    assert delivery.state == "given_up" and delivery.last_status == 302
    assert "a redirect: callbacks follow none" in delivery.last_error


@pytest.fixture
def named_loopback(monkeypatch):
    """hooks.test resolves to 127.0.0.1 (without a DNS query); other names as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real("127.0.0.1" if host == "hooks.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(addresses.socket, "getaddrinfo", getaddrinfo)


def test_loopback_is_refused_by_default_and_reached_once_the_operator_lists_it(
    settings, stub_broker, secret, named_loopback
):
    with Receiver("127.0.0.1") as ipv4, Receiver("::1") as ipv6:
        by_name = ipv4.url.replace("127.0.0.1", "hooks.test")
        refused = [deliveries.attempt(ended(url).id) for url in (ipv4.url, ipv6.url, by_name)]
        assert [delivery.state for delivery in refused] == ["given_up"] * 3
        assert [delivery.last_error for delivery in refused] == [
            "127.0.0.1 is a loopback address, which callbacks may not reach",
            "::1 is a loopback address, which callbacks may not reach",
            "hooks.test resolves to 127.0.0.1 is a loopback address, which callbacks may not reach",
        ]
        assert ipv4.received == ipv6.received == []

        settings.CALLBACK_ALLOWED_NETWORKS = ["127.0.0.1"]
        assert deliveries.attempt(ended(by_name).id).state == "delivered"
        assert deliveries.attempt(ended(ipv6.url).id).state == "given_up"
        settings.CALLBACK_ALLOWED_NETWORKS = ["::1"]
        assert deliveries.attempt(ended(ipv6.url).id).state == "delivered"
    assert len(ipv4.received) == len(ipv6.received) == 1
    assert ipv4.received[0].headers["Host"] == f"hooks.test:{ipv4.port}"  # the name, on the checked address


def test_over_https_the_name_is_what_tls_checks_on_the_checked_address(
    settings, stub_broker, secret, named_loopback, tmp_path, monkeypatch
):
    settings.CALLBACK_ALLOWED_NETWORKS = ["127.0.0.1"]
    cert, key = certificate("hooks.test", tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    # The receiver's certificate is trusted as an operator's trust store would trust a real one.
    monkeypatch.setattr(posting, "tls_context", lambda: ssl.create_default_context(cafile=cert))
    with Receiver(tls=serving) as receiver:
        by_name = receiver.url.replace("127.0.0.1", "hooks.test")
        delivered = deliveries.attempt(ended(by_name).id)
        by_address = deliveries.attempt(ended(receiver.url).id)
    assert delivered.state == "delivered"
    assert receiver.server_names[0] == "hooks.test" and receiver.received[0].headers["Host"].startswith(
        "hooks.test"
    )
    # The certificate names hooks.test, not 127.0.0.1: the check is by the URL's host.
    assert by_address.state == "pending" and by_address.last_error.startswith("TLS: "), by_address.last_error
    assert len(receiver.received) == 1


def test_a_receiver_that_streams_an_endless_answer_is_read_only_so_far(stub_broker, secret, loopback_allowed):
    with Receiver(replies=[Reply(200, stream=True)]) as receiver:
        delivery = deliveries.attempt(ended(receiver.url).id)
    assert delivery.state == "delivered"
    # What the client read (64 KiB) plus what the sockets' buffers took before it closed: nowhere
    # near the gigabyte the receiver would have sent to a client reading it all.
    assert receiver.streamed < 64 * 1024 * 1024


def test_a_receiver_that_never_answers_is_timed_out_and_tried_again(
    settings, stub_broker, secret, loopback_allowed
):
    settings.CALLBACK_TIMEOUT_SECONDS = 0.2
    with Receiver(replies=[Reply(silent=True)]) as receiver:
        started = time.monotonic()
        delivery = deliveries.attempt(ended(receiver.url).id)
        took = time.monotonic() - started
    assert delivery.state == "pending" and delivery.last_error == "timed out" and delivery.last_status is None
    assert took < 5


def test_an_owner_without_a_secret_any_more_has_its_callbacks_given_up(
    stub_broker, secret, loopback_allowed, receiver
):
    delivery = ended(receiver.url)
    signing.CallbackSecret.objects.all().delete()
    delivery = deliveries.attempt(delivery.id)
    assert delivery.state == "given_up" and "no longer has a callback secret" in delivery.last_error
    assert receiver.received == []


def test_after_a_rotation_callbacks_are_signed_by_both_secrets_for_a_day(
    stub_broker, secret, loopback_allowed, receiver
):
    rotated = signing.issue(f"key:{OWNER_KEY}")
    deliveries.attempt(ended(receiver.url).id)
    received = receiver.received[-1]
    assert verified(received.headers["Darkroom-Signature"], received.body, rotated)
    assert verified(received.headers["Darkroom-Signature"], received.body, secret)
    signing.CallbackSecret.objects.update(previous_until=timezone.now())
    deliveries.attempt(ended(receiver.url).id)
    received = receiver.received[-1]
    assert verified(received.headers["Darkroom-Signature"], received.body, rotated)
    assert not verified(received.headers["Darkroom-Signature"], received.body, secret)


def test_a_callback_whose_message_was_lost_is_sent_again_by_the_re_sender(
    stub_broker, secret, loopback_allowed, receiver
):
    delivery = ended(receiver.url)  # no worker runs yet: its message waits in the queue...
    stub_broker.flush_all()  # ...and is lost (a broker restart, say)
    assert deliveries.resend_overdue() == 0  # due, but not overdue: its message may still come
    CallbackDelivery.objects.filter(id=delivery.id).update(
        next_attempt_at=timezone.now() - timedelta(minutes=6)
    )
    assert deliveries.resend_overdue() == 1
    assert deliveries.resend_overdue() == 0  # sent again once, not at every pass
    worker = dramatiq.Worker(stub_broker, worker_timeout=100)
    worker.start()
    try:
        stub_broker.join(deliveries.CALLBACK_QUEUE)
        worker.join()
    finally:
        worker.stop()
    assert len(receiver.received) == 1
    assert CallbackDelivery.objects.get(id=delivery.id).state == "delivered"


def test_a_job_without_a_callback_url_makes_no_delivery(stub_broker):
    job = stored_job(owner_key=OWNER_KEY)
    lifecycle.cancel(job.id)
    assert not CallbackDelivery.objects.filter(job=job).exists()
    assert Job.objects.get(id=job.id).status == "cancelled"


@pytest.mark.services
def test_on_rabbitmq_a_pools_worker_process_delivers_the_callbacks_of_its_jobs(tmp_path):
    require("postgres", "rabbitmq", "redis")
    with Receiver() as receiver, LiveStack(tmp_path, CALLBACK_ALLOWED_NETWORKS="127.0.0.1") as stack:
        stack.start_server()
        key, secret = stack.manage("create_api_key", "hooks", "--callback-url", receiver.url).split()
        stack.spawn("worker", worker_command(1, "images"))  # as run_workers and the scaler start them
        with stack.client() as client:
            image = ("a.png", images.png_bytes(images.gradient(16, 12)))
            response = client.post(
                "/api/v1/process/grayscale", files={"image": image}, headers={"X-API-Key": key}
            )
        job_id = response.json()["job_id"]
        stack.wait_until(lambda: receiver.received, timeout=60, what="the callback")

    [received] = receiver.received
    assert received.headers["Darkroom-Event"] == "job.completed"
    assert verified(received.headers["Darkroom-Signature"], received.body, secret)
    assert json.loads(received.body)["job_id"] == job_id
