"""Test kit for ctxflow and its users: test doubles, corpus helpers, assertions."""

from ctxflow.testing._corpus import (
    CORPUS_ENV,
    concatenate,
    corpus_path,
    load_corpus,
)
from ctxflow.testing._doubles import CountingCounter, CountingMeasure, FixedCounter
from ctxflow.testing._engine import (
    TransitionRecorder,
    assert_transition,
    event_paths,
    expected_phases,
    transition_cover,
)
from ctxflow.testing._llm import (
    AsyncScriptedLLM,
    ScriptedLLM,
    ScriptExhausted,
    prompt_too_long,
    text_response,
    tool_call_response,
)
from ctxflow.testing._logs import capture_events

__all__ = [
    "CORPUS_ENV",
    "AsyncScriptedLLM",
    "CountingCounter",
    "CountingMeasure",
    "FixedCounter",
    "ScriptExhausted",
    "ScriptedLLM",
    "TransitionRecorder",
    "assert_transition",
    "capture_events",
    "concatenate",
    "corpus_path",
    "event_paths",
    "expected_phases",
    "load_corpus",
    "prompt_too_long",
    "text_response",
    "tool_call_response",
    "transition_cover",
]
