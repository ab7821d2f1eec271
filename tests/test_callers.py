"""One credential, one caller: the API, a WebSocket handshake and the operator check (/metrics, the
health checks' details) read credentials in one place, gateway.auth.callers, and agree on each."""

import time
import uuid
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import Client, RequestFactory
from django.utils import timezone
from ninja.errors import AuthenticationError

from gateway.api.auth import API_AUTH
from gateway.auth import callers, tokens
from gateway.http.errors import ApiError
from gateway.models import ApiKey
from processing.owners import Owner

pytestmark = pytest.mark.django_db

ISSUER, AUDIENCE = "https://id.example.test/", "darkroom"
PROVIDER_KEY = ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Refused:
    error: type[Exception]  # what gateway.auth.callers raises (a socket closes with 4401 or 1013 for it)
    api_code: str  # the API's error code for it


@pytest.fixture
def provider(settings, tmp_path):
    """An identity provider whose key is in a file; its tokens say "staff" in `roles` for staff."""
    key_file = tmp_path / "provider.pem"
    key_file.write_bytes(
        PROVIDER_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings.JWT_PUBLIC_KEY_FILE = str(key_file)
    settings.JWT_ISSUER, settings.JWT_AUDIENCE = ISSUER, AUDIENCE
    settings.JWT_STAFF_CLAIM, settings.JWT_STAFF_VALUE = "roles", "staff"


def token(subject: str, **claims) -> str:
    payload = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, PROVIDER_KEY, algorithm="ES256")


def issued_session(user: User | None = None) -> tuple[str, callers.Caller]:
    """A session the pages issued (signed in as `user`, if given): its cookie, and its caller."""
    session = SessionStore()
    if user is not None:
        client = Client()
        client.force_login(user)
        session = SessionStore(client.session.session_key)
    caller = callers.issue_session(session, user)
    session.save()
    return f"sessionid={session.session_key}", caller


def credentials(case: str) -> tuple[dict, callers.Caller | Refused]:
    """What a client of this case sends (headers, a Cookie among them), and what every path must see."""
    if case in ("an API key", "a staff API key"):
        key, presented = ApiKey.issue(case, is_staff=case == "a staff API key")
        return {"X-API-Key": presented}, callers.key_caller(key)
    if case == "an API key as a bearer credential":
        key, presented = ApiKey.issue(case)
        return {"Authorization": f"Bearer {presented}"}, callers.key_caller(key)
    if case == "an unknown key":
        return {"X-API-Key": "dk_000000000000_wrong"}, Refused(callers.InvalidKey, "invalid_api_key")
    if case == "an unknown key beside a session":
        cookie, _ = issued_session()
        return {"X-API-Key": "dk_nope_nope", "Cookie": cookie}, Refused(callers.InvalidKey, "invalid_api_key")
    if case == "another Authorization scheme":
        _, presented = ApiKey.issue(case)
        headers = {"Authorization": "Basic dXNlcjpwdw==", "X-API-Key": presented}
        return headers, Refused(callers.InvalidKey, "invalid_api_key")
    if case in ("a token", "a staff token"):
        claims = {"roles": ["staff"]} if case == "a staff token" else {}
        owner, expires = Owner(subject="alice"), int(time.time()) + 300
        caller = callers.Caller(owner, bool(claims), expires_at=expires + tokens.LEEWAY_SECONDS)
        return {"Authorization": f"Bearer {token('alice', exp=expires, **claims)}"}, caller
    if case == "an expired token":
        expired = token("alice", exp=int(time.time()) - 120)
        return {"Authorization": f"Bearer {expired}"}, Refused(tokens.InvalidToken, "invalid_token")
    if case == "a session":
        cookie, caller = issued_session()
        return {"Cookie": cookie}, caller
    if case == "a staff user's session":
        cookie, caller = issued_session(User.objects.create_user("ops", is_staff=True))
        return {"Cookie": cookie}, caller
    if case == "a made-up session cookie":
        return {"Cookie": f"sessionid={uuid.uuid4().hex}"}, callers.Caller()
    assert case == "nothing"
    return {}, callers.Caller()


def through_the_api(headers: dict) -> callers.Caller | str:
    """The caller the API's authentication gives (or the code of its refusal), behind the middleware."""
    request = RequestFactory().get("/api/v1/jobs", headers=headers)
    SessionMiddleware(lambda request: None).process_request(request)
    AuthenticationMiddleware(lambda request: None).process_request(request)
    try:
        return API_AUTH[0](request)
    except ApiError as refused:
        return refused.code
    except AuthenticationError:
        return "authentication_required"  # what the API answers for it


