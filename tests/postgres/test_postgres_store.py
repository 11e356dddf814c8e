"""The PostgreSQL store: the conformance suite on a real server, then what only it has
(schemas and versions, tenants, shared bodies, concurrent writers, fencing, failures)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ctxflow.errors import CheckpointError, OwnershipLost, StaleCheckpoint, StoreError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointDraft, Checkpointer, CheckpointRecord, restore
from ctxflow.persistence._base import BaseStore
from ctxflow.persistence._postgres import schema as pg_schema_module
from ctxflow.stores import Fence, PostgresStore, StoreConformance


class TestPostgresStore(StoreConformance):
    """The store conformance suite against the local PostgreSQL server."""

    @pytest.fixture(autouse=True)
    def _schema(self, pg_url: str, pg_schema: str) -> None:
        self.url, self.schema = pg_url, pg_schema

    def make_store(self, tmp_path: Path) -> BaseStore:
        """A store in the test's own schema."""
        return PostgresStore.from_url(self.url, schema=self.schema, max_size=4)


def Lease(owner: str, token: int) -> Fence:
    """A lease's fence: the same value the Redis ownership gives a fenced write."""
    return Fence(owner=owner, token=token)


def _turn(i: int) -> Message:
    role = Message.user if i % 2 == 0 else Message.assistant
    return role(f"turn {i} " + "words " * (i % 7), id=f"m{i}")


def _write(store: PostgresStore, session: str, steps: int) -> Conversation:
    writer = Checkpointer(store, session, full_every=4)
    conversation = Conversation()
    for i in range(steps):
        conversation.append(_turn(i))
        writer.capture(conversation, state={"step": i})
    return conversation


class _Drafts:
    """A store in front of another that keeps the drafts put to it instead of writing them."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.drafts: list[CheckpointDraft] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        self.drafts.append(draft)
        raise _Kept


class _Kept(Exception):
    """A draft was kept, not written."""


def _draft(store: PostgresStore, session: str, step: int) -> CheckpointDraft:
    """The next checkpoint of ``session`` after one more message (not written)."""
    front = _Drafts(store)
    writer = Checkpointer(front, session)  # type: ignore[arg-type]
    known = session in store.sessions()
    conversation = writer.restore().conversation if known else Conversation()
    conversation.append(_turn(step))
    with pytest.raises(_Kept):
        writer.capture(conversation, state={"step": step})
    return front.drafts[-1]


def _scalar(url: str, schema: str, query: str, *args: object) -> object:
    with psycopg.connect(url, options=f"-c search_path={schema}") as conn:
        row = conn.execute(query, args).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


@pytest.fixture
def connect(pg_url: str, pg_schema: str) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection working in the test's schema."""
    with psycopg.connect(pg_url, autocommit=True, options=f"-c search_path={pg_schema}") as conn:
        yield conn


# -- schema and versions -----------------------------------------------------------


def test_open_creates_the_schema_and_records_its_version(
    pg_store: PostgresStore, connect: psycopg.Connection
) -> None:
    """Opening a store creates its tables and records the store version; reopening keeps them."""
    rows = connect.execute("SELECT component, version FROM ctxflow_schema").fetchall()
    assert rows == [("store", pg_schema_module.STORE_VERSION)]
    _write(pg_store, "s1", 3)
    again = PostgresStore.from_url(pg_store.pool.conninfo, schema=pg_store.schema)
    try:
        assert len(again.checkpoints("s1")) == 3
    finally:
        again.close()


def test_a_newer_version_is_refused_untouched(
    pg_store: PostgresStore, connect: psycopg.Connection, pg_url: str, pg_schema: str
) -> None:
    """Tables written by a newer version are refused with StoreError and left as they are."""
    _write(pg_store, "s1", 2)
    connect.execute("UPDATE ctxflow_schema SET version = 99 WHERE component = 'store'")
    with pytest.raises(StoreError, match="version") as info:
        PostgresStore.from_url(pg_url, schema=pg_schema)
    assert info.value.rule == "schema_version"
    assert connect.execute("SELECT count(*) FROM checkpoints").fetchone() == (2,)
    assert connect.execute("SELECT version FROM ctxflow_schema").fetchone() == (99,)


