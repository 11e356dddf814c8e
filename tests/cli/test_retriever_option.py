"""Tests for ``--retriever`` on ``ctxflow window`` and ``ctxflow run``, run as a user runs them."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ctxflow.memory._embedding as embedding_module
from ctxflow.cli import main

PONY = (
    Path(__file__).resolve().parents[2] / "examples" / "transcripts" / "openhands-ponyc-4588.jsonl"
)
# At this budget the reflection window of the last turn cannot hold all of its memory.
WINDOW = ["window", str(PONY), "--phase", "reflection", "--budget", "3000", "--explain"]


@pytest.mark.parametrize(
    ("name", "source"), [("bm25", "bm25"), ("embedding", "embedding"), ("hybrid", "bm25+embedding")]
)
def test_explain_names_the_retriever_and_each_reason_its_source(
    capsys: pytest.CaptureFixture[str], name: str, source: str
) -> None:
    """--explain says which retriever chose memory, and each kept item's reason says by what."""
    assert main([*WINDOW, "--retriever", name]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["messages"]
    headers = [line for line in err.splitlines() if "memory chosen by relevance" in line]
    assert headers and all(f"relevance ({source})" in line for line in headers)
    reasons = [
        line for line in err.splitlines() if line.startswith("  ") and ": relevance " in line
    ]
    assert reasons
    marked = re.compile(rf": relevance \d\.\d\d by {re.escape(source)}\b")
    if name == "bm25":
        assert not any(" by " in line for line in reasons)
    else:
        assert all(marked.search(line) for line in reasons)


def test_a_bad_retriever_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --retriever is refused by the parser, exit 2, naming the choices."""
    with pytest.raises(SystemExit) as stopped:
        main([*WINDOW, "--retriever", "bert"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--retriever: invalid choice: 'bert'" in err and "Traceback" not in err
    assert "'bm25', 'embedding', 'hybrid'" in err


@pytest.fixture
def without_extra(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """wordllama cannot be imported (as without the embeddings extra)."""
    embedding_module._model.cache_clear()
    for name in [name for name in sys.modules if name.split(".")[0] == "wordllama"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "wordllama", None)
    yield
    embedding_module._model.cache_clear()


@pytest.mark.usefixtures("without_extra")
@pytest.mark.parametrize("name", ["embedding", "hybrid"])
def test_without_the_extra_window_says_what_to_install(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Without the extra, --retriever embedding or hybrid is one line naming the extra, exit 2."""
    assert main([*WINDOW, "--retriever", name]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1
    assert err.startswith("ctxflow window: error: embedding retrieval needs the embeddings extra")
    assert "pip install 'ctxflow[embeddings]'" in err


@pytest.mark.usefixtures("without_extra")
def test_without_the_extra_run_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ctxflow run refuses --retriever hybrid without the extra before it writes any file."""
    report = tmp_path / "r.json"
    args = ["run", str(PONY), "--store", "memory", "--report", str(report)]
    assert main([*args, "--retriever", "hybrid"]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and "ctxflow[embeddings]" in err
    assert list(tmp_path.iterdir()) == []


def test_run_replays_with_the_hybrid_retriever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ctxflow run --retriever hybrid replays the conversation: every window valid and in budget."""
    report = tmp_path / "r.json"
    args = ["run", str(PONY), "--budget", "9000", "--store", "memory", "--quiet"]
    assert main([*args, "--retriever", "hybrid", "--report", str(report)]) == 0
    assert "result: ok" in capsys.readouterr().out
    totals = json.loads(report.read_text())["totals"]
    assert totals["invalid_windows"] == 0 and totals["over_budget_windows"] == 0
