from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from scaler.backends.local import LocalWorkers
from scaler.backends.processes import SUPERVISE_EVERY, stop_on_signals


class Command(BaseCommand):
    help = (
        "Keep a fixed number of Dramatiq worker processes running (`make worker`): one "
        "`rundramatiq --processes 1` group each, a dead one replaced within a second, the way the "
        "scaler supervises its workers. SIGTERM or SIGINT drains them all (jobs in hand finish), then exits."
    )

    def add_arguments(self, parser):
        parser.add_argument("--processes", type=int, default=1, help="worker processes to keep alive")
        parser.add_argument(
            "--threads", type=int, default=settings.WORKER_THREADS, help="per worker process (WORKER_THREADS)"
        )

    def handle(self, processes: int, threads: int, **options):
        if processes < 1 or threads < 1:
            raise CommandError("need at least one process and one thread")
        stop = stop_on_signals()
        workers = LocalWorkers(threads=threads)
        try:
            workers.scale_to(processes)
            while not stop.wait(SUPERVISE_EVERY):
                workers.supervise()
        finally:
            workers.shutdown()  # drains every group: may take as long as their longest job
