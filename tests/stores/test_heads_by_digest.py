"""Session heads name bodies by digest: a lazy latest load looks up only the view's
bodies, and a head written with row ids (an earlier release) still reads and moves on."""

from __future__ import annotations

import shutil
from pathlib import Path

from ctxflow.model import Conversation, Message, Placeholder
from ctxflow.persistence import Checkpointer, restore
from ctxflow.stores import SQLiteStore

FIXTURES = Path(__file__).parent / "fixtures"
# The statement that scans every body a session references.
_SCAN = "FROM session_bodies r JOIN bodies b"


class Chars:
    """A keyed measure: a lazy load takes the stored counts only from one."""

    key = "test/chars"

    def __call__(self, message: Message) -> int:
        return len(message.text) // 4 + 4


def _long_session(store: SQLiteStore, n: int = 400) -> Conversation:
    writer = Checkpointer(store, "s", measure=Chars())
    conversation = Conversation(measure=Chars())
    for i in range(n):
        role = Message.user if i % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {i} " + "word " * (i % 7), id=f"m{i}"))
        if i % 10 == 9:
            if i > 60:  # the oldest shown turns leave the view, as compression takes them
                oldest = [m.id for m in conversation.effective()][:10]
                conversation.hide(oldest, truncation_parent=f"cut{i}")
            writer.capture(conversation, state={"step": i})
    writer.capture(conversation, state={"step": n})
    return conversation


def _statements(store: SQLiteStore) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def test_a_new_head_names_digests_and_a_lazy_load_skips_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path, head_every=4) as store:
        conversation = _long_session(store)
    with SQLiteStore(path) as store:
        head = store._heads.read(1)
        assert head is not None and isinstance(head.manifest["hashes"], bytes)
        seen = _statements(store)
        got = restore(store, "s", lazy=True, measure=Chars()).conversation
        assert not [s for s in seen if _SCAN in s]
        hidden = [m for m in got if isinstance(m, Placeholder)]
        assert hidden and not any(p.loaded for p in hidden)
        assert [m.id for m in got.effective()] == [m.id for m in conversation.effective()]
        assert list(got) == list(conversation)  # reads every hidden body back, checked


def test_a_row_id_head_still_reads_and_moves_to_digests(tmp_path: Path) -> None:
    path = tmp_path / "store_010.sqlite"
    shutil.copyfile(FIXTURES / "store_010.sqlite", path)
    with SQLiteStore(path) as store:
        sessions = [
            name
            for (name,) in store._db.execute("SELECT name FROM sessions WHERE head IS NOT NULL")
        ]
        assert sessions
        name = sessions[0]
        before = restore(store, name).conversation
        writer = Checkpointer(store, name)
        conversation = writer.restore().conversation
        assert list(conversation) == list(before)
        for i in range(70):  # past two head moves
            conversation.append(Message.user(f"later {i}", id=f"later{i}"))
            writer.capture(conversation, state={"later": i})
        head = store._heads.read(
            store._db.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()[0]
        )
        assert head is not None and isinstance(head.manifest["hashes"], bytes)
        assert list(restore(store, name, lazy=True).conversation) == list(conversation)