def test_an_older_version_is_upgraded_step_by_step(
    pg_store: PostgresStore,
    connect: psycopg.Connection,
    pg_url: str,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opening tables of an older version runs each migration once and records the new version."""
    _write(pg_store, "s1", 2)
    steps = {1: "ALTER TABLE sessions ADD COLUMN note TEXT", 2: "UPDATE sessions SET note = 'x'"}
    monkeypatch.setitem(pg_schema_module.MIGRATIONS, "store", steps)
    upgraded = PostgresStore.from_url(pg_url, schema=pg_schema)
    upgraded.close()
    assert connect.execute("SELECT version FROM ctxflow_schema").fetchone() == (3,)
    assert connect.execute("SELECT DISTINCT note FROM sessions").fetchall() == [("x",)]
    assert len(restore(pg_store, "s1").conversation) == 2


def test_a_schema_of_another_application_is_refused_untouched(pg_url: str, pg_schema: str) -> None:
    """A schema holding tables ctxflow did not make is refused, and nothing is added to it."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.orders (id int)").format(sql.Identifier(pg_schema)))
    with pytest.raises(StoreError, match="ctxflow did not make: orders") as info:
        PostgresStore.from_url(pg_url, schema=pg_schema)
    assert info.value.rule == "foreign_schema"
    tables = _scalar(
        pg_url,
        pg_schema,
        "SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = %s",
        pg_schema,
    )
    assert tables == "orders"


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"schema": "Bad-Name"}, "postgres_schema"),
        ({"schema": "1x"}, "postgres_schema"),
        ({"tenant": "a b"}, "tenant"),
        ({"tenant": ""}, "tenant"),
    ],
)
def test_bad_names_are_refused_before_connecting(options: dict[str, str], rule: str) -> None:
    """A schema or tenant name that could break out of its place is refused before any I/O."""
    with pytest.raises(StoreError) as info:
        PostgresStore.from_url("postgresql://127.0.0.1:1/none", **options)
    assert info.value.rule == rule


# -- tenants and shared bodies ------------------------------------------------------


def test_tenants_share_a_schema_without_seeing_each_other(pg_url: str, pg_schema: str) -> None:
    """Two tenants in one schema: the same session id holds each its own checkpoints, and
    erasing one tenant's session leaves the other's (and its bodies) whole."""
    acme = PostgresStore.from_url(pg_url, schema=pg_schema, tenant="acme")
    globex = PostgresStore.from_url(pg_url, schema=pg_schema, tenant="globex")
    try:
        mine = _write(acme, "shared-name", 5)
        theirs = _write(globex, "shared-name", 3)
        assert acme.sessions() == globex.sessions() == ["shared-name"]
        acme.erase("shared-name")
        assert acme.sessions() == []
        assert list(restore(globex, "shared-name").conversation) == list(theirs)
        assert list(mine)[:3] == list(theirs)
    finally:
        acme.close()
        globex.close()


def test_bodies_are_stored_once_per_tenant_and_deleted_with_their_last_reference(
    pg_store: PostgresStore, connect: psycopg.Connection
) -> None:
    """Two sessions with the same messages store each body once; erasing one keeps them, erasing
    both removes them; a fork writes no body."""
    _write(pg_store, "a", 6)
    count = connect.execute("SELECT count(*) FROM bodies").fetchone()
    assert count == (6,)
    _write(pg_store, "b", 6)
    forked = pg_store.fork("a", pg_store.latest("a").id)
    assert connect.execute("SELECT count(*) FROM bodies").fetchone() == (6,)
    pg_store.erase("a")
    pg_store.erase("b")
    assert connect.execute("SELECT count(*) FROM bodies").fetchone() == (6,)
    assert len(restore(pg_store, forked.session_id).conversation) == 6
    pg_store.erase(forked.session_id)
    assert connect.execute("SELECT count(*) FROM bodies").fetchone() == (0,)
    assert connect.execute("SELECT count(*) FROM session_bodies").fetchone() == (0,)


