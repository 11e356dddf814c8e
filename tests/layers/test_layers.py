"""The layered state's memory updates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import FormatError
from ctxflow.layers import Fact, LayeredState

_FACTS = st.lists(
    st.builds(
        Fact,
        key=st.sampled_from(["a", "b", "c", "d"]),
        value=st.text(max_size=3),
        source=st.sampled_from([None, "m1", "m2"]),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(_FACTS, _FACTS)
def test_with_facts_equals_adding_them_one_by_one(known: list[Fact], new: list[Fact]) -> None:
    start = LayeredState()
    for fact in known:
        start = start.with_fact(fact.key, fact.value, fact.source)
    one_by_one = start
    for fact in new:
        one_by_one = one_by_one.with_fact(fact.key, fact.value, fact.source)
    assert start.with_facts(new) == one_by_one


def test_with_facts_refuses_what_is_not_a_fact() -> None:
    state = LayeredState().with_fact("a", "1")
    with pytest.raises(FormatError, match=r"facts\[1\] must be a Fact \(got str\)"):
        state.with_facts([Fact(key="b", value="2"), "c"])  # type: ignore[list-item]
    assert state.with_facts([]) is state
