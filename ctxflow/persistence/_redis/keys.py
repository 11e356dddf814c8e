"""Key names, the checks that keep a tenant or session inside its namespace, and the fence.

Every key starts with ``ctxflow:{tenant}:``; a session's keys share the hash
tag ``{session_id}`` so that every script and transaction on a session stays
in one cluster slot. A :class:`Fence` is what a guarded write must still find
in the session's ``owner`` and ``fence`` keys.
"""

from __future__ import annotations

import attrs

from ctxflow.errors import CheckpointError, OwnershipLost
from ctxflow.persistence._names import check_tenant

__all__ = ["Fence", "RedisKeys", "check_session_id", "check_tenant", "fenced_out"]


def check_session_id(session_id: str) -> str:
    """Refuse a session id that would break its hash tag (braces) or is empty."""
    if not isinstance(session_id, str) or not session_id or "{" in session_id or "}" in session_id:
        raise CheckpointError(
            f"a session id must be a non-empty string without braces (got {session_id!r})",
            rule="session_id",
            session_id=session_id,
        )
    return session_id


@attrs.frozen
class RedisKeys:
    """The key names of one tenant (see ``ctxflow.persistence._redis`` for the layout)."""

    tenant: str

    @property
    def prefix(self) -> str:
        """``ctxflow:<tenant>:``, the start of every key of the tenant."""
        return f"ctxflow:{self.tenant}:"

    @property
    def sessions(self) -> str:
        """The sorted set of session ids."""
        return f"{self.prefix}sessions"

    def session(self, session_id: str, part: str) -> str:
        """One key of a session, under the session's hash tag."""
        return f"{self.prefix}s:{{{session_id}}}:{part}"

    def checkpoint_keys(self, session_id: str) -> list[str]:
        """The keys holding a session's checkpoints (order, rec, man, body)."""
        return [self.session(session_id, p) for p in ("order", "rec", "man", "body")]

    def guard_keys(self, session_id: str) -> list[str]:
        """The keys a fenced write checks (owner, fence)."""
        return [self.session(session_id, "owner"), self.session(session_id, "fence")]


@attrs.frozen(kw_only=True)
class Fence:
    """The owner value and fencing token a guarded write must still match."""

    owner: str
    token: int

    def holds(self, owner: bytes | str | None, token: bytes | str | None) -> bool:
        """True when the stored owner value and token are this fence's."""
        return _text(owner) == self.owner and _text(token) == str(self.token)


def fenced_out(
    session_id: str, fence: Fence, owner: bytes | str | None, token: bytes | str | None
) -> OwnershipLost:
    """The error of a fenced write that found another owner value or token in the session."""
    found_owner, found_token = _text(owner), _text(token)
    return OwnershipLost(
        f"a fenced write to session {session_id!r} must hold the current lease "
        f"(owner {fence.owner!r}, token {fence.token}; "
        f"got owner {found_owner!r}, token {found_token})",
        rule="fencing_token",
        session_id=session_id,
        owner=found_owner,
        token=int(found_token) if found_token else None,
    )


def _text(value: bytes | str | None) -> str | None:
    if value is None or value in (b"", ""):
        return None
    return value.decode() if isinstance(value, bytes) else value
