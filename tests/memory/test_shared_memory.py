"""Shared memory across sessions: one conformance suite over the in-memory, SQLite, Redis and
PostgreSQL backends (the servers for real), then what only one backend has (files, keys,
schemas) and ``shared_memory_for``."""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ctxflow.errors import CtxflowError, FormatError, StoreError
from ctxflow.layers import Fact, Procedure
from ctxflow.memory._shared import (
    InMemorySharedMemory,
    ItemMeta,
    Owner,
    SharedItems,
    SharedMemory,
    StoredItem,
    plan_merge,
    shared_memory_for,
)
from ctxflow.memory._shared_postgres import PostgresSharedMemory
from ctxflow.memory._shared_redis import RedisSharedMemory
from ctxflow.memory._shared_sqlite import SQLiteSharedMemory
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer
from ctxflow.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore

REDIS_URL = "redis://127.0.0.1:6379/0"
REQUIRE_REDIS = os.environ.get("CTXFLOW_REQUIRE_REDIS") == "1"
BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]

ALICE = Owner.user("acme", "alice")
BOB = Owner.user("acme", "bob")
REPO = Owner.project("acme", "repo")
OTHER_ALICE = Owner.user("globex", "alice")


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Factory(Protocol):
    """Makes shared memories of one backend over the same data."""

    def __call__(self, **options: Any) -> SharedMemory: ...


# -- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    """A client of the local Redis; skips (or fails when required) when none answers."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        reason = f"no Redis answers on 127.0.0.1:6379 ({exc})"
        if REQUIRE_REDIS:
            pytest.fail(f"{reason} and CTXFLOW_REQUIRE_REDIS=1")
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A fresh key prefix whose keys are deleted after the test (nothing else is touched)."""
    prefix = f"ctxflow-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    return str(request.param)


@pytest.fixture
def factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Opens shared memories of the backend, all over one file, prefix or shelf."""
    made: list[SharedMemory] = []
    if backend == "memory":
        shelf = InMemorySharedMemory()

        def make(**options: Any) -> SharedMemory:
            memory = InMemorySharedMemory(**options)
            memory._shelf = shelf._shelf
            return memory

    elif backend == "sqlite":

        def make(**options: Any) -> SharedMemory:
            memory = SQLiteSharedMemory(tmp_path / "memory.db", **options)
            made.append(memory)
            return memory

    elif backend == "postgres":
        url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")

        def make(**options: Any) -> SharedMemory:
            memory = PostgresSharedMemory(url, schema=schema, **options)
            made.append(memory)
            return memory

    else:
        client = request.getfixturevalue("redis_client")
        prefix = request.getfixturevalue("redis_prefix")

        def make(**options: Any) -> SharedMemory:
            return RedisSharedMemory(client, prefix=prefix, **options)

    yield make
    for memory in made:
        memory.close()


@pytest.fixture
def corrupt(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., None]:
    """Overwrites one stored item's bytes behind the memory's back."""

    def damage(memory: SharedMemory, owner: Owner, name: str, data: bytes) -> None:
        if isinstance(memory, InMemorySharedMemory):
            memory.corrupt(owner, name, data)
        elif isinstance(memory, SQLiteSharedMemory):
            with sqlite3.connect(memory.path) as db:
                db.execute(
                    "UPDATE shared_memory SET data = ? "
                    "WHERE tenant = ? AND kind = ? AND owner = ? AND item = ?",
                    (data, owner.tenant, owner.kind, owner.id, name),
                )
            db.close()
        elif isinstance(memory, PostgresSharedMemory):
            with memory.pool.connection() as conn:
                conn.execute(
                    "UPDATE shared_memory SET data = %s "
                    "WHERE tenant = %s AND kind = %s AND owner = %s AND item = %s",
                    (data, owner.tenant, owner.kind, owner.id, name),
                )
        else:
            assert isinstance(memory, RedisSharedMemory)
            memory.client.hset(memory.owner_keys(owner)[0], name, data)

    return damage


def _fact(key: str, value: str = "v", **fields: Any) -> Fact:
    return Fact(key=key, value=value, scope="user", **fields)


def _noise(seed: str) -> str:
    """200 characters lz4 cannot shrink."""
    return random.Random(seed).randbytes(100).hex()


def _procedure(name: str, steps: str = "1. do it", **fields: Any) -> Procedure:
    return Procedure(name=name, steps=steps, scope="project", **fields)


# -- the conformance suite -------------------------------------------------------


