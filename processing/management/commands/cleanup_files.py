import logging
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from processing import cleanup

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Remove the stored files of jobs finished more than FILE_TTL_SECONDS ago, and stored files "
        "whose job row is gone. With --every, keep doing it: the deployments run it that way."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--every", type=int, default=0, metavar="SECONDS", help="keep running, once per SECONDS"
        )

    def handle(self, *args, every: int, **options):
        while True:
            try:
                done = cleanup.clean_up()
            except Exception:
                if not every:
                    raise
                # The database or the storage is down for now: the next pass catches up.
                logger.exception("clean-up failed; trying again in %d s", every)
            else:
                self.stdout.write(
                    f"removed {done['files_removed']} file(s) of {done['jobs']} expired job(s) "
                    f"({done['bytes_freed']} bytes) and {done['orphans_removed']} orphaned file(s)"
                )
            finally:
                close_old_connections()
            if not every:
                return
            time.sleep(every)
