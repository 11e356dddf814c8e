"""``ctxflow run --plot``: tokens per layer over turns, with phases and events marked.

matplotlib is an optional extra (``pip install 'ctxflow[plot]'``); without it
:func:`plot_turns` raises a :class:`~ctxflow.errors.CtxflowError` saying how to
install it, and nothing is written.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctxflow.errors import CtxflowError

__all__ = ["PlotUnavailable", "plot_turns", "require_plot_extra"]

_PHASE_COLOURS = {
    "planning": "#dbeafe",
    "execution": "#dcfce7",
    "reflection": "#fef9c3",
    "paused": "#e5e7eb",
    "failed": "#fee2e2",
}


class PlotUnavailable(CtxflowError, ImportError):
    """The optional plotting extra is not installed."""


def require_plot_extra() -> None:
    """Raise :class:`PlotUnavailable` now when matplotlib is missing (before a long run)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'ctxflow[plot]'", rule="plot_extra"
        )


def _broke(turn: Mapping[str, Any]) -> bool:
    cache = turn.get("cache")
    return isinstance(cache, Mapping) and cache.get("broke_at") is not None


def plot_turns(turns: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Draw a PNG of per-layer window tokens over turns; return its path.

    Each turn is a report record with ``turn``, ``phase``, ``input_budget``,
    ``layers`` (name → ``{"used": int}``), ``compression`` (None or a report),
    ``checkpoint`` (None or an id) and, optionally, ``cache`` (``broke_at`` and
    ``why``: where the prompt-cache prefix broke is marked and labelled).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'ctxflow[plot]'", rule="plot_extra"
        ) from None
    target = Path(path)
    xs = [int(t["turn"]) for t in turns]
    names: list[str] = []
    for t in turns:
        for name in t.get("layers", {}):
            if name not in names:
                names.append(name)
    series = [[int(t.get("layers", {}).get(n, {}).get("used", 0)) for t in turns] for n in names]
    if any("window_tokens" in t for t in turns):
        # Fixed costs (system prompt, tool definitions, task) are measured, not
        # allocated: show them as the base so the stack adds up to the window.
        layered = [sum(col) for col in zip(*series, strict=True)] if series else [0] * len(turns)
        fixed = [
            max(0, int(t.get("window_tokens", 0)) - u) for t, u in zip(turns, layered, strict=True)
        ]
        names.insert(0, "fixed costs")
        series.insert(0, fixed)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    try:
        start = 0
        for i in range(1, len(turns) + 1):
            if i == len(turns) or turns[i]["phase"] != turns[start]["phase"]:
                phase = str(turns[start]["phase"])
                ax.axvspan(
                    xs[start] - 0.5,
                    xs[i - 1] + 0.5,
                    color=_PHASE_COLOURS.get(phase, "#f3f4f6"),
                    zorder=0,
                    label=f"phase: {phase}",
                )
                start = i
        if xs:
            ax.stackplot(xs, *series, labels=names, alpha=0.85, zorder=2)
            budgets = [int(t.get("input_budget", 0)) for t in turns]
            ax.plot(xs, budgets, color="black", linestyle="--", linewidth=1, label="input budget")
            top = max(budgets + [sum(col) for col in zip(*series, strict=True)] + [1])
            for key, height, marker, color in (
                ("compression", 1.02, "v", "#dc2626"),
                ("checkpoint", 1.06, "|", "#1d4ed8"),
            ):
                marks = [x for x, t in zip(xs, turns, strict=True) if t.get(key)]
                ax.scatter(
                    marks,
                    [top * height] * len(marks),
                    marker=marker,
                    color=color,
                    label=key,
                    zorder=3,
                )
            # Where the prompt-cache prefix broke, and why (compression, phase change, ...).
            breaks = [(x, t["cache"]) for x, t in zip(xs, turns, strict=True) if _broke(t)]
            if breaks:
                ax.scatter(
                    [x for x, _ in breaks],
                    [top * 1.10] * len(breaks),
                    marker="x",
                    color="#7c3aed",
                    label="prefix cache broke",
                    zorder=3,
                )
                for x, cache in breaks:
                    ax.annotate(
                        str(cache.get("why") or ""),
                        (x, top * 1.10),
                        textcoords="offset points",
                        xytext=(3, 4),
                        fontsize=7,
                        color="#7c3aed",
                    )
        ax.set_xlabel("turn (assistant message)")
        ax.set_ylabel("tokens in the window")
        ax.set_title(title or "ctxflow run: window tokens per layer")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(
            unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8
        )
        fig.tight_layout()
        fig.savefig(target, format="png")
    finally:
        plt.close(fig)
    return target
