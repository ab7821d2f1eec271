from django.dispatch import Signal

# Sent after every change of a job's status or progress, with `job` (a Job) and
# `event` ("job.queued", "job.processing", "job.progress", "job.completed",
# "job.failed", "job.cancelled"). The gateway turns these into WebSocket events;
# receivers must not raise: a job never fails because an event could not be sent.
job_changed = Signal()
