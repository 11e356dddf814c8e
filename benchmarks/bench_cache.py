"""Prompt-cache reuse: how much of each request a provider's prefix cache could serve.

Every corpus conversation is replayed at 12k and 32k input budgets, one
request per assistant turn, rendered as Anthropic bodies; ``prefix_reuse``
compares each request with the one before it (tools, system blocks, message
fields and content blocks, cache marks stripped) and counts tokens with
``cl100k_base``. Three agents, in the same run:

- ``ctxflow``: ``ctxflow run``'s replay (the default chart and adapter);
- ``append-only`` (the ideal for caching, and no budget at all): every
  message so far, re-sent whole;
- ``trim_messages``: LangChain's ``trim_messages(strategy="last",
  start_on="human", include_system=True)`` to the same budget less the
  fixed costs (only when langchain-core is installed).

Metrics per budget: ``cache_reuse_<b>k`` (served / request tokens; peer: the
append-only agent), ``cache_reuse_<b>k_vs_trim`` (peer: trim_messages),
``cache_cost_<b>k`` (the estimated input cost at Anthropic's cached (0.1x)
and written (1.25x) prices, as a share of the same requests uncached; peer:
trim_messages), ``cache_breaks_<b>k_outside_compression`` (requests whose
prefix broke with no compression since the previous one) and
``cache_breaks_<b>k_outside_compression_or_phase_change`` (nor a phase
change: a phase shapes the window, so entering one may break the prefix).
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness import Harness
from ctxflow.adapters import CachePolicy, CachePrices, PrefixMeter, anthropic_body
from ctxflow.budget import tools_json, window_measure
from ctxflow.engine import Engine, load_chart
from ctxflow.errors import CtxflowError
from ctxflow.model import Message, Role, Transcript
from ctxflow.replay.inputs import RunInput, synthesise_tools
from ctxflow.replay.runner import replay
from ctxflow.stores import MemoryStore
from ctxflow.tokens import counter_for, get_profile

_PRICES = CachePrices.for_api("anthropic")
Count = Callable[[str], int]


class _Tally:
    """Served, written and total tokens over many requests, and their cost."""

    def __init__(self) -> None:
        self.served = self.written = self.total = 0
        self.cost = 0.0
        self.breaks = 0
        self.unexplained = 0

    def add(self, bodies: Sequence[dict[str, Any]], count: Count) -> list[str | None]:
        meter = PrefixMeter(count)
        where: list[str | None] = []
        for body in bodies:
            reuse = meter.measure(body)
            self.served += reuse.served
            self.written += reuse.written
            self.total += reuse.total
            self.cost += reuse.cost(_PRICES)
            where.append(reuse.broke_at)
        return where

    @property
    def share(self) -> float:
        return self.served / self.total if self.total else 0.0

    @property
    def cost_ratio(self) -> float:
        return self.cost / self.total if self.total else 1.0


def _turn_prefixes(messages: Sequence[Message]) -> list[list[Message]]:
    """The messages before each assistant turn (system messages aside)."""
    out: list[list[Message]] = []
    so_far: list[Message] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.ASSISTANT and so_far:
            out.append(list(so_far))
        so_far.append(message)
    return out


def _append_only(run: RunInput, system: str) -> list[dict[str, Any]]:
    return [
        anthropic_body(
            messages=prefix,
            model="m",
            max_tokens=1_000,
            system=system,
            tools=run.tools,
            cache=CachePolicy(last_message=True),
        )
        for prefix in _turn_prefixes(run.transcript.messages)
    ]


def _trimmed(run: RunInput, system: str, budget: int, count: Count) -> list[dict[str, Any]]:
    from benchmarks.bench_window import _langchain_trim, _to_langchain

    tools = json.loads(tools_json(run.tools)) if run.tools else []
    fixed = count(system) + count(tools_json(run.tools)) if run.tools else count(system)
    # The same per-message measure as ctxflow's window (tool calls and results included).
    measure = window_measure(counter_for("cl100k_base"))
    bodies = []
    for prefix in _turn_prefixes(run.transcript.messages):
        converted, counts = _to_langchain(prefix, measure)
        kept = _langchain_trim(converted, counts, max(1, budget - fixed))
        messages = [
            {"type": m.type, "content": m.content, "calls": getattr(m, "tool_calls", None)}
            for m in kept
        ]
        bodies.append({"tools": tools, "system": system, "messages": messages})
    return bodies


def _ctxflow(run: RunInput, budget: int) -> tuple[list[dict[str, Any]], list[bool], list[bool]]:
    chart = load_chart("agent_loop")
    profile = get_profile("claude-sonnet-4-5")
    bodies: list[dict[str, Any]] = []
    result = replay(
        run,
        engine_factory=lambda state: Engine(
            chart, model=profile, state=state, budget=budget, store=MemoryStore()
        ),
        on_window=bodies.append,
    )
    phases = [t.phase for t in result.turns]
    changed = [k > 0 and phases[k] != phases[k - 1] for k in range(len(phases))]
    return bodies, [t.compression is not None for t in result.turns], changed


def _measure(h: Harness, transcripts: Sequence[Transcript], budget: int, count: Count) -> None:
    ours, ideal, trim = _Tally(), _Tally(), _Tally()
    has_peer = h.has("langchain_core")
    refused = 0
    for transcript in transcripts:
        run = RunInput(
            transcript=transcript,
            tools=synthesise_tools(transcript.messages),
            format="jsonl",
            tools_synthesised=True,
        )
        system = next((m.text for m in transcript.messages if m.role is Role.SYSTEM), "")
        try:
            bodies, compressed, changed = _ctxflow(run, budget)
        except CtxflowError:
            refused += 1
            continue
        where = ours.add(bodies, count)
        ours.breaks += sum(
            1 for broke, fired in zip(where, compressed, strict=True) if broke and not fired
        )
        ours.unexplained += sum(
            1
            for broke, fired, moved in zip(where, compressed, changed, strict=True)
            if broke and not fired and not moved
        )
        with contextlib.suppress(CtxflowError):  # a transcript the API would refuse as it is
            ideal.add(_append_only(run, system), count)
        if has_peer:
            trim.add(_trimmed(run, system, budget, count), count)
    k = budget // 1000
    h.record(
        f"cache_reuse_{k}k",
        ours.share,
        "share",
        peer="append-only agent (no budget)",
        peer_value=ideal.share,
        note="request tokens a prefix cache filled by the previous request could serve",
        conversations=len(transcripts) - refused,
        refused=refused,
    )
    if has_peer:
        h.record(
            f"cache_reuse_{k}k_vs_trim",
            ours.share,
            "share",
            peer="langchain_core.trim_messages",
            peer_value=trim.share,
        )
    h.record(
        f"cache_cost_{k}k",
        ours.cost_ratio,
        "share of uncached",
        peer="langchain_core.trim_messages" if has_peer else None,
        peer_value=trim.cost_ratio if has_peer else None,
        note="estimated input cost, cached x0.1 and written x1.25, over the same requests uncached",
        request_tokens=ours.total,
        append_only_request_tokens=ideal.total,
    )
    h.record(
        f"cache_breaks_{k}k_outside_compression",
        ours.breaks,
        "requests",
        note="prefix broke with no compression since the previous request",
    )
    h.record(
        f"cache_breaks_{k}k_outside_compression_or_phase_change",
        ours.unexplained,
        "requests",
        note="prefix broke with neither a compression nor a phase change since the previous one",
    )


def run(h: Harness) -> None:
    """Replay the corpus at each budget and record reuse and cost beside the peers."""
    counter = counter_for("cl100k_base")
    count: Count = functools.lru_cache(maxsize=1 << 16)(counter.count)
    transcripts = h.corpus()[: h.size(len(h.corpus()), 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for budget in (12_000,) if h.smoke else (12_000, 32_000):
            _measure(h, transcripts, budget, count)
