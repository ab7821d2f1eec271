import logging

from django.db import close_old_connections

from processing.jobs import cleanup
from processing.management.repeating import RepeatingCommand

logger = logging.getLogger(__name__)


class Command(RepeatingCommand):
    help = (
        "Remove the stored files of jobs finished more than FILE_TTL_SECONDS ago, and stored files "
        "whose job row is gone. With --every, keep doing it: the deployments run it that way."
    )

    def run_once(self) -> None:
        try:
            done = cleanup.clean_up()
        except Exception:
            if not self.every:
                raise
            # The database or the storage is down for now: the next pass catches up.
            logger.exception("clean-up failed; trying again in %d s", self.every)
        else:
            self.stdout.write(
                f"removed {done['files_removed']} file(s) of {done['jobs']} expired job(s) "
                f"({done['bytes_freed']} bytes) and {done['orphans_removed']} orphaned file(s)"
            )
        finally:
            close_old_connections()