def test_round_trip_keeps_every_field(factory: Factory) -> None:
    """Facts and procedures come back from a new instance with every field as merged."""
    facts = (
        Fact(
            key="tz",
            value="Europe/Paris",
            source="m12",
            scope="user",
            step=7,
            importance=0.9,
            tokens=11,
        ),
        Fact(key="lang", value="French, then English", scope="project"),
        Fact(key="ünïcode ✓", value="中文 and \u00e9", source=None, scope="session"),
    )
    procedures = (
        Procedure(
            name="deploy",
            steps="1. build\n2. push",
            source="m3",
            evidence=("m3", "m4", "m9"),
            seen=4,
            scope="project",
            step=12,
            importance=0.75,
            tokens=30,
        ),
        Procedure(name="lint", steps="ruff check"),
    )
    factory().merge(ALICE, facts, procedures)
    loaded = factory().load(ALICE)
    assert loaded == SharedItems(
        facts=tuple(sorted(facts, key=lambda f: f.key)),
        procedures=tuple(sorted(procedures, key=lambda p: p.name)),
    )
    assert isinstance(loaded.procedures[0].evidence, tuple)
    assert len(loaded) == 5


def test_load_of_an_unknown_owner_is_empty(factory: Factory) -> None:
    """An owner nobody wrote for has no items."""
    assert factory().load(BOB) == SharedItems()
    assert len(factory().load(BOB)) == 0


def test_merge_upserts_and_last_write_wins(factory: Factory) -> None:
    """A fact is replaced by key and a procedure by name, whole; the rest stays."""
    memory = factory()
    memory.merge(
        ALICE,
        [_fact("tz", "UTC", source="m1", importance=0.2), _fact("lang")],
        [_procedure("deploy", seen=1)],
    )
    memory.merge(ALICE, [_fact("tz", "Europe/Paris")], [_procedure("deploy", "new", seen=2)])
    loaded = memory.load(ALICE)
    assert [(f.key, f.value, f.source, f.importance) for f in loaded.facts] == [
        ("lang", "v", None, 0.5),
        ("tz", "Europe/Paris", None, 0.5),
    ]
    assert [(p.name, p.steps, p.seen) for p in loaded.procedures] == [("deploy", "new", 2)]


def test_last_of_a_key_in_one_merge_wins(factory: Factory) -> None:
    """Two facts of one key in one merge keep the later one."""
    memory = factory()
    memory.merge(ALICE, [_fact("k", "first"), _fact("k", "second")])
    assert [f.value for f in memory.load(ALICE).facts] == ["second"]


def test_a_fact_and_a_procedure_may_share_a_name(factory: Factory) -> None:
    """Facts and procedures are keyed apart."""
    memory = factory()
    memory.merge(ALICE, [_fact("x")], [_procedure("x")])
    memory.delete(ALICE, procedures=["x"])
    loaded = memory.load(ALICE)
    assert [f.key for f in loaded.facts] == ["x"]
    assert loaded.procedures == ()


def test_delete_removes_named_items_and_counts_them(factory: Factory) -> None:
    """Delete removes only what it names and returns how many existed."""
    memory = factory()
    memory.merge(ALICE, [_fact("a"), _fact("b")], [_procedure("p"), _procedure("q")])
    assert memory.delete(ALICE, facts=["a", "missing"], procedures=["q"]) == 2
    loaded = memory.load(ALICE)
    assert [f.key for f in loaded.facts] == ["b"]
    assert [p.name for p in loaded.procedures] == ["p"]
    assert memory.delete(ALICE) == 0
    assert memory.delete(BOB, facts=["b"]) == 0


def test_erase_removes_one_owner_and_nothing_else(factory: Factory) -> None:
    """Erase empties one owner, across a tenant's kinds and across tenants nothing more."""
    memory = factory()
    for owner in (ALICE, BOB, REPO, OTHER_ALICE, Owner.project("acme", "alice")):
        memory.merge(owner, [_fact("k", str(owner))], [_procedure("p")])
    assert memory.erase(ALICE) == 2
    assert memory.load(ALICE) == SharedItems()
    assert memory.erase(ALICE) == 0
    for owner in (BOB, REPO, OTHER_ALICE, Owner.project("acme", "alice")):
        assert [f.value for f in memory.load(owner).facts] == [str(owner)]
    assert memory.owners("acme") == [Owner.project("acme", "alice"), REPO, BOB]
    assert memory.owners("globex") == [OTHER_ALICE]


def test_owners_lists_owners_holding_items(factory: Factory) -> None:
    """Owners are listed per tenant, by kind then id, and leave the list when emptied."""
    memory = factory()
    assert memory.owners("acme") == []
    memory.merge(REPO, [_fact("a")])
    memory.merge(BOB, [], [_procedure("p")])
    memory.merge(ALICE, [_fact("a")])
    memory.merge(OTHER_ALICE, [_fact("a")])
    assert memory.owners("acme") == [REPO, ALICE, BOB]
    memory.delete(BOB, procedures=["p"])
    assert memory.owners("acme") == [REPO, ALICE]
    assert memory.owners("globex") == [OTHER_ALICE]
    assert memory.owners("initech") == []


def test_merging_nothing_changes_nothing(factory: Factory) -> None:
    """An empty merge does not make an owner appear."""
    memory = factory()
    memory.merge(ALICE)
    assert memory.owners("acme") == []


