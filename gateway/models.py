import hashlib
import secrets

from django.db import models
from django.utils import timezone

from processing.models import MAX_CALLBACK_URL_LENGTH

KEY_PREFIX = "dk"


def hash_secret(secret: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    """An API client. The key is shown once at creation; only its hash is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True, help_text="public part, to find the key")
    secret_hash = models.CharField(max_length=64)
    is_staff = models.BooleanField(default=False, help_text="sees every job; may clean up files")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    callback_url = models.CharField(
        max_length=MAX_CALLBACK_URL_LENGTH,
        blank=True,
        help_text="where the key's jobs send their callback when a submission names none",
    )

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.prefix}_…)"

    @classmethod
    def issue(cls, name: str, *, is_staff: bool = False) -> tuple["ApiKey", str]:
        """Create a key; returns it with the full key string, which is never stored."""
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = cls.objects.create(name=name, prefix=prefix, secret_hash=hash_secret(secret), is_staff=is_staff)
        return key, f"{KEY_PREFIX}_{prefix}_{secret}"

    @classmethod
    def find(cls, presented: str) -> "ApiKey | None":
        """The live key matching `presented`, or None."""
        marker, _, rest = presented.partition("_")
        prefix, _, secret = rest.partition("_")
        if marker != KEY_PREFIX or not prefix or not secret:
            return None
        key = cls.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
        if key is None or not secrets.compare_digest(key.secret_hash, hash_secret(secret)):
            return None
        return key
