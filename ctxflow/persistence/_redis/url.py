"""Redis URLs: one server (``redis://``, ``rediss://``, ``unix://``) or a cluster
(``redis+cluster://``, ``rediss+cluster://``), with ctxflow's own options in the query.

``redis+cluster://[user:password@]host:port[/0]`` names one *seed* node: the
client asks it for the cluster's layout and finds the other nodes itself. A
cluster has only database 0, so any other path is refused. The query
parameters ``tenant``, ``replicas``, ``replica_timeout`` and ``ttl`` are
ctxflow's (taken out before the rest of the URL goes to redis-py); every other
query parameter is redis-py's (``socket_timeout``, ``ssl_cert_reqs``, ...).

Every malformed URL is a :class:`~ctxflow.errors.StoreError` with
``rule="redis_url"``, raised before any connection is made.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ctxflow.errors import StoreError
from ctxflow.persistence._names import redact
from ctxflow.persistence._redis.failures import REDIS_ERRORS

__all__ = ["CLUSTER_SCHEMES", "SERVER_SCHEMES", "RedisURL", "parse_redis_url"]

#: Schemes of one server, as redis-py reads them.
SERVER_SCHEMES = ("redis", "rediss", "unix")
#: Schemes of a cluster, and the scheme of its seed node for redis-py.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Query parameters that are ctxflow's options, not redis-py's.
STORE_OPTIONS = ("tenant", "replicas", "replica_timeout", "ttl")


@attrs.frozen(kw_only=True)
class RedisURL:
    """A checked Redis URL: what redis-py gets, whether it is a cluster, ctxflow's options."""

    redis_url: str
    cluster: bool
    options: dict[str, str]

    def client(self, **redis_kwargs: Any) -> Any:
        """A new client (``redis.Redis`` or ``redis.RedisCluster``) for this URL.

        On one server redis-py's own retries are off unless ``retry`` is given
        (a write whose reply was lost may have been applied; resending it
        could apply it twice). A cluster client keeps redis-py's retries: they
        are what follows ``MOVED`` redirects and failovers (docs/stores.md).
        """
        try:
            if self.cluster:
                return redis.RedisCluster.from_url(self.redis_url, **redis_kwargs)
            redis_kwargs.setdefault("retry", Retry(NoBackoff(), 0))
            return redis.Redis.from_url(self.redis_url, **redis_kwargs)
        except (ValueError, TypeError) as exc:
            raise _bad(self.redis_url, str(exc)) from exc
        except REDIS_ERRORS as exc:
            raise StoreError(
                f"Redis at {_safe(self.redis_url)} must answer to open a client "
                f"({type(exc).__name__}: {exc})",
                rule="redis",
                operation="connect",
                redis_error=str(exc),
            ) from exc


def parse_redis_url(url: str) -> RedisURL:
    """Check ``url`` and split ctxflow's options off it (module docstring);
    ``StoreError`` naming the URL's fault."""
    if not isinstance(url, str) or not url:
        raise _bad(url, "a URL must be a non-empty string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(url, str(exc)) from None
    scheme = parts.scheme.lower()
    cluster = scheme in CLUSTER_SCHEMES
    if not cluster and scheme not in SERVER_SCHEMES:
        known = ", ".join(f"{s}://" for s in (*SERVER_SCHEMES, *CLUSTER_SCHEMES))
        raise _bad(url, f"the scheme must be one of {known} (got {parts.scheme!r})")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise _bad(url, f"the query cannot be read ({exc})") from None
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name in STORE_OPTIONS:
            if name in options:
                raise _bad(url, f"the option {name!r} is given twice")
            options[name] = value
        else:
            rest.append((name, value))
    if scheme != "unix" and not parts.hostname:
        raise _bad(url, "a host is required")
    if cluster:
        if parts.path not in ("", "/", "/0") or any(n == "db" and v != "0" for n, v in rest):
            raise _bad(url, f"a cluster has only database 0 (got path {parts.path!r})")
        netloc = parts.netloc if port is not None else f"{parts.netloc}:6379"
        scheme = CLUSTER_SCHEMES[scheme]
        path = ""
    else:
        netloc, path = parts.netloc, parts.path
        db = path.strip("/")
        if scheme != "unix" and db and not db.isdigit():
            raise _bad(url, f"the database must be a number (got path {parts.path!r})")
    query_text = urlencode(rest)
    redis_url = f"{scheme}://{netloc}{path}" + (f"?{query_text}" if query_text else "")
    return RedisURL(redis_url=redis_url, cluster=cluster, options=options)


def _safe(url: object) -> str:
    """The URL as messages show it: quoted, its password hidden."""
    return repr(redact(url)) if isinstance(url, str) else repr(url)


def _bad(url: object, why: str) -> StoreError:
    return StoreError(
        f"'url' must be a usable Redis URL: {why} (got {_safe(url)})",
        rule="redis_url",
        url=_safe(url),
    )
