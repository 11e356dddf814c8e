"""What a model's name says: its size class, and the undated name of its release.

Providers name a model by family and size (``claude-haiku-4-5``,
``gpt-4.1-nano``, ``gemini-2.5-pro``) and publish dated snapshots and aliases
of it (``claude-sonnet-4-5-20250929``, ``gpt-4o-2024-08-06``,
``claude-3-5-haiku-latest``, ``gemini-2.5-flash-preview-05-20``).

The size class decides the budget's model adjustments. It comes from the
name, not the window: every Claude model has a 200k window, yet Opus, Sonnet
and Haiku are used differently. The rules read Anthropic, OpenAI and Google
names only (``claude…``, ``gpt…``, ``chatgpt…``, ``o1``/``o3``/``o4…``,
``gemini…``); any other name has no family here (``None``: the profile then
falls back to its window size). Within them, first match wins:

1. a size word between dashes — ``haiku``, ``mini``, ``nano``, ``flash``,
   ``lite`` — or the ``gpt-3.5`` line: ``small``;
2. ``opus`` or ``pro``, or an OpenAI flagship line (``gpt-5``, ``gpt-4.1``,
   ``o1``, ``o3``, with their point releases such as ``gpt-5.1``): ``large``;
3. the rest (Sonnet, ``gpt-4o``, ``gpt-4-turbo``, …): ``standard``.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["MODEL_CLASSES", "ModelClass", "family_class", "undated"]

ModelClass = Literal["small", "standard", "large"]

#: The size classes, smallest first.
MODEL_CLASSES: tuple[ModelClass, ...] = ("small", "standard", "large")

_SMALL_WORDS = frozenset({"haiku", "mini", "nano", "flash", "lite"})
_LARGE_WORDS = frozenset({"opus", "pro"})
_SMALL_LINES = ("gpt-3.5",)
_LARGE_LINES = ("gpt-5", "gpt-4.1", "o1", "o3")
_KNOWN_LINES = ("claude", "gpt", "chatgpt", "o1", "o3", "o4", "gemini")

# A release suffix: an 8-digit or ISO date, ``-latest``, or ``-preview`` with
# whatever follows it (Google dates its previews as ``-preview-MM-DD``).
_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest|preview(?:-.*)?)$")


def _in_line(name: str, line: str) -> bool:
    """``name`` is ``line`` or a member of it (``line-…``, or a point release ``line.…``)."""
    return name == line or name.startswith((f"{line}-", f"{line}."))


def family_class(name: str) -> ModelClass | None:
    """The size class ``name`` reads as, or None for a name of no known family."""
    lowered = name.lower()
    if not any(_in_line(lowered, line) for line in _KNOWN_LINES):
        return None
    words = set(lowered.split("-"))
    if words & _SMALL_WORDS or any(_in_line(lowered, line) for line in _SMALL_LINES):
        return "small"
    if words & _LARGE_WORDS or any(_in_line(lowered, line) for line in _LARGE_LINES):
        return "large"
    return "standard"


def undated(name: str) -> str:
    """``name`` without its release suffix (date, ``-latest``, ``-preview…``), if it has one."""
    return _SUFFIX.sub("", name, count=1)
