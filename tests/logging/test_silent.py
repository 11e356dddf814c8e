"""The library is silent until the application configures logging; events are structured."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

import ctxflow._log
from ctxflow._log import get_logger
from ctxflow.errors import CtxflowWarning
from ctxflow.testing import capture_events
from ctxflow.tokens import HeuristicCounter, counter_for
from ctxflow.tokens import _counters as counters_module


def python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


class Records(logging.Handler):
    """A stdlib handler keeping every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    """A handler on the ``ctxflow`` logger at INFO for the test, removed afterwards."""
    handler = Records()
    logger = logging.getLogger("ctxflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_engine_and_sessions_print_nothing() -> None:
    """An engine walk and a ContextManager round trip write nothing to stdout or stderr."""
    done = python(
        """
        from ctxflow import ContextManager, Engine, Message
        from ctxflow.stores import MemoryStore

        e = Engine()
        e.send("start", task="x")
        e.send("plan_ready")
        e.send("step")
        e.send("reflect")
        e.send("finish")

        manager = ContextManager(MemoryStore())
        session = manager.create(messages=[Message.user("hello")])
        manager.append(session.session_id, [Message.assistant("hi"), Message.user("go on")])
        manager.flush()
        manager.close()
        """
    )
    assert (done.stdout, done.stderr) == ("", "")


def test_warning_events_do_not_reach_the_last_resort_handler() -> None:
    """Without logging configured, even warning and error events print nothing."""
    done = python(
        """
        from ctxflow._log import get_logger

        log = get_logger("ctxflow.loop")
        log.warning("agent.tool_error", tool="read", error="boom")
        log.error("something_failed", reason="x")
        """
    )
    assert (done.stdout, done.stderr) == ("", "")


def test_capture_events_receives_engine_transitions() -> None:
    """capture_events gets each transition as a dict of its event, level and fields."""
    from ctxflow import Engine

    with capture_events() as events:
        engine = Engine()
        engine.send("start", task="x")
        engine.send("plan_ready")
    transitions = [e for e in events if e["event"] == "transition"]
    assert [(e["source"], e["target"]) for e in transitions] == [
        ("idle", "planning"),
        ("planning", "execution"),
    ]
    first = transitions[0]
    assert first["level"] == "info" and first["trigger"] == "start"
    assert {"tokens", "checkpoint", "session"} <= set(first)


def test_capture_events_restores_the_logger() -> None:
    """The capturing handler and the level it set are gone after the block."""
    logger = logging.getLogger("ctxflow")
    handlers, level = list(logger.handlers), logger.level
    log = get_logger("ctxflow.tests.capture")
    with capture_events(logging.INFO) as events:
        log.debug("below", n=1)
        log.info("kept", n=2)
    log.info("after", n=3)
    assert events == [{"event": "kept", "level": "info", "n": 2}]
    assert (logger.handlers, logger.level) == (handlers, level)


def test_events_reach_a_user_handler_with_their_fields(records: Records) -> None:
    """A stdlib handler gets the fields on record.ctxflow and 'event key=value' as message."""
    log = get_logger("ctxflow.tests.user")
    log.info("transition", source="planning", target="execution", tokens=1200, note="two words")
    log.debug("below_the_level", n=1)
    [record] = records.records
    assert record.name == "ctxflow.tests.user" and record.levelno == logging.INFO
    assert record.ctxflow == {  # type: ignore[attr-defined]
        "event": "transition",
        "source": "planning",
        "target": "execution",
        "tokens": 1200,
        "note": "two words",
    }
    assert record.getMessage() == (
        "transition source=planning target=execution tokens=1200 note='two words'"
    )
    assert record.filename == "test_silent.py"  # the caller, not structlog


def test_basic_config_prints_readable_lines() -> None:
    """logging.basicConfig(level=INFO) is all it takes to see 'event key=value' lines."""
    done = python(
        """
        import logging

        from ctxflow._log import get_logger

        logging.basicConfig(level=logging.INFO)
        log = get_logger("ctxflow.demo")
        log.debug("hidden", n=0)
        log.info("compressed", tokens_before=9000, tokens_after=4000)
        """
    )
    assert done.stdout == ""
    assert done.stderr == "INFO:ctxflow.demo:compressed tokens_before=9000 tokens_after=4000\n"


def test_heuristic_fallback_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoding that cannot be loaded falls back to the heuristic with a CtxflowWarning."""
    monkeypatch.setitem(sys.modules, "bpe_openai", None)
    monkeypatch.setattr(counters_module, "_encodings", {})
    with pytest.warns(CtxflowWarning, match=r"o200k_base .*heuristic") as caught:
        counter = counter_for("o200k_base")
    assert isinstance(counter, HeuristicCounter)
    assert [w.filename for w in caught] == [__file__]


def test_events_below_the_level_skip_the_final_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library event below the stdlib logger's level is dropped before any formatting."""
    calls: list[str] = []
    real = ctxflow._log._to_stdlib

    def spy(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        calls.append(str(event_dict["event"]))
        return real(logger, method, event_dict)

    monkeypatch.setattr(ctxflow._log, "_to_stdlib", spy)
    log = get_logger("ctxflow.tests.cheap")
    logging.getLogger("ctxflow.tests.cheap").setLevel(logging.WARNING)
    try:
        log.debug("dropped", n=1)
        log.info("dropped_too", n=2)
        log.warning("formatted", n=3)
    finally:
        logging.getLogger("ctxflow.tests.cheap").setLevel(logging.NOTSET)
    assert calls == ["formatted"]


def test_get_logger_names_must_be_under_ctxflow() -> None:
    """A library logger outside the ctxflow tree is refused."""
    with pytest.raises(ValueError, match="under 'ctxflow'"):
        get_logger("engine")


def test_cli_prints_warnings_as_single_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """While the CLI runs, warning events and CtxflowWarnings are one '[warning]' line each."""
    from ctxflow.cli.output import command_output

    logger = logging.getLogger("ctxflow")
    handlers, level = list(logger.handlers), logger.level
    log = get_logger("ctxflow.tests.cli")
    with command_output():
        log.info("not_shown", n=1)
        log.warning("agent.tool_error", tool="read")
        ctxflow._log.warn("counts are estimates")
    err = capsys.readouterr().err
    assert err == "[warning] agent.tool_error tool=read\n[warning] counts are estimates\n"
    assert (logger.handlers, logger.level) == (handlers, level)
    with pytest.warns(CtxflowWarning):  # the warnings filters are back as they were
        warnings.warn("again", CtxflowWarning, stacklevel=1)
