"""A tool call's arguments against its tool's input schema (the top level, as models err).

Providers do not check that a model's tool call matches the schema it was
given; a loop that runs the tool with what came back would fail inside the
tool. This checks required properties and their JSON types before the call
runs, and names the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ctxflow.errors import ResponseError
from ctxflow.layers import ToolDef
from ctxflow.model import ToolUseBlock

__all__ = ["check_arguments"]

_JSON_TYPES: Mapping[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": Mapping,
    "array": list,
    "null": type(None),
}


def check_arguments(calls: Sequence[ToolUseBlock], tools: Sequence[ToolDef]) -> None:
    """Raise ResponseError naming the field when a call's input breaks its tool's schema.

    Checks the top level only: required properties and their JSON types.
    """
    schemas = {t.name: t.input_schema for t in tools}
    for i, call in enumerate(calls):
        schema = schemas.get(call.name) or {}
        properties = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in call.input:
                raise ResponseError(
                    f"'tool_calls[{i}].input.{key}' is required by tool {call.name!r} "
                    f"(got keys {sorted(call.input)})",
                    rule="tool_arguments",
                    field=f"tool_calls[{i}].input.{key}",
                    tool=call.name,
                )
        for key, value in call.input.items():
            kind = (properties.get(key) or {}).get("type")
            names = [kind] if isinstance(kind, str) else list(kind or [])
            expected = [_JSON_TYPES[n] for n in names if n in _JSON_TYPES]
            if not expected:
                continue
            is_bool = isinstance(value, bool)
            matches = any(isinstance(value, t) and (not is_bool or t is bool) for t in expected)
            if not matches:
                raise ResponseError(
                    f"'tool_calls[{i}].input.{key}' must be {' or '.join(names)} for tool "
                    f"{call.name!r} (got {type(value).__name__})",
                    rule="tool_arguments",
                    field=f"tool_calls[{i}].input.{key}",
                    tool=call.name,
                )
