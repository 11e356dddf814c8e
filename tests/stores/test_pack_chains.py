"""Packed full manifests are stored as the deltas since the previous full one composed,
without reading that one; every packed checkpoint still restores what was captured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, restore
from ctxflow.persistence._sqlite.packs import _FOLD, CheckpointPacks
from ctxflow.stores import SQLiteStore


class Chars:
    """A keyed measure."""

    key = "test/chars"

    def __call__(self, message: Message) -> int:
        return len(message.text) // 4 + 4


def _packed(store: SQLiteStore) -> list[list[Any]]:
    rows = store._db.execute("SELECT data FROM packs ORDER BY last_seq").fetchall()
    return [entry for (data,) in rows for entry in store.codec.decode(bytes(data))]


def _turn(conversation: Conversation, i: int, width: int) -> None:
    role = Message.user if i % 2 == 0 else Message.assistant
    conversation.append(role(f"turn {i} " + "word " * (i % width)))


def _hide_oldest(conversation: Conversation, count: int, tag: str) -> list[str]:
    """Hide the first ``count`` messages of the view; the view's ids before."""
    shown = [m.id for m in conversation.effective()]
    conversation.hide(shown[:count], truncation_parent=tag)
    return shown


def test_packed_fulls_compose_the_deltas_before_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    before = CheckpointPacks._full_before

    def counted(self: CheckpointPacks, session: int, seq: int, memo: Any) -> Any:
        reads.append(seq)
        return before(self, session, seq, memo)

    monkeypatch.setattr(CheckpointPacks, "_full_before", counted)
    path = tmp_path / "p.db"
    seen: dict[str, tuple[tuple[Message, ...], dict[str, Message], int]] = {}
    with SQLiteStore(path, pack_checkpoints=4, head_every=2) as store:
        writer = Checkpointer(store, "s", measure=Chars(), full_every=4, full_ratio=0.3)
        conversation = Conversation(measure=Chars())
        for i in range(400):
            _turn(conversation, i, 11)
            if i % 7 == 6 and i > 30:
                shown = _hide_oldest(conversation, 3, f"cut{i}")
                laid = conversation.original(shown[4])
                conversation.set_overlay(
                    laid.id, Message(role=laid.role, content="[cut]", id=laid.id)
                )
            if i % 3 == 2:
                record = writer.capture(conversation, state={"i": i, "big": "x" * (i % 600)})
                seen[record.id] = (tuple(conversation.messages), conversation.overlays, i)
        fulls = [e for e in _packed(store) if e[3]]
        assert len(fulls) > 10
        composed = [e for e in fulls if e[11] is not None]
        assert len(composed) >= len(fulls) // 2
        assert all("parent_delta" not in e[10] for e in fulls)
        assert max(e[11][1] for e in composed) <= 8
        assert len(reads) <= 1  # the first full has nothing before it to compose
    with SQLiteStore(path) as store:
        for checkpoint_id, (messages, overlays, i) in seen.items():
            got = restore(store, "s", checkpoint_id, measure=Chars())
            assert got.conversation.messages == messages
            assert got.conversation.overlays == overlays
            assert got.state["i"] == i


def test_a_chain_kept_between_packings_is_folded_and_every_checkpoint_restores(
    tmp_path: Path,
) -> None:
    """Full manifests far apart: the deltas a packing keeps for the next one are composed
    into one past ``_FOLD``, and the fulls packed from the folded chain restore exactly."""
    path = tmp_path / "f.db"
    seen: dict[str, tuple[tuple[Message, ...], int]] = {}
    longest = 0
    with SQLiteStore(path, pack_checkpoints=8, head_every=4) as store:
        writer = Checkpointer(store, "s", measure=Chars(), full_every=90, full_ratio=0)
        conversation = Conversation(measure=Chars())
        for i in range(600):
            _turn(conversation, i, 13)
            if i % 9 == 8 and i > 40:
                _hide_oldest(conversation, 2, f"cut{i}")
            record = writer.capture(conversation, state={"i": i})
            seen[record.id] = (tuple(conversation.messages), i)
            for chain in store._packs._chains.values():
                longest = max(longest, len(chain.deltas))
        assert 0 < longest <= _FOLD + 1
        fulls = [e for e in _packed(store) if e[3]]
        assert len([e for e in fulls if e[11] is not None]) >= 4  # composed from folded chains
    with SQLiteStore(path) as store:
        for checkpoint_id, (messages, i) in seen.items():
            got = restore(store, "s", checkpoint_id, measure=Chars())
            assert got.conversation.messages == messages
            assert got.state["i"] == i
