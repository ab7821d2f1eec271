"""Commands that the deployments run on a schedule of their own: one pass, or one every --every seconds."""

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand


class RepeatingCommand(BaseCommand):
    """`run_once()` once, or with `--every SECONDS` once per interval for as long as the process lives."""

    every = 0

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--every", type=int, default=0, metavar="SECONDS", help="keep running, once per SECONDS"
        )

    def handle(self, *args: Any, every: int, **options: Any) -> None:
        self.every = every
        while True:
            self.run_once()
            if not every:
                return
            time.sleep(every)

    def run_once(self) -> None:
        raise NotImplementedError