def test_retention_keeps_what_kept_checkpoints_reference(
    pg_store: PostgresStore, connect: psycopg.Connection
) -> None:
    """Pruning deletes only the old rows: every body the kept checkpoints name stays."""
    conversation = _write(pg_store, "a", 12)
    pg_store.prune("a", keep_last=2)
    assert [r.seq for r in pg_store.checkpoints("a")] == [11, 12]
    assert list(restore(pg_store, "a").conversation) == list(conversation)
    assert connect.execute("SELECT count(*) FROM checkpoints").fetchone() == (2,)


def test_a_lost_latest_row_is_reported_not_taken_for_a_shorter_session(
    pg_store: PostgresStore, connect: psycopg.Connection
) -> None:
    """A session whose newest checkpoint row is gone loads as damaged, naming the lost one."""
    _write(pg_store, "a", 4)
    latest = pg_store.latest("a")
    connect.execute("DELETE FROM checkpoints WHERE id = %s", (latest.id,))
    with pytest.raises(CheckpointError, match=latest.id):
        pg_store.load("a")


def test_ids_postgres_cannot_hold_are_refused(pg_store: PostgresStore) -> None:
    """A session id with NUL is refused with CheckpointError before any statement."""
    with pytest.raises(CheckpointError) as info:
        pg_store.checkpoints("bad\x00id")
    assert info.value.rule == "session_id"


# -- concurrent writers ---------------------------------------------------------------


