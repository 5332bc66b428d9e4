"""Broker-specific queue operations (Redis, RabbitMQ, the embedded filesystem transport)."""

from __future__ import annotations

from typing import Any


def purge_queue(app: Any, name: str) -> int:
    """Delete the waiting messages of one queue only and return how many were deleted.

    ``app.control.purge()`` would empty every configured queue, so this goes through the channel of one
    queue instead. On Redis, kombu's ``queue_purge`` also empties the priority sub-queues
    (``name\\x06\\x163`` ...), which hold every message published with a priority above 0. Messages a worker
    has already prefetched (Redis ``unacked``, AMQP unacknowledged) belong to that worker and are not
    touched. A queue the broker does not know has nothing to purge.
    """
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            return int(channel.queue_purge(name) or 0)
        except conn.channel_errors:
            # RabbitMQ answers NOT_FOUND (and closes the channel) for an undeclared queue.
            return 0
