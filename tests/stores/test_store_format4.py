"""A store written in checkpoint format 4 (fixtures/make_store_010.py, run with the last
release that wrote it) reads as recorded, and grows into format 5 from its heads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ctxflow.model import Conversation, Message, Role, ToolResultBlock, ToolUseBlock
from ctxflow.persistence import Checkpointer, restore
from ctxflow.persistence._sqlite.heads import HEAD_EVERY
from ctxflow.stores import SQLiteStore
from tests.stores._fixture_stores import CharMeasure, seen

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED: dict[str, list[dict[str, Any]]] = json.loads(
    (FIXTURES / "store_format4.json").read_text()
)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the format-4 store (the fixture itself is never opened)."""
    path = tmp_path / "store_format4.sqlite"
    shutil.copyfile(FIXTURES / "store_format4.sqlite", path)
    return path


def _heads(store: SQLiteStore) -> dict[str, Any]:
    rows = store._db.execute(
        "SELECT sessions.name, heads.head FROM heads JOIN sessions ON sessions.id = heads.session"
    ).fetchall()
    return {name: store.codec.decode(bytes(head))[2] for name, head in rows}


def test_the_fixture_is_format_4_with_heads_calls_and_counts() -> None:
    with SQLiteStore(FIXTURES / "store_format4.sqlite", read_only=True) as store:
        data = bytes(store._db.execute("SELECT manifest FROM checkpoints").fetchone()[0])
        assert int.from_bytes(data[4:6], "big") == 4
        heads = _heads(store)
        assert heads and all("uses" in h["index"] for h in heads.values())
        assert any(isinstance(h.get("counts"), list) and h["counts"] for h in heads.values())
        assert store._db.execute("SELECT count(*) FROM packs").fetchone()[0]


@pytest.mark.parametrize("read_only", [False, True])
def test_every_checkpoint_restores_as_recorded(copy: Path, read_only: bool) -> None:
    with SQLiteStore(copy, read_only=read_only) as store:
        assert store.sessions() == list(EXPECTED)
        for session, rows in EXPECTED.items():
            for row in rows:
                assert seen(store, session, row["id"]) == row
            assert seen(store, session, None) == rows[-1]


@pytest.mark.parametrize("session", ["ses_alpha", "ses_beta"])
def test_a_copy_grows_into_format_5_from_its_format_4_heads(copy: Path, session: str) -> None:
    """New checkpoints move the format-4 heads (their calls listed, their counts a list)
    into format 5, with tool calls along the way; every checkpoint still restores."""
    with SQLiteStore(copy) as store:
        writer = Checkpointer(store, session, measure=CharMeasure())
        conversation: Conversation = writer.restore(measure=CharMeasure()).conversation
        for i in range(2 * HEAD_EVERY):
            call = ToolUseBlock(id=f"ncall{i}", name="lookup", input={"n": i})
            answer = ToolResultBlock(tool_use_id=f"ncall{i}", content=f"found {i}")
            conversation.append(Message(role=Role.ASSISTANT, content=(call,), id=f"na{i}"))
            conversation.append(Message(role=Role.USER, content=(answer,), id=f"nu{i}"))
            writer.capture(conversation, state={"turn": 100 + i})
        head = _heads(store)[session]
        assert "uses" not in head["index"] and head["index"]["calls"].count(1) >= HEAD_EVERY
        assert head["measure"] == CharMeasure.key and isinstance(head["counts"], bytes)
        got = restore(store, session, measure=CharMeasure()).conversation
        assert list(got) == list(conversation)
        assert [got.tokens(m.id) for m in got] == [conversation.tokens(m.id) for m in got]
        for row in EXPECTED[session]:
            assert seen(store, session, row["id"]) == row
