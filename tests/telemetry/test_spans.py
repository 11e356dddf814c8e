"""OpenTelemetry spans and metrics of transitions, compressions and checkpoints."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from ctxflow import _telemetry
from ctxflow.engine import AsyncEngine, Engine, disable_telemetry, enable_telemetry
from ctxflow.errors import EventNotAllowed
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.sessions import ContextManager, Limits
from ctxflow.stores import MemoryStore
from ctxflow.testing import FixedCounter


class Telemetry:
    """An SDK tracer and meter provider with in-memory exporters, wired to ctxflow."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        meters = MeterProvider(metric_readers=[self.reader])
        enable_telemetry(tracer_provider=tracers, meter_provider=meters)

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``, oldest first."""
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def sums(self) -> dict[str, int]:
        """Every counter's total over its data points."""
        data = self.reader.get_metrics_data()
        totals: dict[str, int] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = list(metric.data.data_points)
                    if hasattr(points[0], "value"):
                        totals[metric.name] = sum(int(p.value) for p in points)
                    else:
                        totals[metric.name] = sum(int(p.count) for p in points)
        return totals


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Telemetry on for the test (SDK providers of its own), off afterwards."""
    kit = Telemetry()
    yield kit
    disable_telemetry()


def tool_loop(n: int) -> list[Message]:
    """A task and ``n`` tool rounds with long results."""
    out = [Message.user("Fix the failing dates test.")]
    for i in range(n):
        call = ToolUseBlock(id=f"u{i}", name="search", input={"q": f"q{i}"})
        out.append(Message(role="assistant", content=(call,)))
        result = ToolResultBlock(tool_use_id=f"u{i}", content=f"log line {i} " * 60)
        out.append(Message(role="user", content=(result,)))
    return out


def run(engine: Engine | AsyncEngine, event: str, **kwargs: Any) -> Any:
    """Send ``event`` to a sync or an async engine."""
    if isinstance(engine, AsyncEngine):
        return asyncio.run(engine.send(event, **kwargs))
    return engine.send(event, **kwargs)


@pytest.mark.parametrize("kind", [Engine, AsyncEngine])
def test_transition_compression_and_checkpoint_spans(
    telemetry: Telemetry, kind: type[Engine] | type[AsyncEngine]
) -> None:
    """A phase change is a transition span; its compression and checkpoint are its children."""
    engine = kind(budget=1500, counter=FixedCounter())
    run(engine, "start", task="fix it")
    run(engine, "plan_ready")
    engine.add_messages(tool_loop(20))
    record = run(engine, "reflect")
    assert record.compression is not None and record.checkpoint_id is not None

    transitions = telemetry.named("ctxflow.transition")
    assert [(s.attributes or {})["ctxflow.trigger"] for s in transitions] == [
        "start",
        "plan_ready",
        "reflect",
    ]
    reflect = transitions[-1]
    attributes = dict(reflect.attributes or {})
    assert attributes["ctxflow.source"] == "execution"
    assert attributes["ctxflow.target"] == "reflection"
    assert attributes["ctxflow.session"] == engine.session_id
    assert attributes["ctxflow.tokens_before"] == record.tokens_before
    assert attributes["ctxflow.tokens_after"] == record.tokens_after

    (compression,) = telemetry.named("ctxflow.compression")
    assert compression.parent is not None and reflect.context is not None
    assert compression.parent.span_id == reflect.context.span_id
    assert dict(compression.attributes or {})["ctxflow.tokens_after"] == record.tokens_after
    assert dict(compression.attributes or {})["ctxflow.reason"] == "guard"

    checkpoints = telemetry.named("ctxflow.checkpoint")
    assert len(checkpoints) == 3  # one per phase change
    last = checkpoints[-1]
    assert dict(last.attributes or {})["ctxflow.checkpoint"] == record.checkpoint_id
    assert last.parent is not None and last.parent.span_id == reflect.context.span_id
    for span in (compression, last):  # children lie within their transition
        assert reflect.start_time is not None and reflect.end_time is not None
        assert span.start_time is not None and span.end_time is not None
        assert reflect.start_time <= span.start_time <= span.end_time <= reflect.end_time

    totals = telemetry.sums()
    assert totals["ctxflow.transitions"] == 3
    assert totals["ctxflow.checkpoints"] == 3
    assert totals["ctxflow.compressions"] == 1
    assert totals["ctxflow.transition.duration"] == 3


def test_a_refused_event_ends_its_span_with_the_error(telemetry: Telemetry) -> None:
    """An event the chart refuses leaves no span open: none is started before it is checked."""
    engine = Engine(counter=FixedCounter())
    with pytest.raises(EventNotAllowed):
        engine.send("reflect")
    assert telemetry.named("ctxflow.transition") == []


def test_a_failed_effect_marks_the_transition_span(telemetry: Telemetry) -> None:
    """A checkpoint write that fails rolls the event back and ends its span as an error."""

    class Broken:
        """A checkpointer that fails every write."""

        def capture(self, *args: Any, **kwargs: Any) -> str:
            raise OSError("disk full")

        def restore(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("not called")

    engine = Engine(counter=FixedCounter(), checkpointer=Broken())
    with pytest.raises(Exception, match="disk full"):
        engine.send("start", task="t")
    (span,) = telemetry.named("ctxflow.transition")
    assert span.status.status_code is StatusCode.ERROR
    assert "disk full" in (span.status.description or "")
    assert engine.phase == "idle"


def test_manual_checkpoint_and_manager_compression(telemetry: Telemetry) -> None:
    """``engine.checkpoint()`` and a manager's limits compression are spans of their own."""
    manager = ContextManager(
        MemoryStore(),
        limits=Limits(max_messages=10, max_tokens=100_000),
        engine_options={"counter": FixedCounter()},
    )
    engine = manager.create(messages=[Message.user("task")])
    cid = engine.checkpoint("manual")
    manual = [
        s
        for s in telemetry.named("ctxflow.checkpoint")
        if dict(s.attributes or {})["ctxflow.checkpoint_trigger"] == "manual"
    ]
    assert [dict(s.attributes or {})["ctxflow.checkpoint"] for s in manual] == [cid]
    assert manual[0].parent is None
    manager.append(engine.session_id, tool_loop(10)[1:])
    (compression,) = telemetry.named("ctxflow.compression")
    attributes = dict(compression.attributes or {})
    assert attributes["ctxflow.reason"] == "limits"
    assert attributes["ctxflow.tokens_after"] < attributes["ctxflow.tokens_before"]


