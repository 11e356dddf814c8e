"""What a long session keeps: a bounded ring of step records, an opt-in frozen heap, and
hidden messages paged out to the store."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from ctxflow.engine import KEEP_RECORDS, Engine, StepRecords, StoreCheckpointer
from ctxflow.errors import CheckpointError, InvalidMessage, PolicyError, StoreError
from ctxflow.model import (
    Message,
    OverlayPlaceholder,
    Placeholder,
    Role,
    ToolResultBlock,
    ToolUseBlock,
    facts_of,
)
from ctxflow.persistence import Checkpointer, MemoryStore
from ctxflow.persistence._checkpointer import StoreSource
from ctxflow.stores import SQLiteStore
from ctxflow.testing import FixedCounter


def _stepped(engine: Engine, steps: int) -> None:
    engine.send("start", task="t")
    engine.send("plan_ready")
    for n in range(steps):
        engine.add_messages([Message.user(f"q{n}"), Message.assistant(f"a{n}")])
        engine.send("step")


def test_records_keep_the_latest_only() -> None:
    """An engine keeps its latest ``keep_records`` records; indexes stay absolute."""
    engine = Engine(counter=FixedCounter(), keep_records=3)
    _stepped(engine, 5)
    assert engine.records.total == 7
    assert len(engine.records) == 3
    assert [r.index for r in engine.records] == [4, 5, 6]
    assert engine.records[-1].trigger == "step"
    assert [r.index for r in engine.records.since(5)] == [5, 6]
    assert engine.records.since(0) == list(engine.records)
    assert engine.records[1:] == list(engine.records)[1:]


def test_the_default_ring_is_large() -> None:
    """By default the ring holds KEEP_RECORDS records and compares as a list."""
    engine = Engine(counter=FixedCounter())
    assert engine.records.keep == KEEP_RECORDS
    assert engine.records == []
    _stepped(engine, 2)
    assert engine.records == list(engine.records)
    assert engine.records != [engine.records[0]]


@pytest.mark.parametrize("keep", [0, -1, True, 2.5, "3"])
def test_a_bad_ring_size_is_refused(keep: object) -> None:
    """A ring size that is not a positive integer is a PolicyError naming it."""
    with pytest.raises(PolicyError) as info:
        StepRecords(keep)  # type: ignore[arg-type]
    assert info.value.rule == "keep_records"
    with pytest.raises(PolicyError):
        Engine(keep_records=keep)  # type: ignore[arg-type]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the collector as it was."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_freeze_gc_freezes_after_a_restore_only_when_asked() -> None:
    """``freeze_gc=True`` freezes the heap after opening a checkpoint; the default does not."""
    store = MemoryStore()
    engine = Engine(counter=FixedCounter(), store=store)
    _stepped(engine, 3)
    engine.checkpoint("manual")
    gc.unfreeze()
    Engine.from_checkpoint(counter=FixedCounter(), store=store, session_id=engine.session_id)
    assert gc.get_freeze_count() == 0
    opened = Engine.from_checkpoint(
        counter=FixedCounter(), store=store, session_id=engine.session_id, freeze_gc=True
    )
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    opened.restore(opened.checkpoint_ids[-1])
    assert gc.get_freeze_count() > 0
    with pytest.raises(PolicyError):
        Engine(freeze_gc="yes")  # type: ignore[arg-type]


# -- hidden messages paged out to the store ----------------------------------------------


def _tool_rounds(engine: Engine, rounds: int, start: int = 0) -> None:
    """Tool rounds with long results: a small budget hides the older ones."""
    for n in range(start, start + rounds):
        call = Message(
            role=Role.ASSISTANT,
            content=(ToolUseBlock(id=f"call{n}", name="read_file", input={"n": n}),),
        )
        result = Message(
            role=Role.USER,
            content=(
                ToolResultBlock(
                    tool_use_id=f"call{n}", content=f"line {n} of it\n" * (10 + n * 37 % 100)
                ),
            ),
        )
        engine.add_messages([call, result])
        engine.send("step")
        if n % 10 == 9:  # a reflection, and its checkpoint
            engine.send("reflect")
            engine.send("execute")


def _session(tmp_path: Path, name: str, **options: object) -> tuple[Engine, SQLiteStore]:
    store = SQLiteStore(tmp_path / f"{name}.db")
    engine = Engine(store=store, budget=4_000, session_id="ses_paged", **options)  # type: ignore[arg-type]
    _started(engine)
    return engine, store


def _started(engine: Engine) -> None:
    engine.send("start", task="Read the files and report.")
    engine.add_messages([Message.user("Read the files and report.")])
    engine.send("plan_ready")


def _shown(engine: Engine) -> list[object]:
    """A window's messages by role and content (generated messages' ids differ)."""
    return [(m.role, m.content) for m in engine.window().messages]


def _system(engine: Engine) -> str:
    """A window's system text, summaries' generated ids left out."""
    return re.sub(r"sum_[0-9a-f]{32}", "sum", engine.window().system)


def _placeholders(engine: Engine) -> list[Placeholder]:
    return [m for m in engine.conversation.history if isinstance(m, Placeholder)]


def test_hidden_messages_leave_memory_and_windows_stay_the_same(tmp_path: Path) -> None:
    """On a store outside the process, every checkpoint pages the hidden messages out:
    they become unread placeholders, the windows are those of an engine that keeps
    them, and reading one gives the message back."""
    paged, paged_store = _session(tmp_path, "paged")
    kept, kept_store = _session(tmp_path, "kept", page_hidden=False)
    for start in range(0, 60, 10):
        _tool_rounds(paged, 10, start)
        _tool_rounds(kept, 10, start)
        assert _shown(paged) == _shown(kept)
        assert _system(paged) == _system(kept)
    hidden = [at for at, m in enumerate(kept.conversation.history) if m.hidden]
    out = _placeholders(paged)
    assert len(hidden) > 40 and not _placeholders(kept)
    history = paged.conversation.history
    assert [at for at, m in enumerate(history) if isinstance(m, Placeholder)] == hidden
    assert not any(p.loaded for p in out)
    assert [(m.role, m.content) for m in paged.conversation.history] == [
        (m.role, m.content) for m in kept.conversation.history
    ]
    assert all(p.loaded for p in out)  # compared: read back from the store
    # the overlays laid over hidden messages are never shown: they page out too
    overlaid = [
        m.id for m in paged.conversation.history if m.hidden and paged.conversation.overlay(m.id)
    ]
    laid = [paged.conversation.overlay(i) for i in overlaid]
    assert laid and all(isinstance(o, OverlayPlaceholder) and not o.loaded for o in laid)
    assert [paged.conversation.overlay(i).content for i in overlaid] == [
        kept.conversation.overlay(
            kept.conversation.history[paged.conversation.index_of(i)].id
        ).content
        for i in overlaid
    ]
    paged_store.close()
    kept_store.close()


def test_a_paged_out_message_needs_its_store(tmp_path: Path) -> None:
    """Reading a paged-out body after the store closed names the message."""
    engine, store = _session(tmp_path, "closed")
    _tool_rounds(engine, 40)
    first = next(p for p in _placeholders(engine) if not p.loaded)
    store.close()
    with pytest.raises(StoreError) as info:
        _ = first.content
    assert info.value.rule == "store_unavailable"
    assert info.value.details["message_id"] == first.id


def test_an_in_process_store_keeps_messages_whole() -> None:
    """A memory store holds its bodies in the process: nothing is paged out by default,
    and on request the placeholders read back the same messages."""
    engine = Engine(store=MemoryStore(), budget=4_000)
    _started(engine)
    _tool_rounds(engine, 40)
    assert not _placeholders(engine)
    asked = Engine(store=MemoryStore(), budget=4_000, page_hidden=True)
    _started(asked)
    _tool_rounds(asked, 40)
    assert _placeholders(asked)
    assert [m.text for m in asked.conversation.history] == [
        m.text for m in engine.conversation.history
    ]


def test_a_paged_out_message_keeps_its_index_facts_in_the_placeholder(tmp_path: Path) -> None:
    """A placeholder knows its tool calls, answers and summary flag without its body, and
    the writer's index holds the placeholder itself (no Facts object per hidden message)."""
    engine, store = _session(tmp_path, "facts")
    _tool_rounds(engine, 40)
    out = _placeholders(engine)
    assert out
    index = engine.checkpointer.writer._manifest.index  # type: ignore[attr-defined]
    history = engine.conversation.history
    for placeholder in out:
        assert not placeholder.loaded
        at = engine.conversation.index_of(placeholder.id)
        assert index[at] is placeholder
        facts = placeholder.facts
        assert (facts.id, facts.role) == (placeholder.id, placeholder.role)
        assert not placeholder.loaded
    reference = [facts_of(attrs.evolve(p)) for p in out[:12]]  # evolve reads the bodies
    assert [p.facts for p in out[:12]] == reference
    assert any(p.uses for p in out) and any(p.results for p in out)
    assert [m.id for m in history] == [m.id for m in engine.conversation.history]
    store.close()


