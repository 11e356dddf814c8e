"""``ctxflow checkpoints``: list, show, diff and restore against a SQLite store file (store
URLs of servers are tested in tests/cli/test_run_store_urls.py)."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest

from ctxflow.cli import checkpoints as command
from ctxflow.cli import main
from ctxflow.errors import CheckpointNotFound, StoreError
from ctxflow.model import Conversation, Message, read_transcripts
from ctxflow.persistence import Checkpointer
from ctxflow.stores import SQLiteStore


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ctxflow")
    sub = parser.add_subparsers(dest="command", required=True).add_parser("checkpoints")
    command.register(sub)
    sub.set_defaults(handler=command.run)
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


def test_diff_show_and_restore_take_seq_numbers(
    store_file: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The seq numbers `list` prints name checkpoints as their ids do."""
    path, session, ids = store_file
    assert _run("diff", "--store", str(path), session, "2", "3", "--json") == 0
    by_seq = json.loads(capsys.readouterr().out)
    assert _run("diff", "--store", str(path), session, ids[1], ids[2], "--json") == 0
    assert by_seq == json.loads(capsys.readouterr().out)
    assert _run("show", "--store", str(path), session, "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["id"] == ids[0]
    with pytest.raises(CheckpointNotFound, match=r"seq 1\.\.3"):
        _run("diff", "--store", str(path), session, "1", "9")


@pytest.mark.parametrize(
    "action", [["list"], ["show", "ses_cli"], ["diff", "ses_cli", "1", "2"], ["restore", "ses_cli"]]
)
@pytest.mark.parametrize(
    "store", ["ftp://host/cli.db", "redis+cluster://127.0.0.1:7000/3", "memory"]
)
def test_bad_or_unsupported_stores_are_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    action: list[str],
    store: str,
) -> None:
    """Every action refuses a bad or unsupported store URL, or 'memory', with one line and
    exit 2, creating nothing."""
    monkeypatch.chdir(tmp_path)
    assert main(["checkpoints", action[0], "--store", store, *action[1:]]) == 2
    err = capsys.readouterr().err
    assert "--store" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_a_sqlite_url_reads_the_file(
    store_file: tuple[Path, str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``sqlite:///cli.db`` names the store file in the current folder."""
    path, session, ids = store_file
    monkeypatch.chdir(path.parent)
    assert main(["checkpoints", "list", "--store", "sqlite:///cli.db", session]) == 0
    out = capsys.readouterr().out
    assert all(i in out for i in ids)


def test_restore_never_overwrites_the_store(
    store_file: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming the store is refused, even with --force, and the store is unchanged."""
    path, session, _ = store_file
    before = path.read_bytes()
    for extra in ([], ["--force"]):
        assert (
            main(
                [
                    "checkpoints",
                    "restore",
                    "--store",
                    str(path),
                    session,
                    "--out",
                    str(path),
                    *extra,
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "must not name the store" in err and err.count("\n") == 1
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_restore_replaces_a_foreign_file_only_with_force(
    store_file: tuple[Path, str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing file restore did not write is refused without --force and replaced with it."""
    path, session, _ = store_file
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"id": "mine", "messages": []}\n')
    args = ["checkpoints", "restore", "--store", str(path), session, "--out", str(notes)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert notes.read_text() == '{"id": "mine", "messages": []}\n'
    assert main([*args, "--force"]) == 0
    (transcript,) = read_transcripts(notes)
    assert transcript.source == "ctxflow checkpoint"


def test_restore_overwrites_its_own_output(
    store_file: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    """A file restore wrote is replaced without --force (restoring again is routine)."""
    path, session, _ = store_file
    out = tmp_path / "restored.jsonl"
    base = ["checkpoints", "restore", "--store", str(path), session]
    assert main([*base, "1", "--out", str(out)]) == 0
    assert main([*base, "--view", "log", "--out", str(out)]) == 0
    (transcript,) = read_transcripts(out)
    assert len(transcript.messages) == 4


@pytest.mark.parametrize("where", ["folder", "missing"])
def test_restore_out_folder_or_missing_parent_exits_2(
    store_file: tuple[Path, str, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """--out naming a folder, or a file in a missing folder, is one line and exit 2."""
    path, session, _ = store_file
    out = tmp_path if where == "folder" else tmp_path / "missing" / "r.jsonl"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["checkpoints", "restore", "--store", str(path), session, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_restore_writes_atomically_under_the_umask(
    store_file: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    """restore --out leaves one file, mode 0644 under umask 022, and no temporary file."""
    path, session, _ = store_file
    out = tmp_path / "restored.jsonl"
    previous = os.umask(0o022)
    try:
        assert (
            main(["checkpoints", "restore", "--store", str(path), session, "--out", str(out)]) == 0
        )
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.db", "restored.jsonl"]


def test_reading_commands_work_on_a_read_only_store_and_change_nothing(
    store_file: tuple[Path, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """list, show, diff and restore open the store read-only: a 0444 file works, its bytes stay."""
    path, session, ids = store_file
    before = path.read_bytes()
    path.chmod(0o444)
    try:
        assert _run("list", "--store", str(path), session) == 0
        assert _run("show", "--store", str(path), session, ids[0]) == 0
        assert _run("diff", "--store", str(path), session, ids[0], ids[-1]) == 0
        out = path.parent / "restored.jsonl"
        assert _run("restore", "--store", str(path), session, "--out", str(out)) == 0
    finally:
        path.chmod(0o644)
    capsys.readouterr()
    assert path.read_bytes() == before


def test_reading_commands_refuse_another_applications_file_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """checkpoints list on a SQLite file that is not ctxflow's exits 2 and leaves it as it was."""
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sessions (who TEXT)")
    before = path.read_bytes()
    assert main(["checkpoints", "list", "--store", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ctxflow" in err and "Traceback" not in err
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