def test_disabled_reports_nothing(telemetry: Telemetry) -> None:
    """After ``disable_telemetry`` an engine walk starts no span."""
    disable_telemetry()
    engine = Engine(counter=FixedCounter())
    engine.send("start", task="t")
    engine.checkpoint()
    assert telemetry.spans.get_finished_spans() == ()
    assert _telemetry.STATE.on is False


def test_nothing_of_opentelemetry_is_imported_until_enabled() -> None:
    """An engine walk imports no opentelemetry module unless telemetry is enabled."""
    code = """
        import sys
        from ctxflow.engine import Engine
        from ctxflow.testing import FixedCounter
        engine = Engine(counter=FixedCounter())
        engine.send("start", task="t")
        engine.send("plan_ready")
        engine.checkpoint()
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == "[]"


def test_without_the_extra_enable_names_it() -> None:
    """Without opentelemetry-api, ``enable_telemetry`` names the extra and leaves telemetry off."""
    code = """
        import sys
        sys.modules["opentelemetry"] = None  # as if the package were not installed
        from ctxflow import _telemetry
        from ctxflow.engine import enable_telemetry
        try:
            enable_telemetry()
        except ModuleNotFoundError as exc:
            print(exc, _telemetry.STATE.on)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == (
        "telemetry needs opentelemetry-api: pip install 'ctxflow[otel]' False"
    )
