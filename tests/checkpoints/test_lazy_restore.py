"""Lazy restores: hidden messages stay in the store as placeholders until something reads them."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest

from ctxflow.engine import Engine
from ctxflow.errors import CorruptCheckpoint, StoreError
from ctxflow.model import (
    Conversation,
    Facts,
    Message,
    Placeholder,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ctxflow.persistence import Checkpointer, MemoryStore, restore
from ctxflow.persistence._manifest import Manifest, pack_index, unpack_index
from ctxflow.stores import SQLiteStore
from ctxflow.tokens import HeuristicCounter, message_measure

MEASURE = message_measure(HeuristicCounter())
SESSION = "long"


class RecordingStore(MemoryStore):
    """A memory store that records every body hash a read asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[set[str]] = []

    def _bodies(self, hashes: Iterable[str]) -> dict[str, Any]:
        wanted = set(hashes)
        self.asked.append(wanted)
        return super()._bodies(wanted)


def _round(step: int, lines: int = 0) -> list[Message]:
    call = Message(
        role=Role.ASSISTANT,
        id=f"msg_{step:032x}",
        content=(
            TextBlock(text=f"step {step}"),
            ToolUseBlock(id=f"call_{step}", name="read", input={"path": f"f{step}.py"}),
        ),
    )
    result = Message(
        role=Role.USER,
        id=f"res_{step:032x}",
        content=(
            ToolResultBlock(tool_use_id=f"call_{step}", content="line\n" * (lines or step % 7 + 1)),
        ),
    )
    return [call, result]


def _session(checkpointer: Checkpointer, rounds: int = 120) -> Conversation:
    """A session that summarizes its view every 30 rounds (summaries of summaries too)."""
    conversation = Conversation(measure=MEASURE)
    for step in range(rounds):
        conversation.extend(_round(step))
        if step % 30 == 29:
            trimmed = conversation.at(len(conversation) - 9)  # a result, shown trimmed
            answer = trimmed.tool_results[0].tool_use_id
            conversation.set_overlay(
                trimmed.id,
                trimmed.with_content((ToolResultBlock(tool_use_id=answer, content="[cut]"),)),
            )
            view = conversation.effective()
            covered = [m.id for m in view[:-2]]
            summary = Message.assistant(f"summary to {step}", id=f"sum_{step:032x}")
            conversation.add_summary(summary, covered)
            checkpointer.capture(conversation, state={"step": step})
    checkpointer.capture(conversation, state={"step": rounds})
    return conversation


def _placeholders(conversation: Conversation) -> list[Placeholder]:
    return [m for m in conversation if type(m) is Placeholder]


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A SQLite store holding one long session."""
    path = tmp_path / "long.sqlite"
    with SQLiteStore(path) as store:
        _session(Checkpointer(store, SESSION, measure=MEASURE, full_every=3))
    return path


def test_lazy_restore_equals_eager_message_by_message(sqlite_path: Path) -> None:
    """A lazily restored session shows the same view, counts and pairs as an eager one,
    and equals it message by message once paged in."""
    with SQLiteStore(sqlite_path) as store:
        eager = restore(store, SESSION, measure=MEASURE).conversation
        lazy = restore(store, SESSION, measure=MEASURE, lazy=True).conversation
        hidden = _placeholders(lazy)
        assert len(hidden) > len(lazy) // 2
        assert not any(p.loaded for p in hidden)
        assert lazy.effective() == eager.effective()
        assert lazy.effective_counts() == eager.effective_counts()
        assert lazy.log_counts() == eager.log_counts()
        assert list(lazy.pairs()) == list(eager.pairs())
        assert [m.id for m in lazy.summaries()] == [m.id for m in eager.summaries()]
        assert sorted(lazy.overlays) == sorted(eager.overlays)
        assert lazy.check(api="openai") == eager.check(api="openai")
        assert not any(p.loaded for p in hidden)
        assert [m.id for m in lazy] == [m.id for m in eager]
        for mine, theirs in zip(lazy, eager, strict=True):
            assert mine == theirs and theirs == mine
            assert mine.content == theirs.content and mine.text == theirs.text
        assert all(p.loaded for p in hidden)
        assert lazy.overlays == eager.overlays


def test_hidden_bodies_are_not_read_at_reopen() -> None:
    """A lazy restore asks the store for the view's bodies only, in one read."""
    store = RecordingStore()
    conversation = _session(Checkpointer(store, SESSION, measure=MEASURE))
    store.asked.clear()
    lazy = restore(store, SESSION, measure=MEASURE, lazy=True).conversation
    asked = set().union(*store.asked)
    assert len(store.asked) == 1
    hidden = _placeholders(lazy)
    assert hidden and not asked & {p.key for p in hidden}
    assert len(asked) == len(lazy) - len(hidden)
    assert [m.id for m in lazy] == [m.id for m in conversation]


