"""What a job event is, and who hears it: the channel-layer message and its groups.

A WebSocket frame is `{"type": "job.completed", "job": {...}}`, the job's public JSON
(processing.jobs.public); it is encoded once here, for every subscriber. Each event goes to
the job's group, its owner's and the staff's; an event that ends the job also goes to the
group of the long polls (gateway.live.waiting). Events the sender had to drop are followed, once
it can, by a MISSED_MESSAGE_TYPE message to their groups, or to every listener (LISTENERS_GROUP).
"""

import hashlib
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from processing.jobs.public import job_json
from processing.models import Job, JobId

STAFF_GROUP = "jobs.all"
ENDED_GROUP = "jobs.ended"  # only the events that end a job: what long polls wait for
MESSAGE_TYPE = "job.event"  # what the channel layer carries: a message needs a type
# What the sender sends, once it can, to the groups of job events it dropped (processing.events.sender):
# their subscribers give their clients the current state (gateway.live.subscriptions).
MISSED_MESSAGE_TYPE = "job.events_missed"
# The group every listening channel joins (gateway.live.subscriptions): a message to it reaches them all.
LISTENERS_GROUP = "live.listeners"

# The event that says a job has reached a status; and the one that says it got further.
STATUS_EVENTS = {
    Job.QUEUED: "job.queued",
    Job.PROCESSING: "job.processing",
    Job.COMPLETED: "job.completed",
    Job.FAILED: "job.failed",
    Job.CANCELLED: "job.cancelled",
}
PROGRESS_EVENT = "job.progress"


def job_group(job_id: JobId) -> str:
    return f"job.{job_id}"


def owner_group(identity: str) -> str:
    """The group of one owner, named by a hash of its whole identity (processing.owners.Owner.identity).

    Not by the identity itself: a subject may hold any character and up to 255 of them, where the
    channel layer takes group names of ASCII letters, digits, "-", "_" and "." under 100 characters,
    and no two identities may share a group ("token:alice:x" and "token:alice.x" must not)."""
    return "owner." + hashlib.sha256(identity.encode()).hexdigest()[:32]


def groups_for(job: Job) -> list[str]:
    groups = [job_group(job.id), owner_group(job.owner.identity), STAFF_GROUP]
    return [*groups, ENDED_GROUP] if job.status in Job.FINISHED else groups


def event_text(event: str, job: Job) -> str:
    """The WebSocket frame for one event: {"type": "job.completed", "job": {...}}."""
    return json.dumps({"type": event, "job": job_json(job)}, cls=DjangoJSONEncoder)


def event_message(event: str, job: Job) -> dict[str, Any]:
    # The status travels beside the text so consumers can order events without decoding them.
    return {"type": MESSAGE_TYPE, "job_id": str(job.id), "status": job.status, "text": event_text(event, job)}
