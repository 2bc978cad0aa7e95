"""A worker survives closing a Redis connection that went away while its tasks ran (heavylift/broker.py)."""

from kombu import Connection

from heavylift.broker import QoSSurvivingLostConnection, survive_lost_broker_connections


def test_restoring_unacked_messages_through_a_connection_already_gone_is_skipped(settings):
    survive_lost_broker_connections()
    with Connection(settings.CELERY_BROKER_URL) as broker:
        channel = broker.channel()
        qos = channel.qos
        assert isinstance(qos, QoSSurvivingLostConnection)
        qos._delivered["running-task"] = object()  # a message whose task is still running
        channel._pool = None
        channel.connection.client = None  # what kombu's consumer leaves behind when it drops a broken connection

        qos.restore_unacked_once()  # kombu's own QoS raises AttributeError('... no attribute hostname') here

        assert not qos._delivered
