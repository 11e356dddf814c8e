"""Per-session limits on the effective view, kept by compression (or refused without it)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import attrs

from ctxflow.compression import Ladder
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded, SessionError
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation

__all__ = ["Compress", "LadderCompressor", "Limits", "check_limits", "refuse_over"]

#: A compression run: given the conversation, the state and a token target, tag
#: messages through the Conversation's methods and return the new state.
Compress = Callable[[Conversation, LayeredState, int], LayeredState]


class LadderCompressor:
    """The default compressor: ctxflow's compression ladder, one per context.

    A ladder keeps a short history per session (to detect thrash), so each
    context gets its own. The manager's token target ``T`` is the ladder's
    target; its hard limit is ``T / policy.target`` (the context's limit).
    """

    def __init__(self, factory: Callable[[], Ladder] = Ladder) -> None:
        self.factory = factory
        # Keyed weakly by the conversation: an unloaded context's ladder goes with it.
        self._ladders: weakref.WeakKeyDictionary[Conversation, Ladder] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(
        self, conversation: Conversation, state: LayeredState, target: int
    ) -> LayeredState:
        with self._lock:
            ladder = self._ladders.get(conversation)
            if ladder is None:
                ladder = self._ladders[conversation] = self.factory()
        budget = max(1, int(target / ladder.policy.target))
        return ladder.run(conversation, state, budget=budget).state


@attrs.frozen(kw_only=True)
class Limits:
    """Per-context limits on the effective view, enforced through compression."""

    max_messages: int = 2_000
    max_tokens: int = 150_000
    target: float = 0.5

    def __attrs_post_init__(self) -> None:
        if self.max_messages < 2 or self.max_tokens < 1:
            raise SessionError(
                f"limits must be positive (got max_messages={self.max_messages}, "
                f"max_tokens={self.max_tokens})",
                rule="limits",
            )
        if not 0 < self.target < 1:
            raise SessionError(
                f"'target' must be between 0 and 1 (got {self.target})", rule="limits"
            )


def check_limits(engine: Engine, limits: Limits, compress: Compress | None) -> None:
    """Keep ``engine``'s effective view within ``limits`` (compress; refuse without a way)."""
    conversation = engine.conversation
    messages = conversation.effective_count
    tokens = conversation.effective_tokens
    if messages <= limits.max_messages and tokens <= limits.max_tokens:
        return
    if compress is None:
        refuse_over(engine, limits, messages, tokens)
        return
    target = int(limits.max_tokens * limits.target)
    if messages > limits.max_messages:
        # Aim the token target so the message count lands under its limit too.
        share = limits.max_messages * limits.target / messages
        target = min(target, int(tokens * share))
    engine.compress(lambda conv, state: compress(conv, state, target), reason="limits")


def refuse_over(engine: Engine, limits: Limits, messages: int, tokens: int) -> None:
    """Raise ``BudgetExceeded`` when ``messages`` and ``tokens`` would cross ``limits``."""
    if messages <= limits.max_messages and tokens <= limits.max_tokens:
        return
    raise BudgetExceeded(
        f"context {engine.session_id!r} would hold {messages} messages and {tokens} tokens, "
        f"over the limits ({limits.max_messages} messages, {limits.max_tokens} "
        "tokens), and no compression ladder is configured",
        rule="context_limit",
        context_id=engine.session_id,
    )
