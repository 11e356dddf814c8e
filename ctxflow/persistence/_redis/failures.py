"""The redis-py exceptions a Redis operation can raise, for one ``except`` clause.

redis-py's cluster client raises :class:`redis.exceptions.RedisClusterException`
(an unreachable cluster, a command it cannot route) beside the
:class:`redis.RedisError` tree; it is not a ``RedisError``, so every place
that turns redis-py failures into ``StoreError`` catches both.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

__all__ = ["REDIS_ERRORS"]

#: Every exception redis-py raises for a failed command, on one server or a cluster.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
