"""Message bodies as plain data: the quick path rebuilds exactly what the constructors do."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import CorruptCheckpoint
from ctxflow.model import Transcript
from ctxflow.persistence import _bodies as bodies
from ctxflow.persistence import message_from_plain, message_to_plain


def _shape(value: Any) -> Any:
    """Every field of an attrs value (private ones too) with its type, recursively."""
    if attrs.has(type(value)):
        return (
            type(value),
            tuple((f.name, _shape(getattr(value, f.name))) for f in attrs.fields(type(value))),
        )
    if isinstance(value, tuple | list):
        return (type(value), tuple(_shape(v) for v in value))
    if isinstance(value, dict):
        return (type(value), tuple((k, _shape(v)) for k, v in value.items()))
    return (type(value), value)


def _outcome(data: Any, **tags: Any) -> Any:
    try:
        return _shape(message_from_plain(data, **tags))
    except CorruptCheckpoint as exc:
        return ("corrupt", exc.rule)


def _both(data: Any, **tags: Any) -> tuple[Any, Any]:
    quick = _outcome(data, **tags)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bodies, "QUICK", None)
        slow = _outcome(data, **tags)
    return quick, slow


def test_quick_path_is_on() -> None:
    """The model classes have the fields the quick path sets, so it runs."""
    assert bodies.QUICK is not None


def test_corpus_bodies_rebuild_alike(transcripts: list[Transcript]) -> None:
    """Every corpus message rebuilds from its body the same on both paths, and equal to itself."""
    for transcript in transcripts:
        for message in transcript.messages:
            data = message_to_plain(message)
            quick, slow = _both(data)
            assert quick == slow == _shape(message)


_text = st.text(max_size=6)
_texts = st.fixed_dictionaries({"type": st.just("text"), "text": _text})
_uses = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": st.sampled_from(["t1", "t-2.x:y", "bad id", ""]),
        "name": st.sampled_from(["search", ""]),
        "input": st.dictionaries(_text, st.integers(), max_size=2),
    }
)
_results = st.fixed_dictionaries(
    {
        "type": st.just("tool_result"),
        "tool_use_id": st.sampled_from(["t1", ""]),
        "content": _text | st.lists(_texts, max_size=2),
    },
    optional={"is_error": st.booleans()},
)
_thinking = st.fixed_dictionaries(
    {"type": st.just("thinking"), "thinking": _text, "signature": _text}
)
_odd = st.one_of(
    st.builds(lambda b: {**b, "extra": {"k": 1}}, _texts | _results),
    st.fixed_dictionaries({"type": st.just("text"), "text": st.integers()}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.just("t9"), "name": _text}),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": st.just("t8"),
            "name": st.just("n"),
            "input": st.integers(),
        }
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "video"]), "source": st.just({})}),
    st.integers(),
)
_ROLE_BLOCKS = {
    "user": _texts | _results,
    "assistant": _texts | _uses | _thinking,
    "system": _texts,
}
_ODD_FIELDS = st.sampled_from(
    [("role", "robot"), ("id", ""), ("id", 5), ("content", 7), ("metadata", [1]), ("tags", 3)]
)


@st.composite
def _bodies(draw: st.DrawFn) -> Any:
    """Valid bodies for their role, or with one odd block or field."""
    role = draw(st.sampled_from([*_ROLE_BLOCKS]))
    content = draw(st.lists(_ROLE_BLOCKS[role], min_size=1, max_size=3))
    body: dict[str, Any] = {"id": "m1", "role": role, "content": content}
    optional = {
        "timestamp": st.floats(allow_nan=False) | st.none(),
        "metadata": st.dictionaries(_text, st.integers(), max_size=2),
        "important": st.booleans(),
        "tags": st.just(["s1", None]),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            body[key] = draw(values)
    odd = draw(st.sampled_from(["none", "none", "block", "field"]))
    if odd == "block":
        content.insert(draw(st.integers(0, len(content))), draw(_odd))
    elif odd == "field":
        key, value = draw(_ODD_FIELDS)
        body[key] = value
    return body


@settings(max_examples=400, deadline=None)
@given(data=_bodies() | st.integers() | st.just([]))
def test_any_body_gives_the_same_outcome(data: Any) -> None:
    """Any body, valid or damaged, gives the same message or the same typed error on both paths."""
    quick, slow = _both(data, condense_parent="c1")
    assert quick == slow
