"""LangGraph's own checkpointer conformance suite, run against CtxflowSaver on ctxflow's stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.conformance", reason="needs the [langgraph] extra")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

from ctxflow.integrations.langgraph import CtxflowSaver
from ctxflow.persistence import Store
from ctxflow.stores import MemoryStore, SQLiteStore


def _report(name: str, open_store: Callable[[], Store]) -> dict[str, object]:
    """Run the whole suite on fresh savers over ``open_store`` and return its report."""

    async def factory() -> AsyncIterator[CtxflowSaver]:
        store = open_store()
        try:
            yield CtxflowSaver(store)
        finally:
            store.close()

    registered = checkpointer_test(name=name)(factory)
    report = asyncio.run(validate(registered))
    return {"report": report, "failures": {k: r.failures for k, r in report.results.items()}}


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_conformance_base_capabilities_pass(backend: str, tmp_path: Path) -> None:
    """Every base capability of LangGraph's conformance suite passes, and so does every
    extended one the saver implements."""
    counter = iter(range(1000))

    def open_store() -> Store:
        if backend == "memory":
            return MemoryStore()
        return SQLiteStore(tmp_path / f"lg-{next(counter)}.db")

    result = _report(f"CtxflowSaver[{backend}]", open_store)
    report = result["report"]
    failures = result["failures"]
    for capability in BASE_CAPABILITIES:
        outcome = report.results[capability.value]  # type: ignore[attr-defined]
        assert outcome.detected, capability
        assert outcome.passed is True, (capability, failures)
        assert outcome.tests_passed > 0
    assert report.passed_all(), failures  # type: ignore[attr-defined]
