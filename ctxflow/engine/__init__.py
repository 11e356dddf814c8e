"""The statechart engine: charts as documents, the Engine, step records, listeners, diagrams.

python-statemachine is imported here and nowhere else in ctxflow.
"""

from ctxflow.engine.audit import AuditEvent, AuditLog
from ctxflow.engine.charts import (
    ACTIONS,
    DEFAULT_CHART,
    GUARDS,
    Chart,
    PhaseConfig,
    TransitionSpec,
    chart_names,
    chart_path,
    load_chart,
)
from ctxflow.engine.diagrams import render_dot, render_mermaid, write_diagrams
from ctxflow.engine.engine import (
    Allocator,
    AsyncEngine,
    Checkpointer,
    CompressionGuard,
    Engine,
    EngineSnapshot,
    EventNotAllowed,
    MemoryCheckpointer,
    StoreCheckpointer,
    WindowBuilder,
)
from ctxflow.engine.listeners import Listeners
from ctxflow.engine.records import StepRecord

__all__ = [
    "ACTIONS",
    "DEFAULT_CHART",
    "GUARDS",
    "Allocator",
    "AsyncEngine",
    "AuditEvent",
    "AuditLog",
    "Chart",
    "Checkpointer",
    "CompressionGuard",
    "Engine",
    "EngineSnapshot",
    "EventNotAllowed",
    "Listeners",
    "MemoryCheckpointer",
    "PhaseConfig",
    "StepRecord",
    "StoreCheckpointer",
    "TransitionSpec",
    "WindowBuilder",
    "chart_names",
    "chart_path",
    "load_chart",
    "render_dot",
    "render_mermaid",
    "write_diagrams",
]