def test_prune_removes_items_not_written_for_that_long(factory: Factory) -> None:
    """Retention goes by the last write: rewriting an item keeps it; tenants can be named."""
    clock = Clock(1_000.0)
    memory = factory(clock=clock)
    memory.merge(ALICE, [_fact("old"), _fact("kept")], [_procedure("old")])
    memory.merge(OTHER_ALICE, [_fact("old")])
    clock.now = 1_050.0
    memory.merge(ALICE, [_fact("kept", "rewritten"), _fact("new")])
    clock.now = 1_100.0
    assert memory.prune(older_than_seconds=60, tenant="acme") == 2
    assert [f.key for f in memory.load(ALICE).facts] == ["kept", "new"]
    assert memory.load(ALICE).procedures == ()
    assert [f.key for f in memory.load(OTHER_ALICE).facts] == ["old"]
    assert memory.prune(older_than_seconds=60) == 1
    assert memory.owners("globex") == []
    assert memory.prune(older_than_seconds=50) == 2  # written exactly 50 s ago: not kept
    assert memory.owners("acme") == []


def test_prune_refuses_bad_ages(factory: Factory) -> None:
    """A negative, infinite or non-numeric age is refused before anything is deleted."""
    memory = factory()
    memory.merge(ALICE, [_fact("a")])
    for age in (-1, float("nan"), float("inf"), "10", True):
        with pytest.raises(StoreError) as caught:
            memory.prune(older_than_seconds=age)  # type: ignore[arg-type]
        assert caught.value.rule == "retention"
    assert len(memory.load(ALICE)) == 1


def test_max_items_evicts_least_important_then_oldest(factory: Factory) -> None:
    """Over max_items, the least important go first, the oldest among equals, new ones too."""
    clock = Clock(0.0)
    memory = factory(clock=clock, max_items=3)
    memory.merge(ALICE, [_fact("low-old", importance=0.1), _fact("high", importance=0.9)])
    clock.now = 10.0
    memory.merge(ALICE, [_fact("low-new", importance=0.1)], [_procedure("mid", importance=0.5)])
    assert [f.key for f in memory.load(ALICE).facts] == ["high", "low-new"]
    clock.now = 20.0
    memory.merge(ALICE, [_fact("lowest", importance=0.0)])  # evicted at once
    loaded = memory.load(ALICE)
    assert [f.key for f in loaded.facts] == ["high", "low-new"]
    assert [p.name for p in loaded.procedures] == ["mid"]
    clock.now = 30.0
    memory.merge(ALICE, [_fact("top", importance=1.0), _fact("top2", importance=1.0)])
    loaded = memory.load(ALICE)
    assert [f.key for f in loaded.facts] == ["high", "top", "top2"]
    assert loaded.procedures == ()


def test_max_owner_bytes_evicts_in_the_same_order(factory: Factory) -> None:
    """Over max_owner_bytes, items go in eviction order until the owner fits."""
    clock = Clock(0.0)
    memory = factory(clock=clock, max_owner_bytes=1000)  # three items of about 300 B
    memory.merge(ALICE, [_fact("a", _noise("x"), importance=0.2)])
    clock.now = 1.0
    memory.merge(ALICE, [_fact("b", _noise("y"), importance=0.2)])
    clock.now = 2.0
    memory.merge(ALICE, [_fact("c", _noise("z"), importance=0.9)])
    clock.now = 3.0
    memory.merge(ALICE, [_fact("d", _noise("w"), importance=0.5)])
    assert [f.key for f in memory.load(ALICE).facts] == ["b", "c", "d"]


def test_an_item_larger_than_the_owner_bound_leaves_nothing(factory: Factory) -> None:
    """An item bigger than max_owner_bytes evicts everything, itself too; the owner is gone."""
    memory = factory(max_owner_bytes=200)
    memory.merge(ALICE, [_fact("a", importance=1.0)])
    memory.merge(ALICE, [_fact("big", _noise("x"), importance=1.0)])
    assert memory.load(ALICE) == SharedItems()
    assert memory.owners("acme") == []


def test_an_oversized_item_is_refused_before_any_change(factory: Factory) -> None:
    """An item whose msgpack form passes max_item_bytes is refused; the merge writes nothing."""
    memory = factory(max_item_bytes=1024)
    memory.merge(ALICE, [_fact("a", "small")])
    with pytest.raises(FormatError) as caught:
        memory.merge(ALICE, [_fact("b", "fine"), _fact("big", "x" * 2000)])
    assert caught.value.rule == "memory_item_too_large"
    assert caught.value.details["key"] == "big"
    assert [f.key for f in memory.load(ALICE).facts] == ["a"]