def test_writers_of_one_session_never_fork_it(pg_url: str, pg_schema: str) -> None:
    """Eight threads putting on the same parent at once: exactly one lands, the rest are stale."""
    store = PostgresStore.from_url(pg_url, schema=pg_schema, max_size=8)
    try:
        _write(store, "s", 2)
        drafts = [_draft(store, "s", 2 + i) for i in range(8)]
        parent = store.latest("s").id
        start = threading.Barrier(len(drafts))
        outcomes: list[str] = []

        def put(draft: CheckpointDraft) -> None:
            start.wait()
            try:
                store.put(draft, expected_parent=parent)
                outcomes.append("ok")
            except StaleCheckpoint:
                outcomes.append("stale")

        threads = [threading.Thread(target=put, args=(d,)) for d in drafts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["ok"] + ["stale"] * 7
        assert [r.seq for r in store.checkpoints("s")] == [1, 2, 3]
    finally:
        store.close()


def test_writers_of_many_sessions_all_land(pg_url: str, pg_schema: str) -> None:
    """Threads writing their own sessions (sharing bodies) all land, and each restores."""
    store = PostgresStore.from_url(pg_url, schema=pg_schema, max_size=4)
    try:
        failures: list[BaseException] = []

        def session(name: str) -> None:
            try:
                _write(store, name, 6)
                if name.endswith("0"):
                    store.erase(name)
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=session, args=(f"s{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert sorted(store.sessions()) == [f"s{i}" for i in range(1, 6)]
        for name in store.sessions():
            assert len(restore(store, name).conversation) == 6
    finally:
        store.close()


# -- fencing ------------------------------------------------------------------------------


def test_a_fenced_put_records_its_lease_and_shuts_older_ones_out(pg_store: PostgresStore) -> None:
    """A put under token 5 records it; a put under token 4 is then OwnershipLost and writes
    nothing; a newer token takes over."""
    draft = _draft(pg_store, "s", 0)
    pg_store.put(draft, expected_parent=None, fence=Lease("node-a", 5))
    assert pg_store.fence_of("s") == ("node-a", 5)
    stale = _draft(pg_store, "s", 1)
    with pytest.raises(OwnershipLost) as info:
        pg_store.put(stale, expected_parent=draft.id, fence=Lease("node-b", 4))
    assert info.value.rule == "fencing_token"
    assert len(pg_store.checkpoints("s")) == 1
    pg_store.put(stale, expected_parent=draft.id, fence=Lease("node-b", 6))
    assert pg_store.fence_of("s") == ("node-b", 6)
    with pytest.raises(OwnershipLost):
        pg_store.put(_draft(pg_store, "s", 2), expected_parent=stale.id, fence=Lease("node-a", 5))


def test_a_claim_shuts_out_the_old_owner_before_the_new_one_writes(
    pg_store: PostgresStore,
) -> None:
    """After a new owner claims the session, every fenced operation of the old lease is refused
    and changes nothing: put, prune, erase and fork."""
    old = Lease("node-a", 10)
    _write(pg_store, "s", 5)
    pg_store.claim("s", old)
    pg_store.claim("s", Lease("node-b", 11))
    before = pg_store.checkpoints("s")
    latest = before[-1]
    with pytest.raises(OwnershipLost):
        pg_store.put(_draft(pg_store, "s", 5), expected_parent=latest.id, fence=old)
    with pytest.raises(OwnershipLost):
        pg_store.prune("s", keep_last=1, fence=old)
    with pytest.raises(OwnershipLost):
        pg_store.erase("s", fence=old)
    with pytest.raises(OwnershipLost):
        pg_store.fork("s", latest.id, new_session_id="copy", fence=old)
    assert pg_store.checkpoints("s") == before
    assert pg_store.sessions() == ["s"]
    with pytest.raises(OwnershipLost):
        pg_store.claim("s", old)


def test_the_same_token_of_another_owner_is_refused(pg_store: PostgresStore) -> None:
    """A token names one acquisition: the same token with another owner value is refused."""
    pg_store.claim("s", Lease("node-a", 3))
    with pytest.raises(OwnershipLost):
        pg_store.claim("s", Lease("node-b", 3))


def test_erasure_keeps_the_fence_so_tokens_never_go_back(pg_store: PostgresStore) -> None:
    """A session erased under token 7 refuses a later write under token 6."""
    _write(pg_store, "s", 2)
    pg_store.erase("s", fence=Lease("node-a", 7))
    with pytest.raises(OwnershipLost):
        pg_store.put(_draft(pg_store, "s", 0), expected_parent=None, fence=Lease("node-b", 6))
    assert pg_store.sessions() == []


def test_the_current_lease_prunes_erases_and_forks(pg_store: PostgresStore) -> None:
    """Under the recorded lease every fenced operation works as unfenced."""
    lease = Lease("node-a", 1)
    _write(pg_store, "s", 6)
    pg_store.claim("s", lease)
    assert len(pg_store.prune("s", keep_last=2, fence=lease)) == 4
    fork = pg_store.fork("s", pg_store.latest("s").id, new_session_id="copy", fence=lease)
    assert fork.session_id == "copy"
    pg_store.erase("s", fence=lease)
    assert pg_store.sessions() == ["copy"]


# -- failures ----------------------------------------------------------------------------


def test_a_server_that_does_not_answer_is_a_store_error() -> None:
    """A URL no server answers raises StoreError naming it, within the timeout."""
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1") as info:
        PostgresStore.from_url("postgresql://127.0.0.1:1/none", timeout=1)
    assert info.value.rule == "postgres_connect"


def test_a_password_is_not_repeated_in_errors() -> None:
    """The error of an unreachable server names the URL without its password."""
    with pytest.raises(StoreError) as info:
        PostgresStore.from_url("postgresql://me:secret@127.0.0.1:1/none", timeout=1)
    assert "secret" not in str(info.value)
    assert "me:***@127.0.0.1:1" in str(info.value)


def test_sql_failures_are_store_errors(
    pg_store: PostgresStore, connect: psycopg.Connection
) -> None:
    """A statement PostgreSQL refuses (here: a table dropped behind the store) is a StoreError."""
    _write(pg_store, "s", 1)
    connect.execute("DROP TABLE session_bodies")
    with pytest.raises(StoreError) as info:
        pg_store.erase("s")
    assert info.value.rule == "postgres"
    assert "erase" in str(info.value)


def test_a_pool_working_in_another_schema_is_refused(pg_url: str, pg_schema: str) -> None:
    """A pool whose connections would put the tables elsewhere is refused before any table is
    made."""
    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(pg_url, kwargs={"autocommit": True}, open=False)
    pool.open(wait=True, timeout=5)
    try:
        with pytest.raises(StoreError) as info:
            PostgresStore(pool, schema=pg_schema)
        assert info.value.rule == "postgres_search_path"
    finally:
        pool.close()
    found = _scalar(pg_url, "public", "SELECT to_regclass('public.checkpoints') IS NULL")
    assert found is True
