"""Bearer tokens (JWTs) signed by an identity provider: checked against its JWKS, served over real
HTTP, or a key file; the owner and staff claims; over the API and the WebSocket."""

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import tokens
from gateway.live import reauthentication, routing
from gateway.models import ApiKey
from processing.jobs import lifecycle
from processing.models import Job
from processing.owners import Owner, SubjectTooLong
from tests.factories import stored_job
from tests.test_settings import check_errors
from tests.uploads import submit

ISSUER, AUDIENCE = "https://id.example.test/", "darkroom"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk_of(private_key, kid: str) -> dict:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
        return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def pem_of(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def trust_key_file(settings, tmp_path, content: bytes):
    """Tokens checked against a key file holding `content`, for our issuer and audience; the file."""
    key_file = tmp_path / "provider.pem"
    key_file.write_bytes(content)
    settings.JWT_PUBLIC_KEY_FILE = str(key_file)
    settings.JWT_ISSUER, settings.JWT_AUDIENCE = ISSUER, AUDIENCE
    return key_file


class JwksServer:
    """The identity provider's key set on a real HTTP server, on a port of the kernel's choosing."""

    def __init__(self, keys: list[dict]):
        self.keys, self.fetches = keys, 0
        self.page: bytes | None = None  # an HTML page answered instead of the keys, when set
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                jwks.fetches += 1
                body = jwks.page or json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if jwks.page else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(settings):
    server = JwksServer([jwk_of(RSA_KEY, "key-1")])
    settings.JWT_JWKS_URL = server.url
    settings.JWT_ISSUER, settings.JWT_AUDIENCE = ISSUER, AUDIENCE
    settings.JWT_STAFF_CLAIM, settings.JWT_STAFF_VALUE = "roles", "darkroom-staff"
    settings.API_KEYS_REQUIRED = True
    yield server
    server.close()


def token(subject: str = "alice", key=RSA_KEY, kid: str = "key-1", algorithm: str = "RS256", **claims) -> str:
    payload = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def unexpiring_token() -> str:
    return jwt.encode(
        {"sub": "x", "iss": ISSUER, "aud": AUDIENCE}, RSA_KEY, "RS256", headers={"kid": "key-1"}
    )


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(credential: str) -> dict:
    return {"Authorization": f"Bearer {credential}"}


def error_code(response) -> str:
    return response.json()["error"]["code"]


@pytest.mark.django_db(transaction=True)
def test_a_token_owns_the_jobs_it_creates_and_no_other_subject_sees_them(client, provider, stub_broker):
    created = submit(client, "blur", headers=bearer(token("alice")))
    assert created.status_code == 202
    job_id = created.json()["job_id"]

    assert Job.objects.get(id=job_id).owner.identity == "token:alice"
    assert client.get(f"/api/v1/jobs/{job_id}", headers=bearer(token("alice"))).status_code == 200
    assert client.get(f"/api/v1/jobs/{job_id}", headers=bearer(token("bob"))).status_code == 404
    listed = client.get("/api/v1/jobs", headers=bearer(token("alice"))).json()
    assert [job["job_id"] for job in listed["jobs"]] == [job_id]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad", "code", "says"),
    [
        (lambda: token(exp=int(time.time()) - 120), "invalid_token", "expired"),
        (lambda: token(aud="another-service"), "invalid_token", "Audience"),
        (lambda: token(iss="https://evil.example.test/"), "invalid_token", "issuer"),
        (lambda: token(key=OTHER_RSA_KEY), "invalid_token", "Signature"),
        (lambda: token(kid="unknown-key"), "invalid_token", "unknown-key"),
        (lambda: token(sub=""), "invalid_token", "sub"),
        (lambda: unexpiring_token(), "invalid_token", "exp"),
    ],
    ids=[
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "wrong-signature",
        "unknown-kid",
        "no-subject",
        "no-expiry",
    ],
)
def test_a_token_that_does_not_hold_is_a_401_saying_why(client, provider, bad, code, says):
    response = client.get("/api/v1/jobs", headers=bearer(bad()))

    assert response.status_code == 401
    assert error_code(response) == code and says in response.json()["error"]["message"]


