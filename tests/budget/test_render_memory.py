"""Memory rendering: a tier's lines, sizes and settled split are kept while the tier is.

A window renders memory every step, but memory changes only at a consolidation:
the split of a tier into settled and newer items is kept by the tier's identity.
These tests show the kept split never serves a tier that changed.
"""

from __future__ import annotations

import attrs

from ctxflow.budget import render_context
from ctxflow.layers import Fact, LayeredState
from ctxflow.tokens import counter_for

ALLOW = {"semantic": 10_000, "runtime": 1_000}


class Counting:
    """A counter that counts its calls (chars / 4)."""

    def __init__(self) -> None:
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return len(text) // 4 + 1


def _state(*facts: Fact) -> LayeredState:
    return LayeredState().with_facts(facts)


def test_a_second_render_of_the_same_memory_counts_no_item_again() -> None:
    counter = Counting()
    state = _state(*(Fact(key=f"k{i}", value=f"value {i}") for i in range(50)))
    first = render_context(state, counter=counter, allowances=ALLOW)
    calls = counter.calls
    again = render_context(state, counter=counter, allowances=ALLOW)
    assert again == first
    # only the headings and the runtime section are counted again, not the 50 items
    assert counter.calls - calls < 10 < calls


def test_a_changed_tier_is_rendered_again() -> None:
    counter = counter_for("cl100k_base")
    state = _state(Fact(key="db", value="postgres 15"))
    assert "postgres 15" in render_context(state, counter=counter, allowances=ALLOW).text
    changed = state.with_facts([Fact(key="db", value="postgres 16")])
    text = render_context(changed, counter=counter, allowances=ALLOW).text
    assert "postgres 16" in text


def test_settling_moves_items_in_front_of_the_messages() -> None:
    counter = counter_for("cl100k_base")
    state = _state(Fact(key="db", value="postgres 15"))
    before = render_context(state, counter=counter, allowances=ALLOW)
    assert "postgres 15" in before.text and "postgres 15" not in before.task
    settled = attrs.evolve(state, memory=state.memory.settle())
    after = render_context(settled, counter=counter, allowances=ALLOW)
    assert "postgres 15" in after.task and "postgres 15" not in after.text


def test_equal_tiers_that_are_different_objects_render_alike() -> None:
    counter = counter_for("cl100k_base")
    facts = [Fact(key=f"k{i}", value=f"value {i}") for i in range(5)]
    one = render_context(_state(*facts), counter=counter, allowances=ALLOW)
    two = render_context(_state(*facts), counter=counter, allowances=ALLOW)
    assert one == two
