"""Do phases and models change what the model sees? Window message lists over the corpus.

For every corpus conversation, the window before its last assistant turn is
built from the raw conversation (no ladder) at a budget of 35% of its tokens
plus its system prompt, once per phase of the default chart
(``claude-sonnet-4-5``) and once in execution for ``claude-opus-4`` and
``claude-haiku-4-5``. Among the conversations where the budget binds (the
window leaves something out or masks it), the shares of:

- ``phases.all_differ``: the three phases' message lists all differ;
- ``phases.direction``: execution keeps at least as many tokens of the latest
  three tool results as reflection, and reflection holds at least as many
  messages as execution, one of the two strictly;
- ``phases.models_differ``: the Opus and Haiku lists differ.

The phases-and-models issue sets goals of 0.9, 0.8 and 0.9.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from benchmarks.harness import Harness
from ctxflow.budget import Window, build_window, window_measure
from ctxflow.errors import CtxflowError
from ctxflow.layers import LayeredState, SystemLayer
from ctxflow.model import Conversation, Message, Role
from ctxflow.replay.inputs import synthesise_tools
from ctxflow.tokens import counter_for, get_profile

PHASES = ("planning", "execution", "reflection")


def _key(message: Message) -> str:
    return json.dumps([message.role.value, [repr(b) for b in message.content]])


def _latest_results(window: Window, count: Any) -> int:
    results = [b for m in window.messages for b in m.tool_results][-3:]
    return sum(count(b.text) for b in results)


def _window(
    state: LayeredState, conversation: Conversation, phase: str, model: str, budget: int
) -> Window:
    return build_window(
        state.with_runtime(phase=phase),
        conversation,
        phase=phase,
        counter=counter_for("cl100k_base"),
        profile=get_profile(model),
        budget=budget,
    )


def run(h: Harness) -> None:
    """Build the windows and record the four shares."""
    counter = counter_for("cl100k_base")
    measure = window_measure(counter)
    binding = differ = direction = models = 0
    transcripts = h.corpus()[: h.size(len(h.corpus()), 20)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for transcript in transcripts:
            messages = list(transcript.messages)
            last = max((i for i, m in enumerate(messages) if m.role is Role.ASSISTANT), default=0)
            if not last:
                continue
            system = next((m.text for m in messages if m.role is Role.SYSTEM), "")
            history = [m for m in messages[:last] if m.role is not Role.SYSTEM]
            conversation = Conversation(history, measure=measure)
            tools = synthesise_tools(messages)
            state = LayeredState(system=SystemLayer(prompt=system, tools=tools))
            budget = int(conversation.effective_tokens * 0.35) + counter.count(system) + 1500

            try:
                by_phase = {
                    p: _window(state, conversation, p, "claude-sonnet-4-5", budget) for p in PHASES
                }
                opus, haiku = (
                    _window(state, conversation, "execution", m, budget)
                    for m in ("claude-opus-4", "claude-haiku-4-5")
                )
            except CtxflowError:
                continue
            if not any(w.report.excluded for w in by_phase.values()):
                continue
            binding += 1
            lists = {p: tuple(_key(m) for m in w.messages) for p, w in by_phase.items()}
            differ += len(set(lists.values())) == len(PHASES)
            execution, reflection = by_phase["execution"], by_phase["reflection"]
            latest = _latest_results(execution, counter.count) - _latest_results(
                reflection, counter.count
            )
            reach = len(reflection.messages) - len(execution.messages)
            direction += latest >= 0 and reach >= 0 and (latest > 0 or reach > 0)
            models += tuple(_key(m) for m in opus.messages) != tuple(
                _key(m) for m in haiku.messages
            )
    share = (lambda n: n / binding) if binding else (lambda n: 0.0)
    note = f"{binding} of {len(transcripts)} conversations where a 35% budget binds"
    h.record("phases.all_differ", share(differ), "share", note=note + "; goal >= 0.9")
    h.record("phases.direction", share(direction), "share", note=note + "; goal >= 0.8")
    h.record("phases.models_differ", share(models), "share", note=note + "; goal >= 0.9")
