"""Bearer tokens (JWTs) from an identity provider, beside API keys and browser sessions.

A token is accepted when it is signed by one of the provider's keys with an algorithm of
JWT_ALGORITHMS that fits that key (RS* and PS* an RSA key, ES* an EC key), names JWT_ISSUER and
JWT_AUDIENCE, has not expired, and its JWT_OWNER_CLAIM names an owner whole: a subject longer than
the job row holds is refused, never cut, or two subjects would be one owner. JWT_STAFF_CLAIM, if
set, makes it staff. PyJWT does the verifying.

The keys are the provider's key set (JWT_JWKS_URL) or the one key in JWT_PUBLIC_KEY_FILE, each
kept JWT_JWKS_CACHE_SECONDS and no longer, so that a key the provider removed stops being trusted
then. A token naming a key the set lacks fetches it again (at most once per cool-down); the file
is read again as soon as it changes. Keys that can't be had (the provider unreachable or answering
with something other than a key set, a file without a public key) are KeysUnavailable: no token is
accepted until they are back.
"""

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings

from processing.owners import MAX_SUBJECT_LENGTH

# Clocks of the provider and the gateway may differ by this much.
LEEWAY_SECONDS = 30
# A token naming a key not in the fetched set fetches the set again, but not more often than this:
# tokens with made-up key ids must not turn into a flood of requests to the provider.
REFETCH_COOLDOWN_SECONDS = 30
# The kind of key each family of JWT_ALGORITHMS verifies with (project.config allows no others).
KEY_KINDS = {"RS": rsa.RSAPublicKey, "PS": rsa.RSAPublicKey, "ES": ec.EllipticCurvePublicKey}


class InvalidToken(Exception):
    """The token is not one this service accepts; the message says why."""


class KeysUnavailable(Exception):
    """The provider's keys could not be fetched: no token can be checked just now."""


@dataclass(frozen=True)
class TokenOwner:
    subject: str
    is_staff: bool


def enabled() -> bool:
    return bool(settings.JWT_JWKS_URL or settings.JWT_PUBLIC_KEY_FILE)


def looks_like_jwt(credential: str) -> bool:
    """Three base64url parts, the first a JSON header: what no API key looks like."""
    return credential.count(".") == 2 and credential.startswith("eyJ")


def verify(token: str) -> TokenOwner:
    """The owner the token speaks for; InvalidToken saying why it is refused, or KeysUnavailable."""
    try:
        key = signing_key(token)
        refuse_an_algorithm_its_key_does_not_fit(token, key)
        claims = jwt.decode(
            token,
            key,
            algorithms=settings.JWT_ALGORITHMS,
            issuer=settings.JWT_ISSUER,
            audience=settings.JWT_AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.PyJWTError as exc:  # a bad signature, claim, key or algorithm
        raise InvalidToken(f"the token is not valid here: {exc}") from None
    return TokenOwner(owner_subject(claims), is_staff(claims))


def owner_subject(claims: dict[str, Any]) -> str:
    subject = claims.get(settings.JWT_OWNER_CLAIM)
    if not isinstance(subject, str | int) or subject == "":
        raise InvalidToken(f"the token has no {settings.JWT_OWNER_CLAIM!r} claim to name its owner")
    if len(str(subject)) > MAX_SUBJECT_LENGTH:
        raise InvalidToken(
            f"the token's {settings.JWT_OWNER_CLAIM!r} claim is longer than {MAX_SUBJECT_LENGTH} "
            "characters: it can't name an owner here"
        )
    return str(subject)


def is_staff(claims: dict[str, Any]) -> bool:
    if not settings.JWT_STAFF_CLAIM:
        return False
    value: object = claims.get(settings.JWT_STAFF_CLAIM)
    wanted: object = settings.JWT_STAFF_VALUE
    if value is True:
        return True
    if isinstance(value, list):
        return wanted in value
    return value == wanted


def refuse_an_algorithm_its_key_does_not_fit(token: str, key: Any) -> None:
    """Refuses `ES256` naming an RSA key, or `RS256` an EC key: given a key of the wrong kind, PyJWT
    fails with a TypeError (a 500), or with a message that names a generator object."""
    algorithm = jwt.get_unverified_header(token).get("alg")
    if not isinstance(algorithm, str) or algorithm not in settings.JWT_ALGORITHMS:
        return  # jwt.decode refuses it, saying so
    if not isinstance(key, KEY_KINDS.get(algorithm[:2], ())):
        raise InvalidToken(f"the token's algorithm {algorithm} does not fit the kind of key that checks it")


def signing_key(token: str) -> Any:
    """The public key that checks the token: JWT_PUBLIC_KEY_FILE's, or the key set's the token names."""
    if settings.JWT_PUBLIC_KEY_FILE:
        return key_from_file(settings.JWT_PUBLIC_KEY_FILE, settings.JWT_JWKS_CACHE_SECONDS)
    try:
        client = jwks_client(settings.JWT_JWKS_URL, settings.JWT_JWKS_CACHE_SECONDS)
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientError as exc:  # no key with the token's kid, even after fetching again
        raise jwt.InvalidTokenError(str(exc)) from None


# --- The key file ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFileReading:
    modified_ns: int  # the file's modification time when it was read
    read_at: float  # time.monotonic()
    key: Any


_key_files: dict[str, KeyFileReading] = {}  # path -> its last reading


def key_from_file(path: str, keep_seconds: int) -> Any:
    """The public key in the PEM file at `path`, read again when the file changes (a new modification
    time) and at least every `keep_seconds` (a file replaced with its old time kept)."""
    try:
        modified_ns = os.stat(path).st_mtime_ns
        kept = _key_files.get(path)
        if kept is None or kept.modified_ns != modified_ns or time.monotonic() - kept.read_at >= keep_seconds:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
            kept = _key_files[path] = KeyFileReading(modified_ns, time.monotonic(), key)
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise KeysUnavailable(f"JWT_PUBLIC_KEY_FILE holds no public key that can be read: {exc}") from None
    return kept.key


# --- The key set -----------------------------------------------------------------------


class KeySetClient(jwt.PyJWKClient):
    """PyJWKClient, with every way of not getting a usable key set made KeysUnavailable: the provider
    unreachable, or answering with something else than a set of signing keys (an HTML page gets
    through PyJWKClient as a JSONDecodeError)."""

    def get_signing_keys(self, refresh: bool = False) -> list[jwt.PyJWK]:
        try:
            return super().get_signing_keys(refresh)
        except (jwt.PyJWTError, ValueError) as exc:
            raise KeysUnavailable(f"the key set at {self.uri} can't be used: {exc}") from None


@lru_cache(maxsize=4)
def _jwks_client(url: str, cache_seconds: int, cooldown: float) -> KeySetClient:
    # Keys are not cached by id (cache_keys=True keeps them with no expiry, a removed key for ever):
    # each lookup is in the fetched set, which is parsed once and kept cache_seconds.
    return KeySetClient(url, lifespan=max(cache_seconds, 1), timeout=5, cooldown_duration=cooldown)


def jwks_client(url: str, cache_seconds: int) -> KeySetClient:
    """One client per URL: it keeps the fetched keys, and fetches again for a kid it lacks."""
    return _jwks_client(url, cache_seconds, REFETCH_COOLDOWN_SECONDS)
