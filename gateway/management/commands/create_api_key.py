from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from gateway.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="who the key is for")
        parser.add_argument("--staff", action="store_true", help="sees every job and may clean up files")

    def handle(self, *args: Any, name: str, staff: bool, **options: Any) -> None:
        key, presented = ApiKey.issue(name, is_staff=staff)
        self.stderr.write(f"Created {key}. Store the key now: it is not shown again.")
        self.stdout.write(presented)
