from processing.callbacks import deliveries
from processing.jobs import publishing
from processing.management.repeating import RepeatingCommand


class Command(RepeatingCommand):
    help = (
        "Re-publish jobs whose message never reached the broker, queued jobs nobody claimed for "
        "REQUEUE_STALE_AFTER_SECONDS, and jobs whose worker died; send again the callbacks whose "
        "message was lost. Duplicates are harmless."
    )

    def run_once(self) -> None:
        count = publishing.republish_stale()
        self.stdout.write(f"re-published {count} stale job(s)")
        resent = deliveries.resend_overdue()
        if resent:
            self.stdout.write(f"sent {resent} overdue callback(s) again")