def through_a_socket(headers: dict) -> callers.Caller | type[Exception]:
    scope = {
        "type": "websocket",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "subprotocols": ["darkroom"],
    }
    try:
        return callers.of_handshake(scope)
    except callers.REFUSALS as refused:
        return type(refused)


def is_operator(headers: dict) -> bool:
    request = RequestFactory().get("/metrics", headers=headers)
    SessionMiddleware(lambda request: None).process_request(request)
    AuthenticationMiddleware(lambda request: None).process_request(request)
    return callers.is_operator(request)


@pytest.mark.parametrize(
    "case",
    [
        "an API key",
        "a staff API key",
        "an API key as a bearer credential",
        "an unknown key",
        "an unknown key beside a session",
        "another Authorization scheme",
        "a token",
        "a staff token",
        "an expired token",
        "a session",
        "a staff user's session",
        "a made-up session cookie",
        "nothing",
    ],
)
def test_the_api_a_socket_and_the_operator_check_see_the_same_caller(case, provider):
    headers, expected = credentials(case)

    if isinstance(expected, Refused):
        assert through_the_api(headers) == expected.api_code
        assert through_a_socket(headers) is expected.error
        assert not is_operator(headers)
    else:
        assert through_the_api(headers) == expected
        assert through_a_socket(headers) == expected
        assert is_operator(headers) == expected.is_staff


def test_without_credentials_nobody_is_anybody_when_keys_are_required(settings):
    settings.API_KEYS_REQUIRED = True
    made_up = {"Cookie": f"sessionid={uuid.uuid4().hex}"}
    for headers in ({}, made_up):
        assert through_the_api(headers) == "authentication_required"
        assert through_a_socket(headers) is None
        assert not is_operator(headers)


def test_when_keys_are_required_a_session_is_a_caller_only_once_its_user_has_signed_in(settings):
    anonymous_cookie, _ = issued_session()  # a visit to a page, while keys were optional
    settings.API_KEYS_REQUIRED = True
    signed_in_cookie, signed_in = issued_session(User.objects.create_user("ada"))

    anonymous = {"Cookie": anonymous_cookie}
    assert through_the_api(anonymous) == "authentication_required"
    assert through_a_socket(anonymous) is None
    assert callers.issue_session(SessionStore(), None) is None  # the pages send them to sign in
    assert signed_in.owner.user_id is not None
    assert through_the_api({"Cookie": signed_in_cookie}) == signed_in
    assert through_a_socket({"Cookie": signed_in_cookie}) == signed_in


@pytest.mark.parametrize(
    "identity",
    ["key:12", "token:alice", "token:a:b", "session:5f0c2d0e9b7a4e34a3f1d6c8b2e4a7d9", "anonymous"],
)
def test_an_identity_reads_back_as_the_owner_it_names(identity):
    assert Owner.from_identity(identity).identity == identity


@pytest.mark.parametrize("identity", ["", "key:", "user:3", "staff", "anonymous:x"])
def test_a_string_that_names_no_owner_is_refused(identity):
    with pytest.raises(ValueError):
        Owner.from_identity(identity)


# --- API keys kept for a few seconds per process -------------------------------------------------


@pytest.fixture
def key_clock(monkeypatch) -> list[float]:
    """The clock a process's copies of API keys age by, moved by the test: `key_clock[0] += seconds`."""
    now = [1000.0]
    monkeypatch.setattr(callers, "clock", lambda: now[0])
    callers.forget_keys()
    return now


def presented_key(staff: bool = False) -> tuple[ApiKey, str]:
    return ApiKey.issue("kept", is_staff=staff)


def test_a_key_used_moments_ago_is_not_read_again(key_clock, django_assert_num_queries):
    _, presented = presented_key()
    callers.from_key(presented)
    with django_assert_num_queries(0):
        callers.from_key(presented)


def test_a_key_revoked_elsewhere_is_refused_once_this_process_copy_is_older_than_its_freshness(key_clock):
    key, presented = presented_key()
    callers.from_key(presented)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # another process, the admin

    key_clock[0] += callers.KEY_FRESH_SECONDS
    with pytest.raises(callers.InvalidKey):
        callers.from_key(presented)


def test_a_key_revoked_in_this_process_is_refused_at_once(key_clock):
    key, presented = presented_key()
    callers.from_key(presented)
    key.revoked_at = timezone.now()
    key.save()
    with pytest.raises(callers.InvalidKey):
        callers.from_key(presented)


def test_a_wrong_secret_is_refused_however_recently_its_key_was_used(key_clock):
    _, presented = presented_key()
    callers.from_key(presented)
    with pytest.raises(callers.InvalidKey):
        callers.from_key(presented[:-1] + ("A" if presented[-1] != "A" else "B"))
