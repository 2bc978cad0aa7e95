"""Per-node queue naming: only chunk ids travel, on the queue of the node that owns the job."""
from django.conf import settings


def work_notification_queue(node_id: str | None = None, module_id: str | None = None) -> str:
    """`batch2-work-notification-<nodeId>-<moduleId>`, with periods for hyphens when configured."""
    name = f"batch2-work-notification-{node_id or settings.NODE_ID}-{module_id or settings.MODULE_ID}"
    if settings.REPLACE_HYPHENS_WITH_PERIODS:
        name = name.replace("-", ".")
    return name


def pending_notifications(queue: str) -> int:
    """Messages waiting in a node's queue on the Redis broker (not counting those a worker holds)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        return client.llen(queue)
    finally:
        client.close()


def pending_notifications_of(queues: list[str]) -> dict[str, int]:
    """`pending_notifications` of several queues in one round trip on one connection (the dashboard's nodes)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        with client.pipeline(transaction=False) as pipeline:
            for queue in queues:
                pipeline.llen(queue)
            return dict(zip(queues, pipeline.execute()))
    finally:
        client.close()
