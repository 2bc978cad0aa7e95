"""A Redis broker connection that can be lost while tasks run, without the worker dying of it.

With `CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS=False` a worker keeps its tasks running
through a Redis restart. When the consumer then closes the broken connection, kombu's Redis channel
tries to put the running tasks' unacknowledged messages back through a connection whose parameters are
already gone, raises `AttributeError: 'NoneType' object has no attribute 'hostname'` (not one of the
connection errors it ignores there), and Celery stops the worker as "Unrecoverable error" (seen in
`tests/batch/test_faults.py` with celery 5.7 / kombu 5.7). Those messages need no restoring: their tasks
are still running, and a lost batch message is re-announced by maintenance anyway. So that restore is
skipped when the connection is gone, and the consumer reconnects as usual.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)


class QoSSurvivingLostConnection(kombu_redis.QoS):
    def restore_unacked(self, client=None) -> None:
        try:
            super().restore_unacked(client)
        except AttributeError as error:  # the channel's connection is already torn down
            logger.warning(
                "broker connection lost: %d unacknowledged message(s) not restored (%s); their tasks keep running",
                len(self._delivered),
                error,
            )
            self._delivered.clear()


def survive_lost_broker_connections() -> None:
    kombu_redis.Channel.QoS = QoSSurvivingLostConnection
