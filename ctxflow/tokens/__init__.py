"""Token counting offline: tiktoken encodings from installed packages, profiles, calibration."""

from ctxflow.tokens._calibration import CalibratedCounter, Calibration
from ctxflow.tokens._counters import (
    IMAGE_TOKENS,
    HeuristicCounter,
    MessageMeasure,
    TiktokenCounter,
    counter_for,
    message_measure,
)
from ctxflow.tokens._profiles import (
    DEFAULT_MODEL,
    ModelProfile,
    get_profile,
    profile_names,
    register_profile,
)

__all__ = [
    "DEFAULT_MODEL",
    "IMAGE_TOKENS",
    "CalibratedCounter",
    "Calibration",
    "HeuristicCounter",
    "MessageMeasure",
    "ModelProfile",
    "TiktokenCounter",
    "counter_for",
    "get_profile",
    "message_measure",
    "profile_names",
    "register_profile",
]