def test_a_lazy_restore_indexes_its_placeholders_not_facts_beside_them() -> None:
    """The restored manifest's index holds each hidden message's placeholder (its facts
    the same as stored), and a checkpoint after the reopen writes what one before did."""
    store = MemoryStore()
    conversation = _session(Checkpointer(store, SESSION, measure=MEASURE))
    stored = store.load(SESSION).manifest.index
    writer = Checkpointer(store, SESSION, measure=MEASURE)
    lazy = writer.restore(lazy=True).conversation
    index = writer._manifest.index  # type: ignore[union-attr]
    hidden = _placeholders(lazy)
    assert hidden
    at = {m.id: i for i, m in enumerate(lazy)}
    assert all(index[at[p.id]] is p for p in hidden)
    assert [(e.id, e.role, e.uses, e.results, e.summary) for e in index] == [
        tuple(f) for f in stored
    ]
    assert not any(p.loaded for p in hidden)
    conversation.extend(_round(999))
    lazy.extend(_round(999))
    writer.capture(lazy, state={"step": 999})
    again = restore(store, SESSION, measure=MEASURE)
    assert [m.id for m in again.conversation] == [m.id for m in conversation]


def test_recall_pages_in_only_its_span_in_one_read() -> None:
    """Expanding a summary reads the span it covers in one store read, and nothing else;
    unhiding a span shows it again with its bodies."""
    store = RecordingStore()
    eager = _session(Checkpointer(store, SESSION, measure=MEASURE))
    lazy = restore(store, SESSION, measure=MEASURE, lazy=True).conversation
    store.asked.clear()
    last = lazy.summaries()[-1]
    covered = lazy.covered_by(last.id)
    assert covered == eager.covered_by(last.id)
    span = {m.key for m in covered if type(m) is Placeholder}
    assert len(store.asked) == 1 and store.asked[0] == span
    loaded = {p.id for p in _placeholders(lazy) if p.loaded}
    assert loaded == {m.id for m in covered}
    ids = [m.id for m in covered if m.hidden]
    lazy.unhide(ids)
    eager.unhide(ids)
    assert len(store.asked) == 2  # the span's overlays, in one read
    assert lazy.effective() == eager.effective()
    assert len(store.asked) == 2


def test_placeholder_evolves_into_a_message_and_keeps_new_tags_unloaded() -> None:
    """``with_tags`` keeps a placeholder unloaded; ``attrs.evolve`` gives a plain Message."""
    store = MemoryStore()
    _session(Checkpointer(store, SESSION, measure=MEASURE), rounds=40)
    lazy = restore(store, SESSION, measure=MEASURE, lazy=True).conversation
    first = _placeholders(lazy)[0]
    retagged = first.with_tags(condense_parent=None, truncation_parent="cut")
    assert type(retagged) is Placeholder and not retagged.loaded and not first.loaded
    assert retagged.truncation_parent == "cut" and retagged.id == first.id
    assert "not loaded" in repr(retagged)
    evolved = attrs.evolve(first, important=True)
    assert type(evolved) is Message and evolved.important
    assert evolved.content == first.content


def test_checkpoint_after_lazy_reopen_equals_one_after_eager(tmp_path: Path) -> None:
    """The same changes captured after a lazy and after an eager reopen write the same
    manifest and bodies."""
    source = tmp_path / "source.sqlite"
    with SQLiteStore(source) as store:
        _session(Checkpointer(store, SESSION, measure=MEASURE, full_every=2), rounds=90)
    written = []
    for lazy in (True, False):
        path = tmp_path / f"{lazy}.sqlite"
        shutil.copyfile(source, path)
        with SQLiteStore(path) as store:
            checkpointer = Checkpointer(store, SESSION, measure=MEASURE, full_every=2)
            conversation = checkpointer.restore(lazy=lazy).conversation
            conversation.extend(_round(1000))
            checkpointer.capture(conversation, state={"step": 1000})
            covered = conversation.covered_by(conversation.summaries()[0].id)
            conversation.unhide([m.id for m in covered[:4] if m.hidden])
            conversation.extend(_round(1001))
            checkpointer.capture(conversation, state={"step": 1001})
            checkpointer.capture(conversation, state={"step": 1002})  # a full one
            snapshot = store.load(SESSION)
            records = store.checkpoints(SESSION)
            written.append(
                (
                    snapshot.manifest.to_plain(),
                    dict(snapshot.bodies),
                    [(r.full, r.message_count, r.size) for r in records],
                )
            )
    assert written[0] == written[1]
    assert "index" in written[0][0]