@pytest.mark.parametrize(
    ("facts", "procedures"),
    [
        ([Procedure(name="p", steps="s")], []),
        ([], [Fact(key="k", value="v")]),
        ("abc", []),
        ([Fact(key="", value="v")], []),
        ([Fact(key="k", value=object())], []),  # type: ignore[arg-type]
    ],
)
def test_bad_items_are_refused(factory: Factory, facts: Any, procedures: Any) -> None:
    """Items of the wrong class, a bare string, an empty key or non-plain values are refused."""
    memory = factory()
    with pytest.raises(FormatError) as caught:
        memory.merge(ALICE, facts, procedures)
    assert caught.value.rule == "memory_item"
    assert memory.owners("acme") == []


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant": "", "kind": "user", "id": "a"},
        {"tenant": "a" * 65, "kind": "user", "id": "a"},
        {"tenant": "acme:evil", "kind": "user", "id": "a"},
        {"tenant": "ac{me}", "kind": "user", "id": "a"},
        {"tenant": 7, "kind": "user", "id": "a"},
        {"tenant": "acme", "kind": "team", "id": "a"},
        {"tenant": "acme", "kind": "user", "id": ""},
        {"tenant": "acme", "kind": "user", "id": "x" * 257},
        {"tenant": "acme", "kind": "user", "id": "bad\nid"},
        {"tenant": "acme", "kind": "user", "id": "nul\x00"},
        {"tenant": "acme", "kind": "user", "id": "\ud800"},
        {"tenant": "acme", "kind": "user", "id": None},
    ],
)
def test_bad_owners_are_refused(fields: dict[str, Any]) -> None:
    """An owner with an empty, overlong, control-character or unknown part is refused."""
    with pytest.raises(FormatError) as caught:
        Owner(**fields)
    assert caught.value.rule == "memory_owner"
    assert isinstance(caught.value, ValueError)


def test_unusual_owner_ids_are_kept_apart(factory: Factory) -> None:
    """Ids with braces, colons, percent signs and non-ASCII text are distinct owners."""
    ids = ["a}b", "a{b", "a%7Db", "a:b", "x:y:z", "名前", "a b"]
    memory = factory()
    for owner_id in ids:
        memory.merge(Owner.user("acme", owner_id), [_fact("who", owner_id)])
    for owner_id in ids:
        assert [f.value for f in memory.load(Owner.user("acme", owner_id)).facts] == [owner_id]
    assert sorted(o.id for o in memory.owners("acme")) == sorted(ids)


def test_every_operation_checks_its_owner(factory: Factory) -> None:
    """Passing something that is not an Owner, or a bad tenant, raises FormatError."""
    memory = factory()
    with pytest.raises(FormatError):
        memory.load(("acme", "user", "alice"))  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        memory.erase("acme/user:alice")  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        memory.owners("bad tenant")
    with pytest.raises(FormatError):
        memory.prune(older_than_seconds=1, tenant="")


def test_corrupt_bytes_raise_a_typed_error_naming_owner_and_key(
    factory: Factory, corrupt: Callable[..., None]
) -> None:
    """Damaged stored bytes raise StoreError(rule='corrupt_memory') naming owner and item."""
    memory = factory()
    memory.merge(ALICE, [_fact("tz", "UTC")], [_procedure("deploy")])
    for name, data in (
        ("f:tz", b"not an envelope"),
        ("f:tz", b"CXFL" + bytes(40)),
        ("p:deploy", b""),
    ):
        corrupt(memory, ALICE, name, data)
        with pytest.raises(StoreError) as caught:
            memory.load(ALICE)
        assert caught.value.rule == "corrupt_memory"
        assert caught.value.details["owner"] == ALICE
        assert caught.value.details["key"] == name
        assert "acme/user:alice" in str(caught.value)
        memory.merge(ALICE, [_fact("tz", "UTC")], [_procedure("deploy")])  # repairs it
    assert len(memory.load(ALICE)) == 2


def test_an_item_stored_under_another_name_is_refused(
    factory: Factory, corrupt: Callable[..., None]
) -> None:
    """A valid item under the wrong name (a swapped value) is damage, not a silent rename."""
    memory = factory()
    memory.merge(ALICE, [_fact("a", "A"), _fact("b", "B")])
    memory_core = getattr(memory, "_core")  # noqa: B009 - the encoder of this very memory
    (stored,) = memory_core.encode(ALICE, [_fact("b", "B")], []).values()
    corrupt(memory, ALICE, "f:a", stored.data)
    with pytest.raises(StoreError) as caught:
        memory.load(ALICE)
    assert caught.value.details["key"] == "f:a"


