"""The layered state stored in parts: an unchanged part costs a reference, and every form reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxflow.errors import CheckpointError, CorruptCheckpoint
from ctxflow.layers import Episode, LayeredState
from ctxflow.model import Conversation, Message
from ctxflow.persistence import (
    BaseStore,
    Checkpointer,
    CheckpointRecord,
    EnvelopeCodec,
    Lz4Layer,
    MemoryStore,
    restore,
)
from ctxflow.persistence._manifest import PART_BYTES, Manifest
from ctxflow.persistence._model import CheckpointDraft
from ctxflow.stores import SQLiteStore
from ctxflow.testing import FixedCounter
from ctxflow.tokens import message_measure


class RecordingStore(MemoryStore):
    """A memory store that keeps the drafts it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.drafts: list[CheckpointDraft] = []

    def put(self, draft: CheckpointDraft, *, expected_parent: str | None) -> CheckpointRecord:
        self.drafts.append(draft)
        return super().put(draft, expected_parent=expected_parent)


def _episode(n: int) -> Episode:
    return Episode(id=f"ep-{n}", summary=f"Episode {n}: " + "tried and fixed " * 20, step=n)


def _state(episodes: int, step: int) -> dict[str, Any]:
    state = LayeredState()
    for n in range(episodes):
        state = state.with_episode(_episode(n))
    state = state.with_runtime(step=step)
    # As stored: msgpack gives tuples back as lists.
    return json.loads(json.dumps({"layers": state.to_plain(), "data": {"note": "x"}}))


def _capture_steps(store: BaseStore, steps: list[tuple[int, int]]) -> Checkpointer:
    writer = Checkpointer(store, "parts", full_every=1000)
    conversation = Conversation()
    for n, (episodes, step) in enumerate(steps):
        conversation.append(Message.user(f"turn {n}") if n % 2 == 0 else Message.assistant("ok"))
        writer.capture(conversation, state=_state(episodes, step))
    return writer