def test_missing_hidden_body_is_corrupt_when_paged_in() -> None:
    """A hidden body that went missing or was damaged raises CorruptCheckpoint naming the
    message when it is read, not at reopen."""
    store = MemoryStore()
    _session(Checkpointer(store, SESSION, measure=MEASURE), rounds=40)
    lazy = restore(store, SESSION, measure=MEASURE, lazy=True).conversation
    first, second = _placeholders(lazy)[:2]
    del store._blobs[first.key]
    with pytest.raises(CorruptCheckpoint, match=first.id) as caught:
        _ = first.content
    assert caught.value.rule == "hidden_body"
    store._blobs[second.key] = store._blobs[_placeholders(lazy)[2].key]
    with pytest.raises(CorruptCheckpoint, match=second.id):
        _ = second.text


def test_placeholder_after_the_store_closed_raises_a_typed_error(sqlite_path: Path) -> None:
    """Reading a hidden message after its store was closed raises StoreError naming it."""
    store = SQLiteStore(sqlite_path)
    lazy = restore(store, SESSION, measure=MEASURE, lazy=True).conversation
    store.close()
    hidden = _placeholders(lazy)[0]
    with pytest.raises(StoreError, match=hidden.id) as caught:
        _ = hidden.metadata
    assert caught.value.rule == "store_unavailable"
    assert len(lazy.effective()) > 0  # the view needs no store


def test_lazy_restore_without_stored_counts_reads_everything() -> None:
    """A measure other than the stored counts' needs every body: the restore is eager."""
    store = MemoryStore()
    _session(Checkpointer(store, SESSION, measure=MEASURE), rounds=40)
    conversation = restore(store, SESSION, lazy=True).conversation
    assert not any(type(m) is Placeholder and not m.loaded for m in conversation)


def test_store_010_restores_lazily_as_eagerly(tmp_path: Path) -> None:
    """A store written before manifests held an index restores lazily exactly as eagerly
    (every body is read), and checkpoints written after it carry the index."""
    fixtures = Path(__file__).parents[1] / "stores" / "fixtures"
    path = tmp_path / "store_010.sqlite"
    shutil.copyfile(fixtures / "store_010.sqlite", path)

    class CharMeasure:
        key = "fixture/chars"

        def __call__(self, message: Message) -> int:
            return len(message.text) // 4 + 4

    measure = CharMeasure()
    with SQLiteStore(path) as store:
        for session in store.sessions():
            for record in store.checkpoints(session):
                eager = restore(store, session, record.id, measure=measure).conversation
                lazy = restore(store, session, record.id, measure=measure, lazy=True).conversation
                assert not _placeholders(lazy)
                assert list(lazy) == list(eager) and lazy.effective() == eager.effective()
        writer = Checkpointer(store, "ses_alpha", measure=measure)
        conversation = writer.restore(lazy=True).conversation
        conversation.append(Message.user("more", id="more"))
        writer.capture(conversation)
        again = restore(store, "ses_alpha", measure=measure, lazy=True).conversation
        assert list(again) == list(conversation)


def _engine_session(store: MemoryStore) -> Engine:
    """An engine that ran 60 tool rounds on ``store`` at a 3,000-token budget (most of
    its log hidden) and checkpointed."""
    engine = Engine(store=store, budget=3000)
    engine.send("start", task="Fix the tests.")
    engine.add_messages([Message.user("Fix the tests.")])
    engine.send("plan_ready")
    for step in range(60):
        engine.window()
        engine.add_messages(_round(step, lines=60))
        engine.send("step")
    engine.checkpoint("end")
    return engine


def test_engine_reopens_lazily_and_carries_on() -> None:
    """Engine.from_checkpoint leaves hidden messages in the store, gives the same window
    as the session it reopens, and carries on to the same log."""
    store = MemoryStore()
    engine = _engine_session(store)
    opened = Engine.from_checkpoint(store=store, session_id=engine.session_id, budget=3000)
    hidden = _placeholders(opened.conversation)
    assert len(hidden) > 60 and not any(p.loaded for p in hidden)
    assert opened.window().messages == engine.window().messages
    for running in (engine, opened):
        running.add_messages(_round(500))
        running.send("step")
    assert list(opened.conversation) == list(engine.conversation)


def test_a_reopened_engine_builds_no_hidden_message_it_does_not_read() -> None:
    """Reopen, window, steps and checkpoints leave the hidden messages unbuilt (no object
    each); one read builds that one alone, and the writer's index then holds it."""
    store = MemoryStore()
    engine = _engine_session(store)
    opened = Engine.from_checkpoint(store=store, session_id=engine.session_id, budget=3000)
    conversation = opened.conversation
    unbuilt = [at for at in range(len(conversation)) if not conversation.is_built(at)]
    assert len(unbuilt) > 60
    assert all(conversation.log_as_built()[at] is None for at in unbuilt)
    for step in range(500, 503):
        opened.window()
        opened.add_messages(_round(step, lines=60))
        opened.send("step")
    opened.checkpoint("later")
    assert all(not conversation.is_built(at) for at in unbuilt)
    one = conversation.at(unbuilt[0])
    assert type(one) is Placeholder and not one.loaded
    index = opened.checkpointer.writer._manifest.index  # type: ignore[attr-defined]
    assert index[unbuilt[0]] is one
    assert sum(not conversation.is_built(at) for at in unbuilt) == len(unbuilt) - 1
    again = Engine.from_checkpoint(store=store, session_id=engine.session_id, budget=3000)
    assert [m.id for m in again.conversation] == [m.id for m in conversation]
    assert again.window().messages == opened.window().messages