@pytest.mark.django_db
def test_a_token_signed_with_the_public_key_as_a_shared_secret_is_refused(client, provider):
    """The classic confusion attack: HS256 with the public key as the secret. Built by hand: PyJWT
    itself refuses to sign it."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64url(json.dumps({"alg": "HS256", "kid": "key-1", "typ": "JWT"}).encode())
    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    body = base64url(json.dumps(claims).encode())
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()

    response = client.get("/api/v1/jobs", headers=bearer(f"{header}.{body}.{base64url(signature)}"))

    assert response.status_code == 401 and error_code(response) == "invalid_token"


@pytest.mark.django_db
def test_the_staff_claim_makes_a_token_staff(client, provider):
    staff = bearer(token("ops", roles=["viewer", "darkroom-staff"]))
    assert client.get("/api/v1/files/stats", headers=staff).status_code == 200
    assert (
        client.get("/api/v1/files/stats", headers=bearer(token("ops", roles=["viewer"]))).status_code == 403
    )


@pytest.mark.django_db
def test_keys_are_fetched_once_and_a_made_up_key_id_does_not_fetch_them_again(client, provider):
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 200
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 200
    assert provider.fetches == 1

    for attempt in range(3):
        assert client.get("/api/v1/jobs", headers=bearer(token(kid=f"made-up-{attempt}"))).status_code == 401
    assert provider.fetches == 1  # within the cool-down after a fetch, unknown ids fetch nothing


@pytest.mark.django_db
def test_a_key_the_provider_added_is_fetched_when_a_token_names_it(client, provider, monkeypatch):
    monkeypatch.setattr(tokens, "REFETCH_COOLDOWN_SECONDS", 0)  # a provider rotating its keys
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 200
    provider.keys.append(jwk_of(OTHER_RSA_KEY, "key-2"))

    assert (
        client.get("/api/v1/jobs", headers=bearer(token(key=OTHER_RSA_KEY, kid="key-2"))).status_code == 200
    )
    assert provider.fetches == 2


@pytest.mark.django_db
def test_an_unreachable_provider_is_a_503_not_a_401(client, provider, settings):
    provider.close()
    settings.JWT_JWKS_URL = provider.url.replace("/.well-known", "/gone/.well-known")  # a fresh client

    response = client.get("/api/v1/jobs", headers=bearer(token()))

    assert response.status_code == 503 and error_code(response) == "token_keys_unavailable"


@pytest.mark.django_db
def test_es256_tokens_verify_against_a_key_file(client, settings, tmp_path):
    trust_key_file(settings, tmp_path, pem_of(EC_KEY))

    assert client.get("/api/v1/jobs", headers=bearer(token(key=EC_KEY, algorithm="ES256"))).status_code == 200
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 401  # an RS256 key of another


# --- Tried as an attacker would -----------------------------------------------------------


def forged(algorithm: str, kid: str) -> str:
    """A token no key signed: a header naming `algorithm` and `kid`, good claims, the signature AAAA."""
    header = base64url(json.dumps({"alg": algorithm, "kid": kid, "typ": "JWT"}).encode())
    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    return f"{header}.{base64url(json.dumps(claims).encode())}.AAAA"


@pytest.mark.django_db
def test_a_key_the_provider_removed_is_not_trusted_once_the_keys_are_kept_no_longer(
    client, provider, settings
):
    settings.JWT_JWKS_CACHE_SECONDS = 1
    provider.keys.append(jwk_of(OTHER_RSA_KEY, "key-2"))
    signed_by_key_2 = bearer(token(key=OTHER_RSA_KEY, kid="key-2"))
    assert client.get("/api/v1/jobs", headers=signed_by_key_2).status_code == 200

    provider.keys = [jwk_of(RSA_KEY, "key-1")]  # key-2 withdrawn, say leaked
    time.sleep(1.2)  # past JWT_JWKS_CACHE_SECONDS
    response = client.get("/api/v1/jobs", headers=signed_by_key_2)

    assert response.status_code == 401 and error_code(response) == "invalid_token"
    assert "key-2" in response.json()["error"]["message"]
    assert provider.fetches == 2
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("algorithm", "kid"), [("ES256", "key-1"), ("RS256", "ec-1")], ids=["es256-rsa-key", "rs256-ec-key"]
)
def test_a_forged_token_naming_a_key_of_another_kind_is_a_401(client, provider, algorithm, kid):
    provider.keys.append(jwk_of(EC_KEY, "ec-1"))

    response = client.get("/api/v1/jobs", headers=bearer(forged(algorithm, kid)))

    assert response.status_code == 401 and error_code(response) == "invalid_token"
    assert f"algorithm {algorithm} does not fit" in response.json()["error"]["message"]
    genuine = token(key=EC_KEY, kid="ec-1", algorithm="ES256")
    assert client.get("/api/v1/jobs", headers=bearer(genuine)).status_code == 200


@pytest.mark.django_db
def test_a_key_set_url_answering_with_a_page_is_a_503_not_a_500(client, provider):
    provider.page = b"<html><body>Sign in</body></html>"

    response = client.get("/api/v1/jobs", headers=bearer(token()))

    assert response.status_code == 503 and error_code(response) == "token_keys_unavailable"


@pytest.mark.django_db(transaction=True)
def test_a_subject_longer_than_the_job_row_holds_is_refused_never_cut(client, provider, stub_broker):
    response = submit(client, "blur", headers=bearer(token("x" * 255 + "A" * 45)))

    assert response.status_code == 401 and error_code(response) == "invalid_token"
    assert "longer than 255 characters" in response.json()["error"]["message"]
    assert not Job.objects.exists()


def test_no_owner_holds_a_subject_longer_than_the_job_row_does():
    """Wherever an owner is made (a token, a stored identity), never a subject that would be cut."""
    with pytest.raises(SubjectTooLong):
        Owner(subject="x" * 256)
    with pytest.raises(ValueError, match="at most 255"):
        Owner.from_identity("token:" + "x" * 256)
    assert Owner.from_identity("token:" + "x" * 255).subject == "x" * 255


@pytest.mark.django_db(transaction=True)
def test_a_subject_of_255_characters_owns_its_jobs_and_idempotency_keys_whole(client, provider, stub_broker):
    mine, theirs = bearer(token("x" * 254 + "A")), bearer(token("x" * 254 + "B"))
    created = submit(client, "blur", headers={**mine, "Idempotency-Key": "order-1"})
    assert created.status_code == 202
    job_id = created.json()["job_id"]

    again = submit(client, "blur", headers={**mine, "Idempotency-Key": "order-1"})
    assert again.status_code == 202 and again.json()["job_id"] == job_id
    assert client.get(f"/api/v1/jobs/{job_id}", headers=theirs).status_code == 404
    assert submit(client, "blur", headers={**theirs, "Idempotency-Key": "order-1"}).json()["job_id"] != job_id


@pytest.mark.django_db
def test_an_es256_token_against_an_rsa_key_file_is_refused_saying_why(client, settings, tmp_path):
    trust_key_file(settings, tmp_path, pem_of(RSA_KEY))

    response = client.get("/api/v1/jobs", headers=bearer(token(key=EC_KEY, algorithm="ES256")))

    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "the token's algorithm ES256 does not fit the kind of key that checks it"
    )


@pytest.mark.django_db
def test_the_key_file_is_read_again_when_it_changes_and_once_it_is_kept_no_longer(client, settings, tmp_path):
    key_file = trust_key_file(settings, tmp_path, pem_of(RSA_KEY))
    settings.JWT_JWKS_CACHE_SECONDS = 3600
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 200

    key_file.write_bytes(pem_of(OTHER_RSA_KEY))  # the key rotated
    changed = key_file.stat()
    os.utime(key_file, ns=(changed.st_atime_ns, changed.st_mtime_ns + 1_000_000_000))
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 401
    assert client.get("/api/v1/jobs", headers=bearer(token(key=OTHER_RSA_KEY))).status_code == 200

    settings.JWT_JWKS_CACHE_SECONDS = 0  # kept no time at all: a change that kept its time is seen too
    key_file.write_bytes(pem_of(RSA_KEY))
    os.utime(key_file, ns=(changed.st_atime_ns, changed.st_mtime_ns + 1_000_000_000))
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 200


@pytest.mark.django_db
def test_a_key_file_without_a_public_key_is_a_503(client, settings, tmp_path):
    trust_key_file(settings, tmp_path, b"not a key")

    response = client.get("/api/v1/jobs", headers=bearer(token()))

    assert response.status_code == 503 and error_code(response) == "token_keys_unavailable"


@pytest.mark.django_db
def test_api_keys_still_work_beside_tokens(client, provider):
    _, presented = ApiKey.issue("script")
    assert client.get("/api/v1/jobs", headers=bearer(presented)).status_code == 200
    assert client.get("/api/v1/jobs", headers={"X-API-Key": presented}).status_code == 200


def test_tokens_without_issuer_and_audience_fail_the_system_check(settings):
    keys = {"JWT_JWKS_URL": "https://id.example.test/jwks.json"}
    assert "darkroom.E002" in check_errors(settings, **keys)
    named = {"JWT_ISSUER": "https://id.example.test/", "JWT_AUDIENCE": "darkroom"}
    assert "darkroom.E002" not in check_errors(settings, **keys, **named)


# --- Over the WebSocket -------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_token_watches_its_own_jobs_over_the_websocket_and_a_bad_one_is_closed(
    provider, in_memory_layer, anyio_backend
):
    good = WebsocketCommunicator(
        routing.application, "/ws/jobs/", subprotocols=["darkroom", f"darkroom.key.{token('alice')}"]
    )
    connected, protocol = await good.connect()
    assert connected and protocol == "darkroom"
    assert (await good.receive_json_from(timeout=5))["type"] == "jobs.state"
    await good.disconnect()

    expired = token("alice", exp=int(time.time()) - 120)
    bad = WebsocketCommunicator(
        routing.application, "/ws/jobs/", headers=[(b"authorization", f"Bearer {expired}".encode())]
    )
    await bad.connect()
    closed = await bad.receive_output(timeout=5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4401) and "expired" in closed["reason"]


@pytest.fixture(params=["embedded", "redis"])
def live_layer(request, settings):
    """The channel layer of the embedded default (in memory), then of the full stack (Redis)."""
    if request.param == "embedded":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        request.getfixturevalue("redis_layer")


async def watch_jobs(credential: str) -> WebsocketCommunicator:
    """A /ws/jobs/ socket of the token's owner, past its first state."""
    ws = WebsocketCommunicator(
        routing.application, "/ws/jobs/", subprotocols=["darkroom", f"darkroom.key.{credential}"]
    )
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from(timeout=5))["type"] == "jobs.state"
    return ws


