"""Stores by URL: one string names a backend and where it lives.

=================================  ==============================================
``memory``                         a :class:`MemoryStore` (nothing kept after the process)
a path (``runs.sqlite``)           a :class:`SQLiteStore` in that file
``sqlite:///runs.sqlite``          the same, a relative path (three slashes)
``sqlite:////var/ctxflow/r.db``    the same, an absolute path (four slashes)
``redis://host:6379/0``            a :class:`RedisStore` (``rediss://`` for TLS)
``redis+cluster://host:7000``      a :class:`RedisStore` on Redis Cluster, from a seed node
``postgresql://user@host/db``      a :class:`PostgresStore` (``postgres://`` too)
=================================  ==============================================

The ``sqlite:`` form is SQLAlchemy's: what follows the third slash is the path.
Redis and PostgreSQL URLs take two query parameters of ctxflow's own, removed
before the URL reaches the client: ``tenant`` (default ``default``) and, for
PostgreSQL, ``schema`` (default ``ctxflow``); every other part goes to
redis-py or libpq as it is (libpq's ``connect_timeout`` also bounds how long
opening waits for the first connection, 10 s by default). A password in a URL
is never repeated in an error or in :attr:`StoreURL.shown`.

:func:`parse_store_url` checks a URL without opening anything, so a command
can refuse a bad one before it does any work; :func:`open_store` parses and
opens. A malformed URL, an unknown scheme or an unsupported backend raises
:class:`~ctxflow.errors.StoreURLError` naming the URL, and nothing is created:
no file, no folder, no connection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import attrs

from ctxflow.errors import StoreError, StoreURLError
from ctxflow.persistence import BaseStore, MemoryStore
from ctxflow.persistence._names import check_schema, check_tenant, redact
from ctxflow.persistence._sqlite import SQLiteStore

__all__ = ["SCHEMES", "StoreKind", "StoreURL", "open_store", "parse_store_url"]

StoreKind = Literal["memory", "sqlite", "redis", "redis-cluster", "postgres"]

#: The URL schemes understood, and the backend each names.
SCHEMES: dict[str, StoreKind] = {
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "redis+cluster": "redis-cluster",
    "rediss+cluster": "redis-cluster",
    "postgresql": "postgres",
    "postgres": "postgres",
}
# A URL scheme as RFC 3986 spells it, then ":": sqlite:///x, postgresql://h/db, redis://h.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# A Windows drive ("C:\\x", "C:/x") is a path, not a URL of scheme "c".
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
#: The query parameters ctxflow reads itself, by backend.
_OWN = {"redis": ("tenant",), "redis-cluster": ("tenant",), "postgres": ("tenant", "schema")}


@attrs.frozen(kw_only=True)
class StoreURL:
    """A checked store URL: which backend, and what it needs to open it.

    ``target`` is the SQLite path or the client's URL (ctxflow's own query
    parameters removed); ``options`` holds those (``tenant``, ``schema``).
    """

    kind: StoreKind
    target: str = attrs.field(default="", repr=lambda value: repr(redact(value)))
    options: dict[str, str] = attrs.field(factory=dict)
    given: str = attrs.field(default="", repr=False)

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for other backends)."""
        return Path(self.target) if self.kind == "sqlite" else None

    @property
    def shown(self) -> str:
        """The URL as it may be printed: with any password replaced by ``***``."""
        return redact(self.given)

    def open(self, *, read_only: bool = False) -> BaseStore:
        """Open the store (``read_only``: never write; SQLite and PostgreSQL only, where the
        store must exist already)."""
        if self.kind == "memory":
            return MemoryStore()
        if self.kind == "sqlite":
            return SQLiteStore(self.target, read_only=read_only)
        if self.kind in ("redis", "redis-cluster"):  # RedisStore.from_url picks the client
            with self._extra("redis"):
                from ctxflow.persistence._redis import RedisStore

            return self._redis(RedisStore.from_url)
        with self._extra("postgres"):
            from ctxflow.persistence._postgres import PostgresStore

        # libpq's connect_timeout, when given, also bounds the wait for the pool's first
        # connection (which otherwise retries for 10 s).
        query = dict(parse_qsl(urlsplit(self.target).query))
        wait = query.get("connect_timeout", "")
        return PostgresStore.from_url(
            self.target,
            tenant=self.options.get("tenant", "default"),
            schema=self.options.get("schema", "ctxflow"),
            read_only=read_only,
            timeout=float(wait) if wait.isdigit() and int(wait) > 0 else 10.0,
        )

    def _redis(self, from_url: Callable[..., BaseStore]) -> BaseStore:
        """A Redis store from this URL; a URL or option the store refuses is a StoreURLError."""
        try:
            return from_url(self.target, tenant=self.options.get("tenant", "default"))
        except StoreError as exc:
            if exc.rule != "redis_url":
                raise
            raise StoreURLError(
                f"a Redis store URL must be one the Redis store reads (got {self.shown!r}: "
                f"{exc.message})",
                rule="store_url",
                url=self.shown,
            ) from None

    @contextmanager
    def _extra(self, extra: str) -> Iterator[None]:
        """Turn the absence of a backend's client library into a StoreURLError naming the
        extra that brings it."""
        try:
            yield
        except ImportError as exc:
            raise StoreURLError(
                f"a {self.kind} store URL needs the '{extra}' extra "
                f"(pip install 'ctxflow[{extra}]'; got {self.shown!r}: {exc})",
                rule="store_extra",
                url=self.shown,
                extra=extra,
            ) from None


