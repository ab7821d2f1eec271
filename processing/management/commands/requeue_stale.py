import time

from django.core.management.base import BaseCommand

from processing import publishing


class Command(BaseCommand):
    help = (
        "Re-publish jobs whose message never reached the broker, queued jobs nobody claimed for "
        "REQUEUE_STALE_AFTER_SECONDS, and jobs whose worker died. Duplicates are harmless."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--every", type=int, default=0, metavar="SECONDS", help="keep running, once per SECONDS"
        )

    def handle(self, *args, every: int, **options):
        while True:
            count = publishing.republish_stale()
            self.stdout.write(f"re-published {count} stale job(s)")
            if not every:
                return
            time.sleep(every)
