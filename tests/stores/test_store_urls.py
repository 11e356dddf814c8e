"""Stores by URL: what each form names, what is refused (creating nothing), and opening each
backend for real."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ctxflow.errors import StoreError, StoreURLError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, restore
from ctxflow.stores import MemoryStore, SQLiteStore, StoreURL, open_store, parse_store_url

REDIS_URL = "redis://127.0.0.1:6379/0"
REQUIRE_REDIS = os.environ.get("CTXFLOW_REQUIRE_REDIS") == "1"


@pytest.mark.parametrize(
    ("given", "kind", "target", "options"),
    [
        ("memory", "memory", "", {}),
        ("runs.sqlite", "sqlite", "runs.sqlite", {}),
        ("/var/data/runs.sqlite", "sqlite", "/var/data/runs.sqlite", {}),
        ("odd:name.db", "sqlite", "odd:name.db", {}),
        ("C:\\data\\runs.db", "sqlite", "C:\\data\\runs.db", {}),
        ("sqlite:///runs.sqlite", "sqlite", "runs.sqlite", {}),
        ("sqlite:////var/runs.sqlite", "sqlite", "/var/runs.sqlite", {}),
        ("redis://127.0.0.1:6379/0", "redis", "redis://127.0.0.1:6379/0", {}),
        ("rediss://h:6380/1?tenant=acme", "redis", "rediss://h:6380/1", {"tenant": "acme"}),
        ("redis+cluster://h:7000", "redis-cluster", "redis+cluster://h:7000", {}),
        ("postgresql://u@h/db", "postgres", "postgresql://u@h/db", {}),
        (
            "postgres://u@h:5433/db?tenant=t1&schema=cf&sslmode=disable",
            "postgres",
            "postgres://u@h:5433/db?sslmode=disable",
            {"tenant": "t1", "schema": "cf"},
        ),
    ],
)
def test_each_form_names_its_backend(
    given: str, kind: str, target: str, options: dict[str, str]
) -> None:
    """Each URL form gives its backend, the client's URL without ctxflow's own parameters,
    and those parameters."""
    url = parse_store_url(given)
    assert (url.kind, url.target, url.options) == (kind, target, options)


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("", "store_url"),
        ("ftp://host/runs", "store_url"),
        ("mysql://root@127.0.0.1/test", "store_url"),
        ("sqlite://host/runs.sqlite", "store_url"),
        ("sqlite:///", "store_url"),
        ("sqlite:///runs.sqlite?mode=ro", "store_url"),
        ("redis://", "store_url"),
        ("redis://h:99999/0", "store_url"),
        ("postgresql://h/db?tenant=a%20b", "tenant"),
        ("postgresql://h/db?schema=Bad-Name", "postgres_schema"),
        ("postgresql:", "store_url"),
    ],
)
def test_bad_urls_are_refused_creating_nothing(
    given: str, rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed URL or an unknown scheme is a StoreURLError (a StoreError and a ValueError)
    naming the URL, and no file or folder appears."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreURLError) as info:
        open_store(given)
    assert info.value.rule == rule
    assert isinstance(info.value, StoreError) and isinstance(info.value, ValueError)
    assert not list(tmp_path.iterdir())


def test_postgresql_is_no_longer_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL URL no server answers is a StoreError; no folder named 'postgresql:' (or
    anything else) is made."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as info:
        parse_store_url("postgresql://127.0.0.1:1/none?connect_timeout=1").open()
    assert info.value.rule == "postgres_connect"
    assert not list(tmp_path.iterdir())


def test_a_cluster_url_with_a_database_is_refused_before_connecting() -> None:
    """A cluster has only database 0: another is a StoreURLError at parse time; an option
    the store refuses is one when it opens, before any connection (nothing listens on
    port 1)."""
    with pytest.raises(StoreURLError, match="only database 0") as info:
        parse_store_url("redis+cluster://127.0.0.1:1/3")
    assert info.value.rule == "store_url"
    url = parse_store_url("redis+cluster://127.0.0.1:1?replicas=many")
    with pytest.raises(StoreURLError, match="replicas") as info:
        url.open()
    assert info.value.rule == "store_url"


def test_an_unreachable_cluster_is_a_store_error() -> None:
    """A cluster no seed answers for is a StoreError naming Redis, not a traceback."""
    url = parse_store_url("redis+cluster://127.0.0.1:1?socket_connect_timeout=1")
    with pytest.raises(StoreError) as info:
        url.open()
    assert info.value.rule == "redis"


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://127.0.0.1/x", "psycopg", "postgres"),
        ("redis://127.0.0.1/0", "redis", "redis"),
    ],
)
def test_a_missing_client_library_names_its_extra(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the backend's client library installed, opening its URL is a StoreURLError
    naming the extra to install, not an ImportError."""
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m.startswith("ctxflow.persistence._" + extra[:5])]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package imports as
    with pytest.raises(StoreURLError, match=f"ctxflow\\[{extra}\\]") as info:
        open_store(url)
    assert info.value.rule == "store_extra"