def test_merges_from_many_threads_all_land(factory: Factory) -> None:
    """Concurrent merges of different keys by threads sharing one instance lose nothing."""
    memory = factory()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(20):
                memory.merge(ALICE, [_fact(f"w{worker}-{i}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(memory.load(ALICE).facts) == 120


def test_limits_are_checked(factory: Factory) -> None:
    """Bounds that are not positive integers are refused when the memory is made."""
    for option in ("max_items", "max_item_bytes", "max_owner_bytes"):
        with pytest.raises(StoreError) as caught:
            factory(**{option: 0})
        assert caught.value.rule == "memory_limit"


def test_the_protocol_is_met(factory: Factory) -> None:
    """Every backend is a SharedMemory."""
    assert isinstance(factory(), SharedMemory)


# -- invariants (Hypothesis) -----------------------------------------------------

_metas = st.builds(
    ItemMeta,
    importance=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    written_at=st.integers(0, 5).map(float),
    size=st.integers(1, 50),
)


@settings(max_examples=200, deadline=None)
@given(
    existing=st.dictionaries(st.sampled_from("abcdefgh"), _metas, max_size=8),
    incoming=st.dictionaries(st.sampled_from("efghijkl"), _metas, max_size=8),
    max_items=st.integers(1, 10),
    max_owner_bytes=st.integers(1, 300),
)
def test_plan_merge_bounds_the_owner_and_evicts_in_order(
    existing: dict[str, ItemMeta],
    incoming: dict[str, ItemMeta],
    max_items: int,
    max_owner_bytes: int,
) -> None:
    """After a merge the owner is within both bounds, and every evicted item ranks below
    every kept one (importance, then write time, then name)."""
    stored = {n: StoredItem(n, b"x" * m.size, m) for n, m in incoming.items()}
    writes, deletes = plan_merge(
        existing, stored, max_items=max_items, max_owner_bytes=max_owner_bytes
    )
    after = {n: m for n, m in existing.items() if n not in deletes}
    after.update((i.name, i.meta) for i in writes)
    assert len(after) <= max_items
    assert sum(m.size for m in after.values()) <= max_owner_bytes
    merged = {**existing, **incoming}
    evicted = set(merged) - set(after)
    assert set(deletes) <= set(existing)
    rank = {n: (m.importance, m.written_at, n) for n, m in merged.items()}
    if evicted and after:
        assert max(rank[n] for n in evicted) < min(rank[n] for n in after)
    if evicted:  # nothing more was evicted than the bounds needed
        kept_plus_one = sorted(evicted, key=rank.__getitem__)[-1]
        fuller = {**after, kept_plus_one: merged[kept_plus_one]}
        assert len(fuller) > max_items or sum(m.size for m in fuller.values()) > max_owner_bytes


_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("merge"),
            st.sampled_from([ALICE, BOB, OTHER_ALICE]),
            st.lists(
                st.tuples(
                    st.sampled_from("abcdef"),
                    st.sampled_from([0.0, 0.5, 1.0]),
                    st.booleans(),
                ),
                max_size=4,
            ),
        ),
        st.tuples(st.just("delete"), st.sampled_from([ALICE, BOB]), st.sampled_from("abc")),
        st.tuples(st.just("erase"), st.sampled_from([ALICE, OTHER_ALICE]), st.none()),
        st.tuples(st.just("tick"), st.none(), st.integers(1, 30)),
        st.tuples(st.just("prune"), st.sampled_from([None, "acme"]), st.integers(0, 60)),
    ),
    max_size=25,
)


def _replay(memory: SharedMemory, clock: Clock, ops: list[Any]) -> list[Any]:
    """Apply ``ops`` to ``memory``; every answer and the final contents."""
    answers: list[Any] = []
    for op, arg, value in ops:
        if op == "merge":
            facts = [_fact(k, f"{k}{clock.now}", importance=i) for k, i, proc in value if not proc]
            procedures = [_procedure(k, importance=i) for k, i, proc in value if proc]
            answers.append(memory.merge(arg, facts, procedures))
        elif op == "delete":
            answers.append(memory.delete(arg, facts=[value], procedures=[value]))
        elif op == "erase":
            answers.append(memory.erase(arg))
        elif op == "tick":
            clock.now += value
        else:
            answers.append(memory.prune(older_than_seconds=value, tenant=arg))
    answers.append([memory.load(o) for o in (ALICE, BOB, OTHER_ALICE)])
    answers.append([memory.owners(t) for t in ("acme", "globex")])
    return answers


def _same_as_in_memory(make: Callable[[Clock], SharedMemory], ops: list[Any]) -> None:
    expected_clock, clock = Clock(), Clock()
    expected = _replay(InMemorySharedMemory(clock=expected_clock, max_items=4), expected_clock, ops)
    memory = make(clock)
    try:
        assert _replay(memory, clock, ops) == expected
    finally:
        memory.close()


@settings(max_examples=40, deadline=None)
@given(ops=_ops)
def test_sqlite_behaves_as_the_in_memory_model(ops: list[Any]) -> None:
    """Any sequence of merges, deletes, erasures and prunes gives SQLite's answers and contents
    equal to the in-memory backend's."""
    with tempfile.TemporaryDirectory() as directory:
        _same_as_in_memory(
            lambda clock: SQLiteSharedMemory(Path(directory) / "m.db", clock=clock, max_items=4),
            ops,
        )