def test_an_unchanged_memory_tier_costs_references_only() -> None:
    """A delta names only the parts that changed; a new episode writes one new body."""
    store = RecordingStore()
    _capture_steps(store, [(30, 1), (30, 2), (31, 3)])
    full, same, grown = (d.manifest for d in store.drafts)
    assert full["kind"] == "full"
    assert any(entry[0] == ["layers", "memory", "episodic"] for entry in full["parts"])
    assert "parts" not in same  # only the step moved: it lives in the skeleton
    assert same["state"]["layers"]["runtime"]["step"] == 2
    assert [entry[0] for entry in grown["parts"]] == [["layers", "memory", "episodic"]]
    new_bodies = [b for b in store.drafts[2].bodies.values() if "item" in b]
    assert [b["item"]["id"] for b in new_bodies] == ["ep-30"]
    assert len(store.codec.encode(dict(same))) < PART_BYTES


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_parts_restore_exactly(tmp_path: Path, kind: str) -> None:
    """Every checkpoint restores the state it was given, in both stores."""
    store: BaseStore = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "p.db")
    steps = [(n // 3, n) for n in range(12)]
    _capture_steps(store, steps)
    for record, (episodes, step) in zip(store.checkpoints("parts"), steps, strict=True):
        assert restore(store, "parts", record.id).state == _state(episodes, step)
    store.close()


def test_a_manifest_holding_the_whole_state_still_reads() -> None:
    """A full manifest written before parts existed (state inline) loads, and deltas follow it."""
    store = MemoryStore()
    conversation = Conversation([Message.user("hello", id="m0")])
    writer = Checkpointer(store, "old")
    writer.capture(conversation, state={"k": 1})
    old = Manifest(state=_state(5, 1))
    first = store.checkpoints("old")[0]
    manifest = store.load("old").manifest
    old.hashes, old.ids = manifest.hashes, manifest.ids
    draft = CheckpointDraft(
        id="ck_old_format",
        session_id="old",
        parent_id=first.id,
        created_at=1.0,
        manifest=old.to_plain(),
        bodies={},
        message_count=1,
    )
    assert "parts" not in draft.manifest
    store.put(draft, expected_parent=first.id)
    assert restore(store, "old").state == _state(5, 1)
    reader = Checkpointer(store, "old")
    reader.restore()
    reader.capture(conversation, state=_state(6, 2))
    assert restore(store, "old").state == _state(6, 2)


def test_a_missing_part_body_is_a_corrupt_checkpoint() -> None:
    """A part whose body is gone raises CorruptCheckpoint naming the checkpoint."""
    store = RecordingStore()
    _capture_steps(store, [(30, 1)])
    item = next(h for h, b in store.drafts[0].bodies.items() if "item" in b)
    del store._blobs[item]
    with pytest.raises(CorruptCheckpoint) as info:
        restore(store, "parts")
    assert store.latest("parts").id in str(info.value)


@pytest.mark.parametrize(
    "parts",
    [
        [[["layers"], "bogus", "x"]],
        [[[], "value", "x"]],
        [[[1, 2], "value", "x"]],
        [["layers", "value"]],
        "not a list",
    ],
)
def test_crafted_parts_are_refused(parts: object) -> None:
    """A manifest whose parts do not have the documented shape is a CorruptCheckpoint."""
    with pytest.raises(CorruptCheckpoint):
        Manifest.from_plain({"kind": "full", "hashes": b"", "parts": parts})


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_manifest_its_codec_could_not_read_back_is_refused(tmp_path: Path, kind: str) -> None:
    """A checkpoint whose manifest holds more items than the codec decodes is refused with
    a typed error before anything is written; the session's earlier checkpoints load."""
    codec = EnvelopeCodec((Lz4Layer(),), max_objects=400)
    store: BaseStore = (
        MemoryStore(codec=codec)
        if kind == "memory"
        else SQLiteStore(tmp_path / "b.db", codec=codec, head_every=1000)
    )
    measure = message_measure(FixedCounter())
    conversation = Conversation(
        [Message.user(f"q{i}") if i % 2 == 0 else Message.assistant(f"a{i}") for i in range(20)],
        measure=measure,
    )
    writer = Checkpointer(store, "big", measure=measure)
    writer.capture(conversation)
    conversation.extend(
        Message.user(f"q{i}") if i % 2 == 0 else Message.assistant(f"a{i}") for i in range(500)
    )
    # each hidden behind a truncation of its own: 400 parents, each an item of the manifest
    for i, message in enumerate(conversation.messages[:400]):
        conversation.hide([message.id], truncation_parent=f"t{i}")
    with pytest.raises(CheckpointError) as info:
        Checkpointer(store, "other", measure=measure).capture(conversation)
    assert info.value.rule == "too_many_objects"
    assert store.sessions() == ["big"]
    assert len(restore(store, "big", measure=measure).conversation) == 20
    store.close()


def test_a_tier_of_the_same_items_is_not_digested_again() -> None:
    """A memory tier holding the very same (sealed) items as the last split is not
    digested item by item again; one item swapped, or a plain mapping changed in
    place, is."""
    from ctxflow.persistence import _manifest

    path = ("layers", "memory", "episodic")
    state = LayeredState()
    for n in range(30):
        state = state.with_episode(_episode(n))
    first = Manifest()
    first.set_state({"layers": state.to_plain()}, {})
    entries = _manifest._LAST_ITEMS[path][1]
    again = Manifest()
    again.set_state({"layers": state.to_plain()}, {})
    assert _manifest._LAST_ITEMS[path][1] is entries
    assert again.parts == first.parts

    swapped = LayeredState()
    for n in range(30):
        swapped = swapped.with_episode(_episode(n if n else 99))
    other = Manifest()
    other.set_state({"layers": swapped.to_plain()}, {})
    old_hashes, new_hashes = first.parts[path][1], other.parts[path][1]
    assert new_hashes[1:] == old_hashes[1:] and new_hashes[0] != old_hashes[0]

    plain = _state(30, 1)  # plain mappings, as a store gives them back: never kept
    before = Manifest()
    before.set_state(plain, {})
    plain["layers"]["memory"]["episodic"][3]["summary"] = "changed in place"
    after = Manifest()
    after.set_state(plain, {})
    assert after.parts[path][1][3] != before.parts[path][1][3]
