"""Optional OpenTelemetry spans and metrics for transitions, compressions and checkpoints.

Off until :func:`enable_telemetry` is called, and then only through the
``opentelemetry-api`` package (the ``ctxflow[otel]`` extra): without that call
nothing of OpenTelemetry is imported and the engine pays one attribute check
per event (``STATE.on``). With it, spans and instruments come from the
providers given, or from OpenTelemetry's global ones (a no-op until the
application installs an SDK).

The engine reports each event once, after the fact, with the times it
measured: a ``ctxflow.transition`` span covers an applied event (from its
check to its commit), and its ``ctxflow.compression`` and ``ctxflow.checkpoint``
spans are its children. A compression or checkpoint outside an event (a
manager's limits, ``engine.checkpoint()``) is a span of its own under the
application's current span. Spans take explicit parents rather than the
ambient context, so the sync and the async engine (whose operations are
generators suspended across effects) report the same tree.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import time
from typing import Any

__all__ = ["STATE", "disable_telemetry", "enable_telemetry"]

_SCOPE = "ctxflow"


class _State:
    """Whether telemetry is on, and the tracer and instruments when it is."""

    on: bool = False
    tracer: Any = None
    trace: Any = None
    transitions: Any = None
    compressions: Any = None
    checkpoints: Any = None
    transition_ms: Any = None
    compression_ms: Any = None
    checkpoint_ms: Any = None


#: The engine checks ``STATE.on`` before it calls anything here.
STATE = _State()


def enable_telemetry(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Report transitions, compressions and checkpoints as OpenTelemetry spans and metrics.

    ``tracer_provider`` and ``meter_provider`` default to OpenTelemetry's global
    ones. Needs ``opentelemetry-api`` (``pip install 'ctxflow[otel]'``): without
    it, ``ModuleNotFoundError`` naming the extra, and telemetry stays off.
    """
    try:
        trace = importlib.import_module("opentelemetry.trace")
        metrics = importlib.import_module("opentelemetry.metrics")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "telemetry needs opentelemetry-api: pip install 'ctxflow[otel]'",
            name="opentelemetry",
        ) from exc
    tracers = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    meters = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    version = _version()
    meter = meters.get_meter(_SCOPE, version)
    STATE.trace = trace
    STATE.tracer = tracers.get_tracer(_SCOPE, version)
    STATE.transitions = meter.create_counter(
        "ctxflow.transitions", unit="{event}", description="Events applied by engines"
    )
    STATE.compressions = meter.create_counter(
        "ctxflow.compressions", unit="{run}", description="Compression runs that changed a view"
    )
    STATE.checkpoints = meter.create_counter(
        "ctxflow.checkpoints", unit="{checkpoint}", description="Checkpoints written"
    )
    STATE.transition_ms = meter.create_histogram(
        "ctxflow.transition.duration", unit="ms", description="Time to apply an event"
    )
    STATE.compression_ms = meter.create_histogram(
        "ctxflow.compression.duration", unit="ms", description="Time of a compression run"
    )
    STATE.checkpoint_ms = meter.create_histogram(
        "ctxflow.checkpoint.duration", unit="ms", description="Time to write a checkpoint"
    )
    STATE.on = True


def disable_telemetry() -> None:
    """Stop reporting (spans already started still end)."""
    STATE.on = False


def _version() -> str:
    try:
        return importlib.metadata.version("ctxflow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "0+unknown"


def _times(started: float) -> tuple[int, int, float]:
    """Start and end in ns since the epoch for a ``time.perf_counter`` start; and its ms."""
    elapsed = time.perf_counter() - started
    end = time.time_ns()
    return end - int(elapsed * 1e9), end, elapsed * 1000


def _span(name: str, started: float, attributes: dict[str, Any], parent: Any) -> float:
    """Record a finished span from ``started`` to now (under ``parent``); its ms."""
    start, end, ms = _times(started)
    context = STATE.trace.set_span_in_context(parent) if parent is not None else None
    span = STATE.tracer.start_span(name, context=context, start_time=start, attributes=attributes)
    span.end(end_time=end)
    return ms


def transition_started(session_id: str, trigger: str, source: str) -> Any:
    """Open the span of an event being applied (ended by :func:`transition_ended`)."""
    return STATE.tracer.start_span(
        "ctxflow.transition",
        attributes={
            "ctxflow.session": session_id,
            "ctxflow.trigger": trigger,
            "ctxflow.source": source,
        },
    )


def transition_ended(span: Any, record: Any = None, error: BaseException | None = None) -> None:
    """Close an event's span: with its record when it landed, with the error when rolled back."""
    if span is None:
        return
    if record is not None:
        span.set_attributes(
            {
                "ctxflow.target": record.target,
                "ctxflow.phase_changed": record.phase_changed,
                "ctxflow.tokens_before": record.tokens_before,
                "ctxflow.tokens_after": record.tokens_after,
            }
        )
        labels = {"trigger": record.trigger, "source": record.source, "target": record.target}
        STATE.transitions.add(1, labels)
        STATE.transition_ms.record(record.duration_ms, labels)
    if error is not None:
        span.record_exception(error)
        span.set_status(STATE.trace.Status(STATE.trace.StatusCode.ERROR, str(error)))
    span.end()


def compressed(
    started: float,
    *,
    session_id: str,
    phase: str,
    reason: str,
    tokens_before: int | None,
    tokens_after: int | None,
    parent: Any = None,
) -> None:
    """Report one compression run that began at ``started`` (``time.perf_counter``)."""
    attributes: dict[str, Any] = {
        "ctxflow.session": session_id,
        "ctxflow.phase": phase,
        "ctxflow.reason": reason,
    }
    if tokens_before is not None and tokens_after is not None:
        attributes["ctxflow.tokens_before"] = tokens_before
        attributes["ctxflow.tokens_after"] = tokens_after
    ms = _span("ctxflow.compression", started, attributes, parent)
    labels = {"phase": phase, "reason": reason}
    STATE.compressions.add(1, labels)
    STATE.compression_ms.record(ms, labels)


def checkpointed(
    checkpoint_id: str,
    started: float,
    *,
    session_id: str,
    phase: str,
    trigger: str,
    parent: Any = None,
) -> None:
    """Report one checkpoint written since ``started`` (``time.perf_counter``)."""
    attributes = {
        "ctxflow.session": session_id,
        "ctxflow.phase": phase,
        "ctxflow.checkpoint_trigger": trigger,
        "ctxflow.checkpoint": checkpoint_id,
    }
    ms = _span("ctxflow.checkpoint", started, attributes, parent)
    labels = {"phase": phase, "trigger": trigger}
    STATE.checkpoints.add(1, labels)
    STATE.checkpoint_ms.record(ms, labels)
