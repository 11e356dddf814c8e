"""The statechart engine: charts as documents, the Engine, step records, listeners, diagrams,
and (optional) OpenTelemetry spans of what engines do.

python-statemachine is imported here and nowhere else in ctxflow.
"""

from ctxflow._telemetry import disable_telemetry, enable_telemetry
from ctxflow.engine._audit import AuditEvent, AuditLog
from ctxflow.engine._charts import (
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
from ctxflow.engine._diagrams import render_dot, render_mermaid, write_diagrams
from ctxflow.engine._engine import AsyncEngine, Engine
from ctxflow.engine._listeners import Listeners
from ctxflow.engine._records import KEEP_RECORDS, StepRecord, StepRecords
from ctxflow.engine._seams import (
    AllocationLike,
    Allocator,
    CompressionGuard,
    Consolidator,
    StoreCheckpointer,
    SupportsCheckpoints,
    WindowBuilder,
)
from ctxflow.errors import EventNotAllowed

__all__ = [
    "ACTIONS",
    "DEFAULT_CHART",
    "GUARDS",
    "KEEP_RECORDS",
    "AllocationLike",
    "Allocator",
    "AsyncEngine",
    "AuditEvent",
    "AuditLog",
    "Chart",
    "CompressionGuard",
    "Consolidator",
    "Engine",
    "EventNotAllowed",
    "Listeners",
    "PhaseConfig",
    "StepRecord",
    "StepRecords",
    "StoreCheckpointer",
    "SupportsCheckpoints",
    "TransitionSpec",
    "WindowBuilder",
    "chart_names",
    "chart_path",
    "disable_telemetry",
    "enable_telemetry",
    "load_chart",
    "render_dot",
    "render_mermaid",
    "write_diagrams",
]