@database_sync_to_async
def job_claimed_by_a_worker(subject: str) -> str:
    """A job of the token subject's, claimed: its event goes to the owner's group."""
    job = stored_job(**Owner(subject=subject).fields())
    lifecycle.claim(job.id, "test-host:1:worker")
    return str(job.id)


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    "subject", ["auth0|alice123", "alice@example.com", "ä" * 255], ids=["auth0", "email", "long-unicode"]
)
async def test_a_subject_of_any_characters_hears_its_events_and_closes_no_other_socket(
    provider, live_layer, anyio_backend, subject
):
    other = await watch_jobs(token("bob"))
    mine = await watch_jobs(token(subject))

    job_id = await job_claimed_by_a_worker(subject)

    event = await mine.receive_json_from(timeout=5)
    assert (event["type"], event["job"]["job_id"]) == ("job.processing", job_id)
    assert await other.receive_nothing(timeout=0.3)  # open, and hearing nothing of another's job
    await mine.disconnect()
    await other.disconnect()


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_subjects_that_differ_by_a_colon_and_a_dot_hear_only_their_own_events(
    provider, live_layer, anyio_backend
):
    colon, dot = await watch_jobs(token("alice:x")), await watch_jobs(token("alice.x"))

    job_id = await job_claimed_by_a_worker("alice:x")

    assert (await colon.receive_json_from(timeout=5))["job"]["job_id"] == job_id
    assert await dot.receive_nothing(timeout=0.3)
    await colon.disconnect()
    await dot.disconnect()


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("algorithm", "kid"), [("ES256", "key-1"), ("RS256", "ec-1")], ids=["es256-rsa-key", "rs256-ec-key"]
)
async def test_a_forged_token_closes_its_socket_with_a_close_code(
    provider, in_memory_layer, anyio_backend, algorithm, kid
):
    provider.keys.append(jwk_of(EC_KEY, "ec-1"))
    ws = WebsocketCommunicator(
        routing.application, "/ws/jobs/", subprotocols=["darkroom", f"darkroom.key.{forged(algorithm, kid)}"]
    )
    await ws.connect()

    closed = await ws.receive_output(timeout=5)

    assert (closed["type"], closed["code"]) == ("websocket.close", 4401)
    assert "does not fit" in closed["reason"]


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_socket_is_closed_with_4401_once_its_token_expires(
    provider, in_memory_layer, anyio_backend, monkeypatch
):
    monkeypatch.setattr(reauthentication, "RECHECK_SECONDS", 0.05)
    expires = int(time.time()) + 300
    ws = WebsocketCommunicator(
        routing.application, "/ws/jobs/", subprotocols=["darkroom", f"darkroom.key.{token(exp=expires)}"]
    )
    assert (await ws.connect())[0] and (await ws.receive_json_from(timeout=5))["type"] == "jobs.state"
    assert await ws.receive_nothing(timeout=0.2)  # re-checked, and still valid

    # As the API would, refused once past its expiry and the clocks' leeway.
    monkeypatch.setattr(reauthentication, "clock", lambda: expires + tokens.LEEWAY_SECONDS)
    closed = await ws.receive_output(timeout=1)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4401)
    assert closed["reason"] == "the token has expired"
