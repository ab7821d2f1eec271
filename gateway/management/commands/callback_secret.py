from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway.models import KEY_PREFIX, ApiKey
from processing.callbacks import addresses, signing, targets
from processing.errors import CallbackRefused
from processing.owners import Owner


class Command(BaseCommand):
    help = (
        "Issue a new callback secret for an API key (or a token's owner) and print it once; the one "
        "before it keeps signing beside it for a day. With --default-url, also set where the key's jobs "
        "send their callbacks when a submission names none."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "key", nargs="?", help="the API key: its prefix, or the whole key (dk_<prefix>_...)"
        )
        parser.add_argument("--owner", help="instead of a key, an owner identity such as token:alice")
        parser.add_argument("--default-url", help="the key's default callback URL ('' clears it)")

    def handle(
        self, *args: Any, key: str | None, owner: str | None, default_url: str | None, **options: Any
    ) -> None:
        if (key is None) == (owner is None):
            raise CommandError("name an API key, or an owner with --owner")
        if owner is not None:
            if default_url is not None:
                raise CommandError("--default-url is an API key's: a token's owner names its URL per job")
            identity = checked_owner(owner)
        else:
            api_key = find_key(key or "")
            if default_url is not None:
                set_default_url(api_key, default_url)
                self.stderr.write(f"{api_key}: default callback URL {'set' if default_url else 'cleared'}.")
            identity = Owner(key=str(api_key.pk)).identity
        secret = signing.issue(identity)
        self.stderr.write(f"New callback secret for {identity}. Store it now: it is not shown again.")
        self.stdout.write(secret)


def find_key(named: str) -> ApiKey:
    prefix = named.split("_")[1] if named.startswith(f"{KEY_PREFIX}_") else named
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise CommandError(f"no API key has the prefix {prefix!r}")
    return key


def checked_owner(identity: str) -> str:
    try:
        return Owner.from_identity(identity).identity
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def check_url(url: str) -> None:
    """A default callback URL is checked as a submission's would be; an empty one clears it."""
    if url:
        try:
            targets.check(url, addresses.networks(settings.CALLBACK_ALLOWED_NETWORKS))
        except CallbackRefused as exc:
            raise CommandError(exc.message) from None


def set_default_url(key: ApiKey, url: str) -> None:
    check_url(url)
    key.callback_url = url
    key.save(update_fields=["callback_url"])
