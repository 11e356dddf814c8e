"""One agent's context as one typed value, and its plain form in a checkpoint.

An :class:`AgentContext` is the conversation (with its cached counts and the
measure they were taken with), the layered state and the chart configuration
with its history values. The engine holds one, checkpoints capture and
restore it, and the manager, replay and merge/split all carry it; nothing
keeps a second copy that could drift.

Beside the context, a session carries a little bookkeeping of its own
(:class:`SessionInfo`: user data, a version that moves on every change, how
far its audit log got). Both travel in a checkpoint as plain data:

- ``state``: ``{"layers": <LayeredState.to_plain()>, "data": {...},
  "version": n, "audit_seq": n, "audit": [...]}``;
- ``chart``: ``{"chart": name, "configuration": [...], "history": {...}}``,
  state ids only.

:func:`from_checkpoint` also reads the two older forms ctxflow 0.1.0 wrote:
an engine's bare layered state, and a manager's state with no chart
configuration (the session then starts in the chart's initial state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ctxflow.errors import FormatError, PolicyError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation

__all__ = [
    "AgentContext",
    "ChartConfiguration",
    "SessionInfo",
    "check_plain",
    "from_checkpoint",
    "to_checkpoint",
]


def _history(value: Mapping[str, Sequence[str]]) -> Mapping[str, tuple[str, ...]]:
    return {str(k): tuple(str(s) for s in v) for k, v in dict(value).items()}


def _plain_dict(value: Mapping[str, object]) -> dict[str, object]:
    return dict(value)


def _ids(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(s) for s in value)


@attrs.frozen(kw_only=True)
class ChartConfiguration:
    """Where a chart is: its name, the active state ids and the history values.

    An empty ``configuration`` means the chart's initial configuration.
    """

    chart: str = ""
    configuration: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    history: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_history)

    def to_plain(self) -> dict[str, Any]:
        """The configuration as plain data (lists and strings)."""
        return {
            "chart": self.chart,
            "configuration": list(self.configuration),
            "history": {k: list(v) for k, v in self.history.items()},
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> ChartConfiguration:
        """Read :meth:`to_plain`'s output; anything else is a ``FormatError``."""
        if not isinstance(data, Mapping):
            raise FormatError(
                f"a chart configuration must be a mapping (got {type(data).__name__})",
                rule="chart_plain",
            )
        chart = data.get("chart", "")
        configuration = data.get("configuration", [])
        history = data.get("history", {})
        ok = (
            isinstance(chart, str)
            and isinstance(configuration, list | tuple)
            and all(isinstance(s, str) for s in configuration)
            and isinstance(history, Mapping)
            and all(
                isinstance(k, str)
                and isinstance(v, list | tuple)
                and all(isinstance(s, str) for s in v)
                for k, v in history.items()
            )
        )
        if not ok:
            raise FormatError(
                "a chart configuration must hold a chart name, a list of state ids and a "
                f"mapping of history ids to state ids (got {dict(data)!r:.200})",
                rule="chart_plain",
            )
        return cls(chart=chart, configuration=tuple(configuration), history=history)


@attrs.frozen(kw_only=True)
class AgentContext:
    """An agent's context: conversation, layered state and chart configuration."""

    conversation: Conversation
    state: LayeredState = attrs.field(factory=LayeredState)
    chart: ChartConfiguration = attrs.field(factory=ChartConfiguration)

    @property
    def phase(self) -> str:
        """The phase the runtime layer records."""
        return self.state.runtime.phase


@attrs.frozen(kw_only=True)
class SessionInfo:
    """A session's bookkeeping beside its context: user data, version, audit position."""

    data: Mapping[str, object] = attrs.field(factory=dict, converter=_plain_dict)
    version: int = 0
    audit_seq: int = 0


def to_checkpoint(
    context: AgentContext,
    session: SessionInfo = SessionInfo(),
    audit: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plain ``state`` and ``chart`` mappings a checkpoint stores for ``context``."""
    state = {
        "layers": context.state.to_plain(),
        "data": dict(session.data),
        "version": session.version,
        "audit_seq": session.audit_seq,
        "audit": list(audit),
    }
    return state, context.chart.to_plain()


def from_checkpoint(
    conversation: Conversation, state: Mapping[str, Any], chart: Mapping[str, Any]
) -> tuple[AgentContext, SessionInfo]:
    """The context and session info a checkpoint's plain ``state`` and ``chart`` hold."""
    if not isinstance(state, Mapping):
        raise FormatError(
            f"a checkpoint's state must be a mapping (got {type(state).__name__})",
            rule="state_plain",
        )
    if "layers" in state:
        layers = state["layers"]
        data, version, seq = state.get("data", {}), state.get("version", 0), state.get("audit_seq")
    else:  # 0.1.0's engine stored the bare layered state
        layers, data, version, seq = state, {}, 0, 0
    if not isinstance(layers, Mapping) or not isinstance(data, Mapping):
        raise FormatError(
            "a checkpoint's state must hold the layers and the data as mappings",
            rule="state_plain",
        )
    if not isinstance(version, int) or not isinstance(seq, int | None):
        raise FormatError(
            f"a checkpoint's version and audit position must be integers "
            f"(got {version!r}, {seq!r})",
            rule="state_plain",
        )
    context = AgentContext(
        conversation=conversation,
        state=LayeredState.from_plain(layers),
        chart=ChartConfiguration.from_plain(chart),
    )
    return context, SessionInfo(data=data, version=version, audit_seq=seq or 0)


def check_plain(value: object, where: str, depth: int = 0) -> None:
    """Refuse ``value`` with a ``PolicyError`` unless a checkpoint can store it as plain data."""
    if depth > 64:
        raise PolicyError(f"{where} must nest at most 64 deep", rule="plain_data")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return
    if isinstance(value, list | tuple):
        for at, item in enumerate(value):
            check_plain(item, f"{where}[{at}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PolicyError(
                    f"{where} must have string keys (got {type(key).__name__})",
                    rule="plain_data",
                )
            check_plain(item, f"{where}[{key!r}]", depth + 1)
        return
    raise PolicyError(
        f"{where} must be plain data (None, bool, int, float, str, bytes, list, dict) "
        f"(got {type(value).__name__})",
        rule="plain_data",
    )