def test_passwords_are_not_shown() -> None:
    """A URL's password never appears in what may be printed, nor in a refusal."""
    url = parse_store_url("postgresql://me:s3cret@db.example/app")
    assert url.shown == "postgresql://me:***@db.example/app"
    with pytest.raises(StoreURLError) as info:
        parse_store_url("postgresql://me:s3cret@db.example/app?tenant=no%20way")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(url)


def test_memory_and_sqlite_open(tmp_path: Path) -> None:
    """'memory' opens a MemoryStore; a path and a sqlite:/// URL open the same SQLite file."""
    assert isinstance(open_store("memory"), MemoryStore)
    path = tmp_path / "runs.sqlite"
    first = open_store(path)
    assert isinstance(first, SQLiteStore) and first.path == path
    Checkpointer(first, "s").capture(Conversation([Message.user("hi", id="m0")]))
    first.close()
    again = open_store(f"sqlite:///{path}", read_only=True)
    assert isinstance(again, SQLiteStore) and again.read_only
    assert again.sessions() == ["s"]
    again.close()


def test_a_store_url_value_is_checked_apart_from_opening() -> None:
    """A StoreURL is a plain value: the default SQLite file of a command can be made directly."""
    url = StoreURL(kind="sqlite", target="x.db")
    assert url.path == Path("x.db")
    assert parse_store_url("redis://h:1/0").path is None


@pytest.mark.redis
def test_a_redis_url_opens_a_redis_store_of_its_tenant() -> None:
    """``redis://…?tenant=`` opens a RedisStore whose keys are under that tenant."""
    import redis

    from ctxflow.stores import RedisStore

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if REQUIRE_REDIS:
            pytest.fail(f"no Redis answers on 127.0.0.1:6379 ({exc}) and CTXFLOW_REQUIRE_REDIS=1")
        pytest.skip(f"no Redis answers on 127.0.0.1:6379 ({exc})")
    tenant = f"test-{uuid.uuid4().hex[:12]}"
    store = open_store(f"{REDIS_URL}?tenant={tenant}")
    try:
        assert isinstance(store, RedisStore) and store.tenant == tenant
        Checkpointer(store, "s").capture(Conversation([Message.user("hi", id="m0")]))
        assert client.exists(f"ctxflow:{tenant}:sessions")
        store.erase("s")
    finally:
        store.close()
        keys = list(client.scan_iter(match=f"ctxflow:{tenant}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.postgres
def test_a_postgresql_url_opens_its_schema_and_tenant(pg_url: str, pg_schema: str) -> None:
    """``postgresql://…?schema=&tenant=`` opens a PostgresStore there; read-only it reads the
    same checkpoints and refuses writes; both URL schemes name it."""
    from ctxflow.stores import PostgresStore

    store = open_store(f"{pg_url}?schema={pg_schema}&tenant=acme")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.tenant) == (pg_schema, "acme")
    conversation = Conversation([Message.user("hi", id="m0")])
    Checkpointer(store, "s").capture(conversation)
    store.close()
    other = pg_url.replace("postgresql://", "postgres://", 1)
    reader = open_store(f"{other}?schema={pg_schema}&tenant=acme", read_only=True)
    try:
        assert list(restore(reader, "s").conversation) == list(conversation)
        with pytest.raises(StoreError) as info:
            reader.erase("s")
        assert info.value.rule == "read_only"
    finally:
        reader.close()


@pytest.mark.postgres
def test_a_read_only_postgresql_store_must_exist_and_creates_nothing(
    pg_url: str, pg_schema: str
) -> None:
    """Opening a missing PostgreSQL store read-only is refused, and no schema is created."""
    import psycopg

    with pytest.raises(StoreError) as info:
        open_store(f"{pg_url}?schema={pg_schema}", read_only=True)
    assert info.value.rule == "no_store"
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg_schema,)
        ).fetchone()
    assert found == (0,)


def test_importing_the_stores_imports_no_client_until_one_is_used() -> None:
    """``import ctxflow.stores`` and parsing every kind of URL import neither redis nor
    psycopg; naming PostgresStore imports psycopg."""
    code = (
        "import sys\n"
        "import ctxflow.stores\n"
        "for u in ('redis://h/0?tenant=a', 'postgresql://h/db?schema=s', 'x.db'):\n"
        "    ctxflow.stores.parse_store_url(u)\n"
        "assert 'redis' not in sys.modules and 'psycopg' not in sys.modules\n"
        "ctxflow.stores.PostgresStore\n"
        "assert 'psycopg' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
