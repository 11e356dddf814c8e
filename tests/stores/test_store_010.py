"""A store written by ctxflow 0.1.0 (fixtures/make_store_010.py) reads and grows today."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, restore
from ctxflow.persistence._sqlite.schema import APPLICATION_ID
from ctxflow.stores import SQLiteStore
from tests.stores._fixture_stores import CharMeasure, seen

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "store_010.json").read_text())


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the 0.1.0 store (the fixture itself is never opened)."""
    path = tmp_path / "store_010.sqlite"
    shutil.copyfile(FIXTURES / "store_010.sqlite", path)
    return path


@pytest.mark.parametrize("read_only", [False, True])
def test_every_checkpoint_lists_loads_and_restores(copy: Path, read_only: bool) -> None:
    """Every session and checkpoint of the 0.1.0 store lists and restores as recorded,
    read-only or not, and opening it (without writing) leaves it unmarked."""
    before = copy.read_bytes()
    with SQLiteStore(copy, read_only=read_only) as store:
        assert store.sessions() == list(EXPECTED)
        for session, rows in EXPECTED.items():
            records = store.checkpoints(session)
            assert [(r.id, r.seq) for r in records] == [(row["id"], row["seq"]) for row in rows]
            for row in rows:
                assert seen(store, session, row["id"]) == row
            assert seen(store, session, None) == rows[-1]
        assert store._db.execute("PRAGMA application_id").fetchone()[0] == 0
    assert copy.read_bytes() == before


def test_fixture_holds_what_it_must_cover() -> None:
    """The fixture exercises packs, segments, heads, tags, overlays, counts and a fork."""
    with SQLiteStore(FIXTURES / "store_010.sqlite", read_only=True) as store:
        tables = ("packs", "segments", "loose", "sessions WHERE head IS NOT NULL")
        counts = [store._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables]
    assert all(counts)
    rows = [row for session in EXPECTED.values() for row in session]
    assert any(row["overlays"] for row in rows)
    assert any(len(row["effective"]) < len(row["ids"]) for row in rows)
    assert EXPECTED["ses_fork"][0]["trigger"] == "fork"


def test_copy_keeps_growing(copy: Path) -> None:
    """A copy of the 0.1.0 store takes new checkpoints, forks, prunes and erases, is marked
    by its first write, and still restores what it held."""
    with SQLiteStore(copy) as store:
        writer = Checkpointer(store, "ses_alpha", measure=CharMeasure())
        conversation: Conversation = writer.restore().conversation
        for i in range(30):
            conversation.append(Message.user(f"more {i}", id=f"new{i}"))
            writer.capture(conversation, state={"turn": 100 + i})
        assert store._db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert list(restore(store, "ses_alpha").conversation) == list(conversation)
        for row in EXPECTED["ses_beta"]:
            assert seen(store, "ses_beta", row["id"]) == row
        fork = store.fork("ses_beta", EXPECTED["ses_beta"][4]["id"], new_session_id="ses_new")
        assert len(restore(store, "ses_new").conversation) == fork.message_count
        store.prune("ses_alpha", keep_last=5)
        assert list(restore(store, "ses_alpha").conversation) == list(conversation)
        store.erase("ses_fork")
        assert store.sessions() == ["ses_alpha", "ses_beta", "ses_new"]
    with SQLiteStore(copy, read_only=True) as store:
        assert seen(store, "ses_beta", None) == EXPECTED["ses_beta"][-1]
