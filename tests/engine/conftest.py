"""Engine fixtures: every engine test body runs on the sync and the async engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ctxflow.engine import AsyncEngine, Engine, StepRecord
from ctxflow.testing import FixedCounter


class Driver:
    """Runs the same calls on a sync or an async engine."""

    def __init__(self, engine: Engine | AsyncEngine) -> None:
        self.engine = engine

    def send(self, event: str, **kwargs: Any) -> StepRecord:
        """Apply an event (awaiting it on the async engine)."""
        if isinstance(self.engine, AsyncEngine):
            return asyncio.run(self.engine.send(event, **kwargs))
        return self.engine.send(event, **kwargs)

    def checkpoint(self, trigger: str = "manual") -> str:
        """Take a checkpoint now."""
        if isinstance(self.engine, AsyncEngine):
            return asyncio.run(self.engine.checkpoint(trigger))
        return self.engine.checkpoint(trigger)

    def reopen(self, checkpoint_id: str | None = None, **kwargs: Any) -> Driver:
        """A new engine of the same kind opened at a checkpoint (None: the session's latest)."""
        kind = type(self.engine)
        kwargs.setdefault("counter", FixedCounter())
        if issubclass(kind, AsyncEngine):
            return Driver(asyncio.run(kind.from_checkpoint(checkpoint_id, **kwargs)))
        return Driver(kind.from_checkpoint(checkpoint_id, **kwargs))

    def restore(self, checkpoint_id: str) -> None:
        """Restore a checkpoint into the engine."""
        if isinstance(self.engine, AsyncEngine):
            asyncio.run(self.engine.restore(checkpoint_id))
        else:
            self.engine.restore(checkpoint_id)


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest) -> Callable[..., Driver]:
    """A factory of engines of the parametrised kind, wrapped in a Driver."""
    kind = Engine if request.param == "sync" else AsyncEngine

    def build(**kwargs: Any) -> Driver:
        kwargs.setdefault("counter", FixedCounter())
        return Driver(kind(**kwargs))

    return build


def ratio_allocator(state: Any, *, phase: str, policy: Any) -> dict[str, int]:
    """A test allocator: a phase-dependent share of a fixed budget (policy may scale it)."""
    base = {"planning": 400, "execution": 800, "reflection": 300, "review": 500}.get(phase, 100)
    scale = policy if isinstance(policy, int) else 1
    return {"memory": base * scale, "evidence": 1000 - base}
