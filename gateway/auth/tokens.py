"""Bearer tokens (JWTs) from an identity provider, beside API keys and browser sessions.

A token is accepted when it is signed by one of the provider's keys (JWT_JWKS_URL, fetched and
kept JWT_JWKS_CACHE_SECONDS, or the key in JWT_PUBLIC_KEY_FILE) with a public-key algorithm of
JWT_ALGORITHMS, names JWT_ISSUER and JWT_AUDIENCE, and has not expired. JWT_OWNER_CLAIM names its
owner; JWT_STAFF_CLAIM, if set, makes it staff. PyJWT does the verifying.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from django.conf import settings

# Clocks of the provider and the gateway may differ by this much.
LEEWAY_SECONDS = 30
# A token naming a key not in the fetched set fetches the set again, but not more often than this:
# tokens with made-up key ids must not turn into a flood of requests to the provider.
REFETCH_COOLDOWN_SECONDS = 30


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
        claims = jwt.decode(
            token,
            signing_key(token),
            algorithms=settings.JWT_ALGORITHMS,
            issuer=settings.JWT_ISSUER,
            audience=settings.JWT_AUDIENCE,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWKClientConnectionError as exc:
        raise KeysUnavailable(str(exc)) from None
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.PyJWTError as exc:  # a bad signature, claim, key or algorithm
        raise InvalidToken(f"the token is not valid here: {exc}") from None
    subject = claims.get(settings.JWT_OWNER_CLAIM)
    if not isinstance(subject, str | int) or subject == "":
        raise InvalidToken(f"the token has no {settings.JWT_OWNER_CLAIM!r} claim to name its owner")
    return TokenOwner(str(subject)[:255], is_staff(claims))


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


def signing_key(token: str) -> Any:
    """What jwt.decode verifies with: the PEM text of JWT_PUBLIC_KEY_FILE, or the JWKS key object."""
    if settings.JWT_PUBLIC_KEY_FILE:
        return key_from_file(settings.JWT_PUBLIC_KEY_FILE)
    try:
        client = jwks_client(settings.JWT_JWKS_URL, settings.JWT_JWKS_CACHE_SECONDS)
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError:
        raise
    except jwt.PyJWKClientError as exc:  # no key with the token's kid, even after fetching again
        raise jwt.InvalidTokenError(str(exc)) from None


@lru_cache(maxsize=4)
def key_from_file(path: str) -> str:
    return Path(path).read_text()


@lru_cache(maxsize=4)
def _jwks_client(url: str, cache_seconds: int, cooldown: float) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(
        url, cache_keys=True, lifespan=max(cache_seconds, 1), timeout=5, cooldown_duration=cooldown
    )


def jwks_client(url: str, cache_seconds: int) -> jwt.PyJWKClient:
    """One client per URL: it keeps the fetched keys, and fetches again for a kid it lacks."""
    return _jwks_client(url, cache_seconds, REFETCH_COOLDOWN_SECONDS)
