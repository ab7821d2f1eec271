"""Worker pools: the queues jobs go to, and traffic split between them by weight.

Every job goes to the queue "images" unless TRAFFIC_SPLIT sends its service elsewhere, e.g.
`sobel: images 90, sobel-canary 10` sends a tenth of sobel jobs to the pool of workers that
consume "sobel-canary" (`make worker WORKER_POOL=sobel-canary`, or `manage.py run_workers
--pool` / `scale_workers --pool`), where a canary build of the operation may run. Which pool a
job goes to follows from its id, so a job re-published later goes to the same pool.
"""

import hashlib
import re
import uuid
from dataclasses import dataclass

DEFAULT_POOL = "images"
# Not a pool of jobs: the queue of callback deliveries (processing.callbacks.deliveries), which every
# worker consumes beside its pool's queue (scaler.backends.processes.worker_command).
CALLBACK_QUEUE = "callbacks"
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class SplitError(ValueError):
    """TRAFFIC_SPLIT can't be read; the message says where."""


@dataclass(frozen=True)
class Share:
    pool: str
    weight: int


def parse_split(text: str) -> dict[str, tuple[Share, ...]]:
    """`service: pool weight, pool weight; service: ...` as {service: shares}."""
    split: dict[str, tuple[Share, ...]] = {}
    for part in filter(None, (part.strip() for part in text.split(";"))):
        service, colon, shares = part.partition(":")
        service = service.strip()
        if not colon or not service:
            raise SplitError(f"{part!r}: write `service: pool weight, pool weight`")
        if service in split:
            raise SplitError(f"{service!r} is split twice")
        split[service] = tuple(parse_share(service, share) for share in shares.split(","))
        if sum(share.weight for share in split[service]) == 0:
            raise SplitError(f"{service!r}: the weights add up to 0")
    return split


def parse_share(service: str, text: str) -> Share:
    words = text.split()
    if len(words) != 2 or not words[1].isdigit():
        raise SplitError(f"{service!r}: {text.strip()!r} is not `pool weight` (a name and a whole number)")
    pool, weight = words[0], int(words[1])
    if not POOL_NAME.match(pool):
        raise SplitError(f"{service!r}: pool {pool!r}: use lowercase letters, digits, - and _ (40 at most)")
    if pool == CALLBACK_QUEUE:
        raise SplitError(f"{service!r}: {CALLBACK_QUEUE!r} is the queue of callbacks, not a pool")
    return Share(pool, weight)


def pool_for(split: dict[str, tuple[Share, ...]], service: str, job_id: str | uuid.UUID) -> str:
    """The pool of this job: by weight among its service's shares, the same every time for one id."""
    shares = split.get(service)
    if not shares:
        return DEFAULT_POOL
    total = sum(share.weight for share in shares)
    point = int.from_bytes(hashlib.sha256(str(job_id).encode()).digest()[:8], "big") % total
    for share in shares:
        if point < share.weight:
            return share.pool
        point -= share.weight
    raise AssertionError("unreachable: the point is below the total")


def all_pools(split: dict[str, tuple[Share, ...]]) -> tuple[str, ...]:
    """Every pool named anywhere, the default first."""
    named = {share.pool for shares in split.values() for share in shares}
    return (DEFAULT_POOL, *sorted(named - {DEFAULT_POOL}))
