"""Bearer tokens (JWTs) signed by an identity provider: checked against its JWKS, served over real
HTTP, or a key file; the owner and staff claims; over the API and the WebSocket."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import tokens
from gateway.live import reauthentication, routing
from gateway.models import ApiKey
from processing.models import Job
from tests.test_settings import check_errors
from tests.uploads import submit

ISSUER, AUDIENCE = "https://id.example.test/", "darkroom"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk_of(private_key, kid: str) -> dict:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


class JwksServer:
    """The identity provider's key set on a real HTTP server, on a port of the kernel's choosing."""

    def __init__(self, keys: list[dict]):
        self.keys, self.fetches = keys, 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
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
    key_file = tmp_path / "provider.pem"
    key_file.write_bytes(
        EC_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings.JWT_PUBLIC_KEY_FILE = str(key_file)
    settings.JWT_ISSUER, settings.JWT_AUDIENCE = ISSUER, AUDIENCE

    assert client.get("/api/v1/jobs", headers=bearer(token(key=EC_KEY, algorithm="ES256"))).status_code == 200
    assert client.get("/api/v1/jobs", headers=bearer(token())).status_code == 401  # an RS256 key of another


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
