"""Fixtures for the compression tests: the shared corpus and a fast fixed-rate measure."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ctxflow.model import Message
from ctxflow.testing import FixedCounter
from ctxflow.tokens import message_measure


@pytest.fixture(scope="session")
def measure() -> Callable[[Message], int]:
    """A fixed four-characters-a-token measure with 4 tokens of overhead per message."""
    return message_measure(FixedCounter(), overhead=4)
