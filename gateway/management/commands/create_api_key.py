from argparse import ArgumentParser
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from gateway.management.commands.callback_secret import check_url
from gateway.models import ApiKey


class Command(BaseCommand):
    help = (
        "Create an API key and print it once (only its hash is stored). With --callback-url, also its "
        "default callback URL and its callback secret, printed once on the next line."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="who the key is for")
        parser.add_argument("--staff", action="store_true", help="sees every job; may clean up files")
        parser.add_argument(
            "--callback-url", help="where the key's jobs send their callbacks when a submission names none"
        )

    def handle(self, *args: Any, name: str, staff: bool, callback_url: str | None, **options: Any) -> None:
        if callback_url is not None:
            check_url(callback_url)  # before the key is made: a refused URL makes nothing
        key, presented = ApiKey.issue(name, is_staff=staff)
        self.stderr.write(f"Created {key}. Store the key now: it is not shown again.")
        self.stdout.write(presented)
        if callback_url is not None:
            call_command(
                "callback_secret",
                key.prefix,
                default_url=callback_url,
                stdout=self.stdout,
                stderr=self.stderr,
            )
