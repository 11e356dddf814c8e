"""The one exception tree of ctxflow.

Every error ctxflow raises on bad input is a ``CtxflowError``. Each one names
the rule that was broken and the values involved, and carries them as
attributes so callers and tests can inspect them without parsing text. Where a
Python builtin describes the same failure, the error subclasses it too, so
``except ValueError`` keeps working for callers who do not know ctxflow.

Errors are raised *before* any state changes: catching one leaves the
conversation, the layered state and the store exactly as they were.

::

    CtxflowError
    ├── InvalidMessage (ValueError)          a message or block breaks the model's rules
    ├── InvalidConversation (ValueError)     a sequence of messages breaks an API's rules
    ├── FormatError (ValueError)             bytes or documents that cannot be read
    ├── UnknownModel (LookupError)           no profile registered under a name
    ├── TokenizerUnavailable (LookupError)   an encoding cannot be loaded offline
    ├── PolicyError (ValueError)             a budget/compression policy is unusable
    ├── BudgetExceeded                       fixed or critical content cannot fit
    ├── CompressionError                     a rung or summarizer misbehaved
    ├── ResponseError (ValueError)           a provider response body cannot be read
    ├── ProviderError                        the provider refused or failed a request
    │   └── ContextOverflow                  the prompt is longer than the model's window
    ├── ChartError (ValueError)              a chart document cannot be loaded
    ├── EventError                           an event cannot be applied
    │   └── EventNotAllowed                  (engine also subclasses TransitionNotAllowed)
    ├── CheckpointError
    │   ├── CorruptCheckpoint (ValueError)
    │   ├── CheckpointNotFound (LookupError)
    │   └── StaleCheckpoint                  a write based on an outdated parent
    ├── StoreError                           the backend failed or refused
    │   ├── ReplicationError                 too few replicas acknowledged a write
    │   └── StoreURLError (ValueError)       a store URL is malformed or names no usable backend
    └── SessionError
        ├── SessionNotFound (LookupError)
        ├── SessionEvicted                   an engine its manager unloaded refuses changes
        ├── ConflictError                    an optimistic update found another version
        ├── OwnershipLost                    a fencing token or lease was outdated
        └── MemoryLimitExceeded              a manager at its hard memory limit refused a load

    CtxflowWarning (UserWarning)             a fallback or a soft result the user must see
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BudgetExceeded",
    "ChartError",
    "CheckpointError",
    "CheckpointNotFound",
    "CompressionError",
    "ConflictError",
    "ContextOverflow",
    "CorruptCheckpoint",
    "CtxflowError",
    "CtxflowWarning",
    "EventError",
    "EventNotAllowed",
    "FormatError",
    "InvalidConversation",
    "InvalidMessage",
    "MemoryLimitExceeded",
    "OwnershipLost",
    "PolicyError",
    "ProviderError",
    "ReplicationError",
    "ResponseError",
    "SessionError",
    "SessionEvicted",
    "SessionNotFound",
    "StaleCheckpoint",
    "StoreError",
    "StoreURLError",
    "TokenizerUnavailable",
    "UnknownModel",
]


class CtxflowError(Exception):
    """Base class of every error ctxflow raises.

    ``rule`` is a short stable identifier of the broken rule (for tests and
    logs); ``details`` holds the values named in the message.
    """

    rule: str
    details: dict[str, Any]

    def __init__(self, message: str, *, rule: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.details = details
        for key, value in details.items():
            if not hasattr(type(self), key):
                setattr(self, key, value)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.rule, self.details))


def _rebuild(
    cls: type[CtxflowError], message: str, rule: str, details: dict[str, Any]
) -> CtxflowError:
    return cls(message, rule=rule, **details)


class InvalidMessage(CtxflowError, ValueError):
    """A message or content block breaks the message model's rules."""


class InvalidConversation(CtxflowError, ValueError):
    """A sequence of messages breaks the rules of a target API.

    ``violations`` lists every problem found, not just the first.
    """


class FormatError(CtxflowError, ValueError):
    """Input bytes or a document cannot be read (names the source and line)."""


class UnknownModel(CtxflowError, LookupError):
    """No model profile is registered under the requested name."""


class TokenizerUnavailable(CtxflowError, LookupError):
    """A token encoding cannot be loaded without the network."""


class PolicyError(CtxflowError, ValueError):
    """A budget, scoring or compression policy cannot be used as given."""


class BudgetExceeded(CtxflowError):
    """Content that must be in the window does not fit its budget."""


class CompressionError(CtxflowError):
    """A compression rung or summarizer failed or returned unusable output."""


class ResponseError(CtxflowError, ValueError):
    """A provider response body has an unknown shape or content ctxflow cannot accept.

    ``field`` names the offending place in the body (``choices[0].message.tool_calls[1]``).
    """


class ProviderError(CtxflowError):
    """The provider answered a request with an error (``status`` and ``type`` as reported)."""


class ContextOverflow(ProviderError):
    """The provider rejected a request because the prompt exceeds the model's window."""


class ChartError(CtxflowError, ValueError):
    """A chart document is malformed, hostile, or names unknown callbacks."""


class EventError(CtxflowError):
    """An event could not be applied to the engine."""


class EventNotAllowed(EventError):
    """The event is not allowed in the current phase; nothing changed."""


class CheckpointError(CtxflowError):
    """Base class of checkpoint failures."""


class CorruptCheckpoint(CheckpointError, ValueError):
    """Checkpoint bytes are damaged, truncated, too large, or of an unknown version."""


class CheckpointNotFound(CheckpointError, LookupError):
    """No checkpoint (or session) exists under the given id."""


class StaleCheckpoint(CheckpointError):
    """A checkpoint write was based on a parent that is no longer the latest."""


class StoreError(CtxflowError):
    """A store backend failed or refused an operation."""


class ReplicationError(StoreError):
    """Fewer replicas than required acknowledged a write in time: the write is not
    acknowledged (the primary may still hold it)."""


class StoreURLError(StoreError, ValueError):
    """A store URL is malformed, of an unknown scheme, or names a backend this build lacks."""


class SessionError(CtxflowError):
    """Base class of session-management failures."""


class SessionNotFound(SessionError, LookupError):
    """No live or stored session exists under the given id."""


class SessionEvicted(SessionError):
    """The engine was unloaded by its manager; get the live one from the manager again.

    The manager's own operations get past it by retrying (``ctxflow.sessions.retry``).
    """


class ConflictError(SessionError):
    """An optimistic update found the session at another version."""


class OwnershipLost(SessionError):
    """This node no longer owns the session (lease expired or fencing token outdated)."""


class MemoryLimitExceeded(SessionError):
    """A manager whose sessions hold its hard memory limit refused to load one more.

    ``held_bytes`` and ``limit_bytes`` give the figures; ``context_id`` names the
    session refused. Nothing changed: idle sessions were saved and evicted first.
    """


class CtxflowWarning(UserWarning):
    """Something the user must see that is not an error: a fallback, a result short of its aim.

    Warned (``warnings.warn``) rather than logged, so it shows without any
    logging configuration; filter it like any warning.
    """