def _format_3(manifest: Manifest) -> dict[str, Any]:
    """A full manifest as format 3 wrote it: its tags as a mapping in log order, and the
    index marking the hidden positions instead of naming their ids."""
    plain = manifest.to_plain()
    entries = manifest.indexed()
    assert entries is not None
    ordered = [e.id for e in entries if e.id in manifest.tags]
    plain.pop("tag_columns")
    plain["tags"] = {i: list(manifest.tags[i]) for i in ordered}
    plain["index"] = pack_index(entries, manifest.tags)
    return plain


def test_full_manifest_index_round_trips_and_refuses_damage() -> None:
    """A full manifest's index (hidden ids given by its tags, in log order: format 3)
    reads back as written; marks that disagree with the tags are CorruptCheckpoint."""
    store = MemoryStore()
    _session(Checkpointer(store, SESSION, measure=MEASURE), rounds=40)
    manifest = store.load(SESSION).manifest
    plain = _format_3(manifest)
    assert "hidden" in plain["index"] and plain["tags"]
    again = Manifest.from_plain(plain)
    assert again.index == manifest.index and again.tags == manifest.tags
    broken = {**plain, "tags": dict(list(plain["tags"].items())[1:])}
    with pytest.raises(CorruptCheckpoint, match="manifest"):
        Manifest.from_plain(broken)
    odd = {**plain, "index": {**plain["index"], "packed": plain["index"]["packed"][:-1]}}
    with pytest.raises(CorruptCheckpoint, match="manifest"):
        Manifest.from_plain(odd)


def test_full_manifest_tag_columns_round_trip_and_refuse_damage() -> None:
    """Format 4 writes a full manifest's tags as columns over its index: they read back
    as the tags, and damaged columns are CorruptCheckpoint."""
    store = MemoryStore()
    _session(Checkpointer(store, SESSION, measure=MEASURE), rounds=40)
    manifest = store.load(SESSION).manifest
    plain = manifest.to_plain()
    columns = plain["tag_columns"]
    assert plain["tags"] == {} and "hidden" not in plain["index"]
    assert len(columns["pairs"]) == 8 * len(manifest.tags)
    assert len(columns["parents"]) < len(manifest.tags)
    again = Manifest.from_plain(plain)
    assert again.index == manifest.index and again.tags == manifest.tags
    pairs = columns["pairs"]
    for damaged in (
        {**columns, "pairs": pairs[:-8]},  # a hidden message without its pair
        {**columns, "pairs": pairs[:-1]},  # not 8 bytes a pair
        {**columns, "pairs": b"\xff" * len(pairs)},  # parents past the table
        {**columns, "pairs": bytes(len(pairs))},  # hidden with no parent
        {**columns, "marks": columns["marks"][:-1]},
        {**columns, "parents": [*columns["parents"][:-1], 7]},
        "not columns",
    ):
        with pytest.raises(CorruptCheckpoint, match="manifest"):
            Manifest.from_plain({**plain, "tag_columns": damaged})
    with pytest.raises(CorruptCheckpoint, match="manifest"):
        Manifest.from_plain({**plain, "index": None})  # columns need the index


@pytest.mark.parametrize(
    "entry",
    [
        [2, "call_1", 0],
        [-1, "call_1", 0],
        ["0", "call_1", 0],
        [0, 7, 0],
        [0, "call_1", 1],
        [0, "call_1", -1],
        [0, "call_1", "0"],
    ],
)
def test_a_damaged_one_call_index_entry_is_refused(entry: list[Any]) -> None:
    """A one-call entry of an index's ``uses`` (the common case, read on a fast path) is
    checked as any other: its offset, its call id and its tool number."""
    calls = [Facts("a1", Role.ASSISTANT, (("call_1", "read"),), (), False)]
    calls.append(Facts("u1", Role.USER, (), ("call_1",), False))
    plain = pack_index(calls)
    assert plain["uses"] == [[0, "call_1", 0]]
    assert unpack_index(plain, 2) == calls
    with pytest.raises(ValueError, match="index"):
        unpack_index({**plain, "uses": [entry]}, 2)