@pytest.mark.redis
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_redis_behaves_as_the_in_memory_model(redis_client: redis.Redis, ops: list[Any]) -> None:
    """The same sequences give Redis's answers and contents equal to the in-memory backend's."""
    prefix = f"ctxflow-test-{uuid.uuid4().hex[:12]}:"
    try:
        _same_as_in_memory(
            lambda clock: RedisSharedMemory(redis_client, prefix=prefix, clock=clock, max_items=4),
            ops,
        )
    finally:
        keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            redis_client.delete(*keys)


@pytest.mark.postgres
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_postgres_behaves_as_the_in_memory_model(
    pg_url: str, pg_schema: str, ops: list[Any]
) -> None:
    """The same sequences give PostgreSQL's answers and contents equal to the in-memory
    backend's."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg_schema)))
    _same_as_in_memory(
        lambda clock: PostgresSharedMemory(pg_url, schema=pg_schema, clock=clock, max_items=4),
        ops,
    )


# -- SQLite files --------------------------------------------------------------


def test_sqlite_refuses_a_foreign_file_untouched(tmp_path: Path) -> None:
    """Another application's SQLite file, or a file that is not SQLite, is refused unchanged."""
    marked = tmp_path / "marked.db"
    with sqlite3.connect(marked) as db:
        db.execute("PRAGMA application_id = 1234")
        db.execute("CREATE TABLE t (x)")
    db.close()
    tables = tmp_path / "tables.db"
    with sqlite3.connect(tables) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello " * 100)
    for path in (marked, tables, text):
        before = path.read_bytes()
        with pytest.raises(StoreError) as caught:
            SQLiteSharedMemory(path)
        assert caught.value.rule in {"foreign_file", "not_sqlite"}
        assert path.read_bytes() == before
        assert not path.with_name(path.name + "-wal").exists()