def test_page_hidden_is_checked() -> None:
    """``page_hidden`` is a bool, for a store that reads bodies back, and the engine's own."""
    with pytest.raises(CheckpointError) as info:
        Checkpointer(MemoryStore(), page_hidden="yes")  # type: ignore[arg-type]
    assert info.value.rule == "page_hidden"
    with pytest.raises(PolicyError) as refused:
        Engine(checkpointer=StoreCheckpointer(MemoryStore()), page_hidden=True)
    assert refused.value.rule == "engine_page_hidden"


def test_page_out_swaps_only_hidden_whole_messages() -> None:
    """``Conversation.page_out`` takes unread placeholders for hidden messages of the
    same tags; anything else is refused before a swap, or passed over."""
    from ctxflow.model import Conversation, facts_of

    conversation = Conversation([Message.user("a", id="a"), Message.assistant("b", id="b")])
    conversation.hide(["a"], truncation_parent="cut")
    store = MemoryStore()
    writer = Checkpointer(store, "ses_swap")
    writer.capture(conversation)
    source = StoreSource(store, writer.last_id or "")
    hidden = conversation.original("a")
    shown = conversation.original("b")
    key = store.load("ses_swap").manifest.hashes[0]

    def placeholder(message: Message, tags: tuple[str | None, str | None]) -> Placeholder:
        return Placeholder.of(
            facts_of(message),
            key=key,
            source=source,
            condense_parent=tags[0],
            truncation_parent=tags[1],
        )

    with pytest.raises(InvalidMessage) as info:
        conversation.page_out([hidden])  # type: ignore[list-item]
    assert info.value.rule == "not_a_placeholder"
    assert conversation.page_out([placeholder(shown, (None, None))]) == 0
    assert conversation.page_out([placeholder(hidden, (None, "other"))]) == 0
    version = conversation.version
    assert conversation.page_out([placeholder(hidden, (None, "cut"))]) == 1
    assert conversation.version == version
    assert isinstance(conversation.original("a"), Placeholder)
    assert conversation.original("a") == hidden