def parse_store_url(value: str | os.PathLike[str]) -> StoreURL:
    """Check a store URL or path (module docstring) without opening anything."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise StoreURLError(
            f"a store must be named by a URL or a path (got {value!r})",
            rule="store_url",
            url=str(value),
        )
    if value == "memory":
        return StoreURL(kind="memory", given=value)
    match = _SCHEME.match(value)
    scheme = match.group(1).lower() if match else ""
    # A URL has "://" or a scheme of ours ("postgresql:x"); anything else is a path,
    # colons and Windows drives included.
    if (
        match is None
        or _DRIVE.match(value)
        or not (value[match.end() :].startswith("//") or scheme in SCHEMES)
    ):
        return StoreURL(kind="sqlite", target=value, given=value)
    kind = SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise StoreURLError(
            f"a store URL must be 'memory', a path, or one of {known} "
            f"(got {redact(value)!r}: unknown scheme {scheme!r})",
            rule="store_url",
            url=redact(value),
            scheme=scheme,
        )
    if kind == "sqlite":
        return _sqlite(value)
    if not value[match.end() :].startswith("//"):
        raise StoreURLError(
            f"a {scheme} store URL must be {scheme}://… (got {redact(value)!r})",
            rule="store_url",
            url=redact(value),
        )
    return _server(value, kind)


def open_store(url: str | os.PathLike[str], *, read_only: bool = False) -> BaseStore:
    """The store a URL or path names, opened (see the module docstring for the forms).

    ``read_only`` opens a SQLite or PostgreSQL store that must exist already and
    is never written. Raises :class:`~ctxflow.errors.StoreURLError` for a bad
    or unsupported URL, before anything is created.
    """
    return parse_store_url(url).open(read_only=read_only)


def _sqlite(value: str) -> StoreURL:
    if not value.lower().startswith("sqlite:///") or len(value) == len("sqlite:///"):
        raise StoreURLError(
            f"a SQLite store URL must be sqlite:///relative/path or sqlite:////absolute/path "
            f"(got {value!r})",
            rule="store_url",
            url=value,
        )
    path = value[len("sqlite:///") :]
    if "?" in path or "#" in path:
        raise StoreURLError(
            f"a SQLite store URL takes no query or fragment (got {value!r})",
            rule="store_url",
            url=value,
        )
    return StoreURL(kind="sqlite", target=path, given=value)


def _server(value: str, kind: StoreKind) -> StoreURL:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading it checks it
    except ValueError as exc:
        raise StoreURLError(
            f"a store URL must be well formed (got {redact(value)!r}: {exc})",
            rule="store_url",
            url=redact(value),
        ) from None
    if not parts.hostname and kind != "postgres":
        raise StoreURLError(
            f"a {parts.scheme}:// store URL must name a host (got {redact(value)!r})",
            rule="store_url",
            url=redact(value),
        )
    own = _OWN[kind]
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, item in parse_qsl(parts.query, keep_blank_values=True):
        if name in own:
            options[name] = item
        else:
            rest.append((name, item))
    target = urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote)))
    url = StoreURL(kind=kind, target=target, options=options, given=value)
    _check_options(url)
    if kind == "redis-cluster" and parts.path not in ("", "/", "/0"):
        raise StoreURLError(
            f"a Redis Cluster store URL names database 0 or none: a cluster has only "
            f"database 0 (got {url.shown!r})",
            rule="store_url",
            url=url.shown,
        )
    return url


def _check_options(url: StoreURL) -> None:
    """Refuse a tenant or schema name the store would refuse, before anything opens."""
    try:
        if "tenant" in url.options:
            check_tenant(url.options["tenant"])
        if "schema" in url.options:
            check_schema(url.options["schema"])
    except StoreError as exc:
        raise StoreURLError(
            f"store URL {url.shown!r}: {exc.message}", rule=exc.rule, url=url.shown
        ) from None
