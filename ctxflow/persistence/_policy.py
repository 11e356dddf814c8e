"""When to take a checkpoint: on a phase change, every N messages, every T seconds, over T tokens.

The policy is a frozen value and holds no state: the caller (the engine)
keeps the :class:`CheckpointMark` of the last checkpoint it wrote and asks
``policy.should_checkpoint(...)`` after each step or transition. The answer
is the name of the trigger that fired — recorded with the checkpoint — or
None. When several fire at once the first in :data:`TRIGGERS` wins.

The clock is injectable (``clock=``) so tests need no sleeping; it defaults to
``time.monotonic``, so marks are not comparable across processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import attrs

from ctxflow.errors import PolicyError

__all__ = ["TRIGGERS", "CheckpointMark", "CheckpointPolicy"]

#: Trigger names, in order of precedence.
TRIGGERS = ("phase", "tokens", "messages", "time")


@attrs.frozen(kw_only=True)
class CheckpointMark:
    """Where the last checkpoint was taken: phase, message count, tokens and clock time."""

    phase: str | None
    message_count: int
    tokens: int
    at: float


def _positive_or_none(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, __: Any, value: Any) -> None:
        if value is not None and (not isinstance(value, int | float) or not value > 0):
            raise PolicyError(
                f"'{name}' must be a positive number or None (got {value!r})",
                rule="checkpoint_policy",
                field=name,
            )

    return check


@attrs.frozen(kw_only=True)
class CheckpointPolicy:
    """Which events take a checkpoint.

    - ``on_phase_change``: the phase differs from the last checkpoint's (trigger ``phase``);
    - ``every_messages``: at least this many messages were added since (``messages``);
    - ``every_seconds``: at least this much clock time passed since (``time``);
    - ``token_threshold``: the conversation reached this many tokens while the
      last checkpoint was below it — once per upward crossing (``tokens``).
    """

    on_phase_change: bool = True
    every_messages: int | None = attrs.field(
        default=None, validator=_positive_or_none("every_messages")
    )
    every_seconds: float | None = attrs.field(
        default=None, validator=_positive_or_none("every_seconds")
    )
    token_threshold: int | None = attrs.field(
        default=None, validator=_positive_or_none("token_threshold")
    )
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)

    def mark(self, *, phase: str | None, message_count: int, tokens: int) -> CheckpointMark:
        """The mark of a checkpoint taken now (keep it and pass it as ``last``)."""
        return CheckpointMark(
            phase=phase, message_count=message_count, tokens=tokens, at=self.clock()
        )

    def should_checkpoint(
        self,
        *,
        phase: str | None,
        message_count: int,
        tokens: int,
        last: CheckpointMark | None,
    ) -> str | None:
        """The trigger that fires for the current state, or None.

        With no ``last`` mark (nothing written yet) the phase trigger fires if
        enabled; the message and token triggers count from zero, and the time
        trigger waits for a mark.
        """
        if message_count < 0 or tokens < 0:
            raise PolicyError(
                f"'message_count' and 'tokens' must be >= 0 (got {message_count}, {tokens})",
                rule="checkpoint_policy",
            )
        if self.on_phase_change and (last is None or phase != last.phase):
            return "phase"
        since_messages = message_count - (last.message_count if last else 0)
        last_tokens = last.tokens if last else 0
        if self.token_threshold is not None and tokens >= self.token_threshold > last_tokens:
            return "tokens"
        if self.every_messages is not None and since_messages >= self.every_messages:
            return "messages"
        if self.every_seconds is not None:
            since = self.clock() - (last.at if last else math.inf)
            if since >= self.every_seconds:
                return "time"
        return None
