"""Per-node queue naming: only chunk ids travel, on the queue of the node that owns the job.

On the Redis broker a queue is one list per priority step (CELERY_BROKER_TRANSPORT_OPTIONS
"priority_steps"), and kombu serves the lower step first: the list named as the queue holds step 0,
`<queue>\\x06\\x16<step>` the others. New work is announced at NEW_WORK_PRIORITY; work announced again (a
retry after an error or a lost worker, a lost message, a re-homed job) at AGAIN_PRIORITY, so it runs next
instead of waiting for the node's backlog of new work to drain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import redis

AGAIN_PRIORITY = 0  # served first, with every message that has no priority
NEW_WORK_PRIORITY = 9
PRIORITY_SEPARATOR = "\x06\x16"  # kombu.transport.redis.Channel.sep


def work_notification_queue(node_id: str | None = None, module_id: str | None = None) -> str:
    """`batch2-work-notification-<nodeId>-<moduleId>`, with periods for hyphens when configured."""
    name = f"batch2-work-notification-{node_id or settings.NODE_ID}-{module_id or settings.MODULE_ID}"
    if settings.REPLACE_HYPHENS_WITH_PERIODS:
        name = name.replace("-", ".")
    return name


def declared_work_notification_queues() -> list[str]:
    """Every node's queue that a worker has declared on the Redis broker, sorted (those of nodes since gone
    too): kombu keeps a queue's binding in the set `_kombu.binding.<exchange>`, a member per bound queue
    (`routing key`, `pattern`, `queue`, joined by PRIORITY_SEPARATOR), whether or not messages wait in it."""
    prefix = "batch2.work.notification." if settings.REPLACE_HYPHENS_WITH_PERIODS else "batch2-work-notification-"
    client = _broker_client()
    try:
        keys = list(client.scan_iter(match=b"_kombu.binding.*", count=1000))
        with client.pipeline(transaction=False) as pipeline:
            for key in keys:
                pipeline.smembers(key)
            bindings = pipeline.execute()
    finally:
        client.close()
    queues = {member.decode().rsplit(PRIORITY_SEPARATOR, 1)[-1] for members in bindings for member in members}
    return sorted(queue for queue in queues if queue.startswith(prefix))


def broker_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's waiting messages: work announced again first, then new work."""
    return [
        queue if priority == 0 else f"{queue}{PRIORITY_SEPARATOR}{priority}"
        for priority in (AGAIN_PRIORITY, NEW_WORK_PRIORITY)
    ]


def pending_notifications(queue: str) -> int:
    """Messages waiting in a node's queue on the Redis broker (not counting those a worker holds)."""
    return pending_notifications_of([queue])[queue]


def pending_notifications_of(queues: list[str]) -> dict[str, int]:
    """`pending_notifications` of several queues in one round trip on one connection (the dashboard's nodes)."""
    client = _broker_client()
    try:
        with client.pipeline(transaction=False) as pipeline:
            for queue in queues:
                for name in broker_lists(queue):
                    pipeline.llen(name)
            lengths = iter(pipeline.execute())
            return {queue: sum(next(lengths) for _ in broker_lists(queue)) for queue in queues}
    finally:
        client.close()


def broker_is_reachable() -> bool:
    """The broker answers a PING within REDIS_SOCKET_TIMEOUT_SECONDS (False, not an exception, when it does not)."""
    import redis

    client = _broker_client()
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _broker_client() -> redis.Redis:
    """A client of the broker with the socket timeouts of the settings: a vanished Redis fails a call in seconds."""
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL, **settings.REDIS_CLIENT_OPTIONS)


def discard_notifications(queue: str) -> int:
    """Delete a node's queue from the Redis broker (both priority lists); return how many messages it held.

    For the queue of a dead node whose jobs have all moved: nothing will consume it, and every chunk its
    messages announced was announced again on the jobs' new node."""
    client = _broker_client()
    try:
        with client.pipeline(transaction=True) as pipeline:
            for name in broker_lists(queue):
                pipeline.llen(name)
            pipeline.delete(*broker_lists(queue))
            *lengths, _ = pipeline.execute()
        return sum(lengths)
    finally:
        client.close()
