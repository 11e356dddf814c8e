"""``ctxflow run --plot``: tokens per layer over turns, with phases and events marked.

Below the layers, a second panel shows what the long-term memory tiers
(episodic, semantic, procedural) held in each window; it says so when no
window carried any.

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

#: The long-term memory tiers the lower panel stacks, and their colours.
_TIER_COLOURS = {
    "episodic": "#f59e0b",
    "semantic": "#10b981",
    "procedural": "#6366f1",
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
    ``why``: where the prompt-cache prefix broke is marked and labelled) and
    ``tiers`` (memory tier name → tokens used: the episodic, semantic and
    procedural tiers are drawn in a panel under the layers).
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
    fig, (ax, tier_ax) = plt.subplots(
        2,
        1,
        figsize=(11, 7.5),
        dpi=110,
        sharex=True,
        gridspec_kw={"height_ratios": (3, 1.2)},
    )
    try:
        _shade_phases(ax, xs, turns, labelled=True)
        _shade_phases(tier_ax, xs, turns, labelled=False)
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
        ax.set_ylabel("tokens in the window")
        ax.set_title(title or "ctxflow run: window tokens per layer")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(
            unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8
        )
        _draw_tiers(tier_ax, xs, turns)
        tier_ax.set_xlabel("turn (assistant message)")
        fig.tight_layout()
        fig.savefig(target, format="png")
    finally:
        plt.close(fig)
    return target


def _shade_phases(
    ax: Any, xs: Sequence[int], turns: Sequence[Mapping[str, Any]], *, labelled: bool
) -> None:
    """Shade each run of turns in one phase in that phase's colour."""
    start = 0
    for i in range(1, len(turns) + 1):
        if i == len(turns) or turns[i]["phase"] != turns[start]["phase"]:
            phase = str(turns[start]["phase"])
            ax.axvspan(
                xs[start] - 0.5,
                xs[i - 1] + 0.5,
                color=_PHASE_COLOURS.get(phase, "#f3f4f6"),
                zorder=0,
                label=f"phase: {phase}" if labelled else None,
            )
            start = i


def _draw_tiers(ax: Any, xs: Sequence[int], turns: Sequence[Mapping[str, Any]]) -> None:
    """Stack the long-term memory tiers' tokens per turn, or say that no window carried any."""
    series = {
        name: [int((t.get("tiers") or {}).get(name, 0)) for t in turns] for name in _TIER_COLOURS
    }
    ax.set_ylabel("long-term memory\ntokens", fontsize=8)
    if xs and any(any(values) for values in series.values()):
        ax.stackplot(
            xs,
            *series.values(),
            labels=list(series),
            colors=list(_TIER_COLOURS.values()),
            alpha=0.85,
            zorder=2,
        )
        ax.set_ylim(bottom=0)
        handles, labels = ax.get_legend_handles_labels()
        tiers = [(h, label) for h, label in zip(handles, labels, strict=True) if label in series]
        ax.legend(
            [h for h, _ in tiers],
            [label for _, label in tiers],
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=8,
            title="memory tier",
        )
    else:
        recorded = any("tiers" in t for t in turns)
        ax.text(
            0.5,
            0.5,
            "no window carried episodic, semantic or procedural memory"
            if recorded
            else "no memory tiers recorded",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="#6b7280",
        )
        ax.set_ylim(0, 1)
        ax.set_yticks([])
