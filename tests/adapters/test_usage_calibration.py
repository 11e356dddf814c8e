"""Tests for normalised usage and feeding it to the token calibration."""

from __future__ import annotations

import pytest

from ctxflow.adapters import Usage, observe_usage, parse_anthropic
from ctxflow.errors import PolicyError, ResponseError
from ctxflow.tokens import Calibration


def test_usage_feeds_the_calibration_with_the_whole_prompt() -> None:
    """The factor compares the estimate with prompt tokens including the cached part."""
    body = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "ok"}],
        "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 100},
    }
    usage = parse_anthropic(body).usage
    calibration = Calibration()
    factor = observe_usage(calibration, "claude-x", 100, usage)
    assert factor == pytest.approx(1.2)
    assert calibration.samples("claude-x") == 1


def test_missing_usage_records_nothing() -> None:
    """A response without prompt usage leaves the calibration untouched."""
    calibration = Calibration()
    assert observe_usage(calibration, "m", 100, Usage()) is None
    assert calibration.samples("m") == 0


def test_bad_estimate_is_the_callers_error() -> None:
    """A non-positive estimate raises PolicyError from the calibration."""
    with pytest.raises(PolicyError):
        observe_usage(Calibration(), "m", 0, Usage(prompt_tokens=5))


def test_usage_values_must_be_non_negative_integers() -> None:
    """A negative usage count is refused with the field named."""
    with pytest.raises(ResponseError, match="'output_tokens'"):
        Usage(output_tokens=-1)


def test_usage_totals() -> None:
    """total_tokens adds output to prompt; uncached excludes cache reads and writes."""
    usage = Usage(prompt_tokens=100, output_tokens=5, cache_read_tokens=60, cache_write_tokens=30)
    assert (usage.total_tokens, usage.uncached_prompt_tokens) == (105, 10)
