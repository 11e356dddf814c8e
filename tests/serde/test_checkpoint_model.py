"""The checkpoint model: a draft refuses ids that no store can encode, before a store sees them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxflow.errors import CheckpointError
from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointDraft, Checkpointer, MemoryStore, Store
from ctxflow.persistence._model import check_store_id
from ctxflow.stores import SQLiteStore


def _draft(**ids: Any) -> CheckpointDraft:
    fields: dict[str, Any] = {"id": "ckp_1", "session_id": "ses_1", "parent_id": None}
    fields.update(ids)
    return CheckpointDraft(created_at=1.0, manifest={"kind": "full"}, **fields)


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_a_session_id_with_a_lone_surrogate_is_refused_by_every_store(store_kind: str) -> None:
    """Capturing under a session id holding a lone surrogate is a CheckpointError, not a
    UnicodeEncodeError from the backend, and the store is left empty."""
    store: Store = MemoryStore() if store_kind == "memory" else SQLiteStore(":memory:")
    try:
        with pytest.raises(CheckpointError) as caught:
            Checkpointer(store, "ses_\ud800").capture(Conversation([Message.user("hi")]))
        assert caught.value.rule == "session_id"
        assert caught.value.details["offset"] == 4
        assert "lone surrogate" in str(caught.value)
        assert store.sessions() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("ids", "rule"),
    [
        ({"session_id": "s\udfff"}, "session_id"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": 7}, "session_id"),
        ({"id": "ckp_\ud800"}, "checkpoint_id"),
        ({"parent_id": "p\ud800"}, "checkpoint_id"),
        ({"parent_id": 3}, "checkpoint_id"),
    ],
)
def test_a_draft_checks_its_ids(ids: dict[str, Any], rule: str) -> None:
    """A draft's session, checkpoint and parent ids must be non-empty strings of valid Unicode."""
    with pytest.raises(CheckpointError) as caught:
        _draft(**ids)
    assert caught.value.rule == rule


def test_valid_ids_pass() -> None:
    """Non-ascii ids that are valid Unicode, and a missing parent, pass unchanged."""
    assert _draft(session_id="sésion-漢字", parent_id=None).session_id == "sésion-漢字"
    assert check_store_id("ckp_x", what="checkpoint id") == "ckp_x"


@pytest.mark.parametrize("make", ["memory", "sqlite"])
def test_store_reads_refuse_a_lone_surrogate_session_id(make: str, tmp_path: Path) -> None:
    """checkpoints, latest, load, prune and erase name a bad session id with CheckpointError."""
    store = MemoryStore() if make == "memory" else SQLiteStore(tmp_path / "s.db")
    bad = "ses_\ud800"
    calls = [
        lambda: store.checkpoints(bad),
        lambda: store.latest(bad),
        lambda: store.load(bad),
        lambda: store.load("ses_ok", "ckp_\ud800"),
        lambda: store.prune(bad, keep_last=1),
        lambda: store.erase(bad),
        lambda: Checkpointer(store, bad),
    ]
    for call in calls:
        with pytest.raises(CheckpointError) as caught:
            call()
        assert caught.value.rule in {"session_id", "checkpoint_id"}
    store.close()