def test_sqlite_refuses_a_newer_table_version(tmp_path: Path) -> None:
    """A shared-memory table of a newer version is refused, never misread."""
    path = tmp_path / "memory.db"
    SQLiteSharedMemory(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ctxflow_meta SET value = '2' WHERE key = 'shared_memory'")
    db.close()
    with pytest.raises(StoreError) as caught:
        SQLiteSharedMemory(path)
    assert caught.value.rule == "schema_version"


def test_sqlite_shares_a_file_with_the_checkpoint_store(tmp_path: Path) -> None:
    """Memory first then the store, or the store first then memory: both work on one file."""
    for order in ("memory first", "store first"):
        path = tmp_path / f"{order.replace(' ', '-')}.db"
        if order == "memory first":
            SQLiteSharedMemory(path).merge(ALICE, [_fact("tz")])
        store = SQLiteStore(path)
        writer = Checkpointer(store, "s1")
        conversation = Conversation()
        conversation.append(Message.user("hello", id="m0"))
        writer.capture(conversation)
        memory = SQLiteSharedMemory(path)
        memory.merge(ALICE, [_fact("lang")])
        assert [f.key for f in memory.load(ALICE).facts] == (
            ["lang", "tz"] if order == "memory first" else ["lang"]
        )
        assert store.sessions() == ["s1"]
        memory.close()
        store.close()
        reopened = SQLiteStore(path, verify=True)
        assert reopened.sessions() == ["s1"]
        reopened.close()


def test_sqlite_read_only_reads_and_refuses_writes(tmp_path: Path) -> None:
    """A read-only shared memory loads what is there and refuses every write."""
    path = tmp_path / "memory.db"
    SQLiteSharedMemory(path).merge(ALICE, [_fact("tz")])
    memory = SQLiteSharedMemory(path, read_only=True)
    assert [f.key for f in memory.load(ALICE).facts] == ["tz"]
    with pytest.raises(StoreError) as caught:
        memory.merge(ALICE, [_fact("x")])
    assert caught.value.rule == "read_only"
    memory.close()
    with pytest.raises(StoreError):
        SQLiteSharedMemory(tmp_path / "absent.db", read_only=True)


def test_sqlite_damaged_columns_are_typed_errors(tmp_path: Path) -> None:
    """Text where bytes or numbers belong raises StoreError naming the item, not a TypeError."""
    path = tmp_path / "memory.db"
    memory = SQLiteSharedMemory(path)
    memory.merge(ALICE, [_fact("tz")])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE shared_memory SET importance = 'high', data = 'text'")
    db.close()
    for operation in (lambda: memory.load(ALICE), lambda: memory.merge(ALICE, [_fact("x")])):
        with pytest.raises(StoreError) as caught:
            operation()
        assert caught.value.rule == "corrupt_memory"
        assert caught.value.details["key"] == "f:tz"
    assert memory.erase(ALICE) == 1
    memory.close()


def test_sqlite_failures_are_store_errors(tmp_path: Path) -> None:
    """A closed connection gives StoreError naming the file, not a raw sqlite3 error."""
    memory = SQLiteSharedMemory(tmp_path / "memory.db")
    memory.close()
    with pytest.raises(StoreError) as caught:
        memory.load(ALICE)
    assert caught.value.rule == "sqlite"


# -- Redis keys ----------------------------------------------------------------


@pytest.mark.redis
def test_redis_keeps_an_owner_in_one_slot(redis_client: redis.Redis, redis_prefix: str) -> None:
    """Every key of an owner shares one Cluster slot, whatever its id holds."""
    memory = RedisSharedMemory(redis_client, prefix=redis_prefix)
    for owner_id in ("plain", "a}b{c", "{x}", "%7B"):
        items, meta = memory.owner_keys(Owner.user("acme", owner_id))
        assert key_slot(items.encode()) == key_slot(meta.encode())
    assert len({memory.owner_keys(Owner.user("acme", i)) for i in ("{x}", "%7Bx%7D")}) == 2


@pytest.mark.redis
def test_redis_corrupt_meta_is_a_typed_error(redis_client: redis.Redis, redis_prefix: str) -> None:
    """Damaged bookkeeping of an owner makes a merge raise StoreError, changing nothing."""
    memory = RedisSharedMemory(redis_client, prefix=redis_prefix)
    memory.merge(ALICE, [_fact("tz")])
    redis_client.hset(memory.owner_keys(ALICE)[1], "f:tz", b"garbage")
    with pytest.raises(StoreError) as caught:
        memory.merge(ALICE, [_fact("lang")])
    assert caught.value.rule == "corrupt_memory"
    assert caught.value.details["key"] == "f:tz"
    assert [f.key for f in memory.load(ALICE).facts] == ["tz"]


@pytest.mark.redis
def test_redis_skips_index_entries_left_by_a_crash(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    """An owner index entry without items (a crash between two writes) is not listed."""
    memory = RedisSharedMemory(redis_client, prefix=redis_prefix)
    memory.merge(ALICE, [_fact("tz")])
    redis_client.sadd(f"{redis_prefix}acme:mem:owners", "user:ghost")
    assert memory.owners("acme") == [ALICE]


@pytest.mark.redis
def test_redis_from_url_owns_its_client(redis_client: redis.Redis, redis_prefix: str) -> None:
    """A memory made from a URL opens and closes its own client; a bad URL is a StoreError."""
    with RedisSharedMemory(REDIS_URL, prefix=redis_prefix) as memory:
        memory.merge(ALICE, [_fact("tz")])
        assert len(memory.load(ALICE)) == 1
    with pytest.raises(StoreError):
        RedisSharedMemory("nonsense://x", prefix=redis_prefix)
    with pytest.raises(StoreError):
        RedisSharedMemory(redis_client, prefix="ctx{flow}:")


@pytest.mark.redis
def test_redis_failures_are_store_errors(redis_prefix: str) -> None:
    """An unreachable server gives StoreError(rule='redis'), not a raw redis-py error."""
    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    memory = RedisSharedMemory(client, prefix=redis_prefix)
    with pytest.raises(StoreError) as caught:
        memory.load(ALICE)
    assert caught.value.rule == "redis"
    client.close()


# -- PostgreSQL schemas ----------------------------------------------------------


@pytest.mark.postgres
def test_postgres_shares_a_schema_with_the_checkpoint_store(pg_url: str, pg_schema: str) -> None:
    """Shared memory and checkpoints live in one schema, each table's version recorded."""
    store = PostgresStore.from_url(pg_url, schema=pg_schema)
    with PostgresSharedMemory(store.pool, schema=pg_schema) as memory:
        memory.merge(ALICE, [_fact("tz")])
        writer = Checkpointer(store)
        writer.capture(Conversation([Message.user("hi", id="m0")]))
    with store.pool.connection() as conn:
        versions = conn.execute(
            "SELECT component, version FROM ctxflow_schema ORDER BY component"
        ).fetchall()
    assert versions == [("shared_memory", 1), ("store", 1)]
    assert store.sessions() == [writer.session_id]
    store.close()
    with PostgresSharedMemory(pg_url, schema=pg_schema) as again:
        assert [f.key for f in again.load(ALICE).facts] == ["tz"]


@pytest.mark.postgres
def test_postgres_refuses_a_newer_table_version(pg_url: str, pg_schema: str) -> None:
    """A shared memory table of a newer version is refused with StoreError, its rows kept."""
    with PostgresSharedMemory(pg_url, schema=pg_schema) as memory:
        memory.merge(ALICE, [_fact("tz")])
        with memory.pool.connection() as conn:
            conn.execute("UPDATE ctxflow_schema SET version = 9 WHERE component = 'shared_memory'")
    with pytest.raises(StoreError) as caught:
        PostgresSharedMemory(pg_url, schema=pg_schema)
    assert caught.value.rule == "schema_version"


@pytest.mark.postgres
def test_postgres_failures_are_store_errors(pg_url: str, pg_schema: str) -> None:
    """An unreachable server, a bad schema name, a pool working in another schema and a
    dropped table give StoreError."""
    with pytest.raises(StoreError) as caught:
        PostgresSharedMemory("postgresql://127.0.0.1:1/none", schema=pg_schema, timeout=1)
    assert caught.value.rule == "postgres_connect"
    with pytest.raises(StoreError) as caught:
        PostgresSharedMemory(pg_url, schema="Not-A-Name")
    assert caught.value.rule == "postgres_schema"
    with PostgresSharedMemory(pg_url, schema=pg_schema) as memory:
        with pytest.raises(StoreError) as caught:
            PostgresSharedMemory(memory.pool, schema=f"{pg_schema}_elsewhere")
        assert caught.value.rule == "postgres_search_path"
        with memory.pool.connection() as conn:
            conn.execute("DROP TABLE shared_memory")
        with pytest.raises(StoreError) as caught:
            memory.load(ALICE)
        assert caught.value.rule == "postgres"


# -- one store to configure ------------------------------------------------------


def test_shared_memory_for_a_memory_store() -> None:
    """A MemoryStore's shared memory is one memory per store, apart from other stores'."""
    store, other = MemoryStore(), MemoryStore()
    shared_memory_for(store).merge(ALICE, [_fact("tz")])
    assert isinstance(shared_memory_for(store), InMemorySharedMemory)
    assert [f.key for f in shared_memory_for(store).load(ALICE).facts] == ["tz"]
    assert shared_memory_for(other).load(ALICE) == SharedItems()


def test_shared_memory_for_a_sqlite_store(tmp_path: Path) -> None:
    """A SQLiteStore's shared memory lives in its file."""
    store = SQLiteStore(tmp_path / "store.db")
    memory = shared_memory_for(store)
    assert isinstance(memory, SQLiteSharedMemory)
    assert memory.path == store.path
    memory.merge(ALICE, [_fact("tz")])
    memory.close()
    again = SQLiteSharedMemory(tmp_path / "store.db")
    assert [f.key for f in again.load(ALICE).facts] == ["tz"]
    again.close()
    store.close()
    read_only = SQLiteStore(tmp_path / "store.db", read_only=True)
    memory = shared_memory_for(read_only)
    assert [f.key for f in memory.load(ALICE).facts] == ["tz"]
    with pytest.raises(StoreError):
        memory.erase(ALICE)
    memory.close()
    read_only.close()


@pytest.mark.redis
def test_shared_memory_for_a_redis_store(redis_client: redis.Redis) -> None:
    """A RedisStore's shared memory uses its client, under its tenant's ctxflow: namespace."""
    tenant = f"test-{uuid.uuid4().hex[:12]}"
    store = RedisStore(redis_client, tenant=tenant)
    owner = Owner.user(tenant, "alice")
    try:
        memory = shared_memory_for(store)
        assert isinstance(memory, RedisSharedMemory)
        assert memory.client is redis_client
        memory.merge(owner, [_fact("tz")])
        assert all(
            k.startswith(f"ctxflow:{tenant}:".encode())
            for k in redis_client.scan_iter(match=f"ctxflow:{tenant}:*")
        )
        assert memory.owner_keys(owner)[0].startswith(f"ctxflow:{tenant}:")
        assert [f.key for f in shared_memory_for(store).load(owner).facts] == ["tz"]
        assert memory.erase(owner) == 1
    finally:
        keys = list(redis_client.scan_iter(match=f"ctxflow:{tenant}:*"))
        if keys:
            redis_client.delete(*keys)
        redis_client.srem("ctxflow:memory-tenants", tenant)
    assert not redis_client.sismember("ctxflow:memory-tenants", tenant)


@pytest.mark.postgres
def test_shared_memory_for_a_postgres_store(pg_url: str, pg_schema: str) -> None:
    """A PostgresStore's shared memory uses its pool and schema, and closing it keeps the pool."""
    store = PostgresStore.from_url(pg_url, schema=pg_schema)
    try:
        memory = shared_memory_for(store)
        assert isinstance(memory, PostgresSharedMemory)
        assert memory.pool is store.pool
        assert memory.schema == pg_schema
        memory.merge(ALICE, [_fact("tz")])
        memory.close()
        assert [f.key for f in shared_memory_for(store).load(ALICE).facts] == ["tz"]
    finally:
        store.close()


def test_shared_memory_for_an_unknown_store_is_refused() -> None:
    """A store of another kind raises StoreError naming its type."""

    class Elsewhere:
        codec = None

    with pytest.raises(StoreError) as caught:
        shared_memory_for(Elsewhere())  # type: ignore[arg-type]
    assert caught.value.rule == "shared_memory"
    assert "Elsewhere" in str(caught.value)
    assert isinstance(caught.value, CtxflowError)
