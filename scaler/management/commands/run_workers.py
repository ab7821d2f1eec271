from django.conf import settings
from django.core.management.base import BaseCommand

from project import config
from scaler.backends.local import LocalWorkers
from scaler.backends.processes import SUPERVISE_EVERY, stop_on_signals
from scaler.flags import add_setting_flag


class Command(BaseCommand):
    help = (
        "Keep a fixed number of Dramatiq worker processes running (`make worker`): one "
        "`dramatiq --processes 1` group each, a dead one replaced within a second, the way the "
        "scaler supervises its workers. SIGTERM or SIGINT drains them all (jobs in hand finish), then exits."
    )

    def add_arguments(self, parser):
        for name in ("WORKER_PROCESSES", "WORKER_THREADS", "WORKER_POOL"):
            add_setting_flag(parser, config.BY_NAME[name], getattr(settings, name))

    def handle(self, **options):
        processes, threads = options["WORKER_PROCESSES"], options["WORKER_THREADS"]
        stop = stop_on_signals()
        workers = LocalWorkers(threads=threads, pool=options["WORKER_POOL"])
        try:
            workers.scale_to(processes)
            while not stop.wait(SUPERVISE_EVERY):
                workers.supervise()
        finally:
            workers.shutdown()  # drains every group: may take as long as their longest job
