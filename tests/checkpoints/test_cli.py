"""``ctxflow checkpoints``: list, show, diff and restore against a SQLite store file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ctxflow.cli import checkpoints as command
from ctxflow.errors import CheckpointNotFound, StoreError
from ctxflow.model import Conversation, Message, read_transcripts
from ctxflow.persistence import Checkpointer
from ctxflow.stores import SQLiteStore


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ctxflow")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["checkpoints", *argv])
    status: int = args.handler(args)
    return status


@pytest.fixture
def store_file(tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A store file with one session of three checkpoints."""
    path = tmp_path / "cli.db"
    with SQLiteStore(path) as store:
        writer = Checkpointer(store, "ses_cli")
        conversation = Conversation([Message.user("hello", id="u1")])
        writer.capture(conversation, state={"a": 1}, phase="planning", trigger="phase")
        conversation.append(Message.assistant("hi", id="a1"))
        writer.capture(conversation, state={"a": 1}, phase="execution", trigger="phase")
        conversation.append(Message.user("more", id="u2"))
        conversation.add_summary(Message.user("greeting", id="s1"), ["u1", "a1"])
        writer.capture(conversation, state={"a": 2, "b": 1}, phase="execution", trigger="messages")
        ids = [r.id for r in store.checkpoints("ses_cli")]
    return path, "ses_cli", ids


def test_list_sessions_and_checkpoints(
    store_file: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """list prints the sessions, then a session's checkpoints with phase and trigger."""
    path, session, ids = store_file
    assert _run("list", "--store", str(path), "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["checkpoints"] == 3
    assert _run("list", "--store", str(path), session) == 0
    out = capsys.readouterr().out
    assert ids[0] in out
    assert "messages" in out


def test_show(store_file: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """show prints one checkpoint's phase, trigger, tokens and size."""
    path, session, ids = store_file
    assert _run("show", "--store", str(path), session, ids[0], "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["phase"] == "planning"
    assert info["trigger"] == "phase"
    assert info["size"] > 0
    assert _run("show", "--store", str(path), session) == 0
    assert "execution" in capsys.readouterr().out


def test_diff(store_file: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """diff reports appended messages, changed tags and changed state keys."""
    path, session, ids = store_file
    assert _run("diff", "--store", str(path), session, ids[1], ids[2], "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["appended"] == ["u2", "s1"]
    assert result["tags_changed"] == ["a1", "u1"]
    assert result["state_keys_changed"] == ["a", "b"]
    assert result["extends"] is True
    assert _run("diff", "--store", str(path), session, ids[0], ids[1]) == 0
    assert "appended" in capsys.readouterr().out


def test_restore_writes_corpus_jsonl(
    store_file: tuple[Path, str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """restore writes the effective view (or the log) as readable corpus JSONL."""
    path, session, _ = store_file
    out = tmp_path / "restored.jsonl"
    assert _run("restore", "--store", str(path), session, "--out", str(out)) == 0
    (transcript,) = read_transcripts(out)
    assert [m.text for m in transcript.messages] == ["greeting", "more"]
    assert _run("restore", "--store", str(path), session, "--view", "log") == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["messages"]) == 4


def test_errors(store_file: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    """A missing store file or unknown session raises a typed error (exit 2 via the CLI)."""
    path, _, _ = store_file
    with pytest.raises(StoreError, match="existing file"):
        _run("list", "--store", str(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(CheckpointNotFound):
        _run("show", "--store", str(path), "ses_unknown")
