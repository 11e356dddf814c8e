"""Model profiles: size classes by family, name resolution, the budget a model allows."""

from __future__ import annotations

import attrs
import pytest

from ctxflow.errors import PolicyError, UnknownModel
from ctxflow.tokens import ModelProfile, get_profile, profile_names, register_profile
from ctxflow.tokens._families import family_class, undated
from ctxflow.tokens._profiles import _BUILTIN

LARGE = ["claude-opus-4-5", "claude-opus-4-1", "claude-opus-4", "gpt-5", "gpt-4.1", "o1", "o3"]
LARGE += ["gemini-2.5-pro"]
SMALL = ["claude-haiku-4-5", "claude-3-5-haiku", "claude-3-haiku", "gpt-5-mini", "gpt-5-nano"]
SMALL += ["gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini", "o3-mini", "o4-mini", "gpt-3.5-turbo"]
SMALL += ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-lite"]
STANDARD = ["claude-sonnet-4-5", "claude-sonnet-4", "claude-3-7-sonnet", "gpt-4o", "gpt-4-turbo"]
CLASSES = {**dict.fromkeys(LARGE, "large"), **dict.fromkeys(SMALL, "small")}
CLASSES |= dict.fromkeys(STANDARD, "standard")


def test_every_builtin_profile_has_its_family_class() -> None:
    """Each built-in model's class follows its family and size, and every one is listed here."""
    assert {profile.name for profile in _BUILTIN} == set(CLASSES)
    assert {name: get_profile(name).model_class for name in CLASSES} == CLASSES


def test_same_window_different_class() -> None:
    """Opus, Sonnet and Haiku share a 200k window but not a class."""
    opus, sonnet, haiku = (
        get_profile(f"claude-{size}-4-5") for size in ("opus", "sonnet", "haiku")
    )
    assert opus.context_window == sonnet.context_window == haiku.context_window
    assert (opus.model_class, sonnet.model_class, haiku.model_class) == (
        "large",
        "standard",
        "small",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude-opus-5", "large"),
        ("claude-3-opus", "large"),
        ("claude-haiku-5", "small"),
        ("gpt-5.1", "large"),
        ("gpt-5-pro", "large"),
        ("o1-mini", "small"),
        ("gpt-4o-audio", "standard"),
        ("GEMINI-3-PRO", "large"),
        ("gemini-3-flash", "small"),
        ("llama-4-maverick", None),
        ("acme-pro", None),
    ],
)
def test_family_class_reads_the_name(name: str, expected: str | None) -> None:
    """Anthropic, OpenAI and Google names read as a class; other vendors' names do not."""
    assert family_class(name) == expected


def test_class_is_a_field_a_profile_can_set() -> None:
    """A profile may state its class; the stated class beats what the name reads as."""
    profile = ModelProfile(
        name="claude-opus-test-fast",
        provider="anthropic",
        context_window=200_000,
        max_output=8_000,
        model_class="small",
    )
    register_profile(profile, replace=True)
    assert get_profile("claude-opus-test-fast").model_class == "small"
    assert attrs.evolve(profile, model_class="large").model_class == "large"


def test_unknown_family_falls_back_to_the_window() -> None:
    """A name of no known family takes its class from the window size."""

    def of(window: int) -> str:
        return ModelProfile(
            name="acme-chat", provider="acme", context_window=window, max_output=1_000
        ).model_class

    assert (of(8_000), of(32_768), of(128_000), of(400_000)) == (
        "small",
        "small",
        "standard",
        "large",
    )


def test_bad_model_class_is_refused() -> None:
    """A class outside small/standard/large is a PolicyError naming the value."""
    with pytest.raises(PolicyError, match="'model_class' must be one of") as info:
        ModelProfile(
            name="x",
            provider="p",
            context_window=1_000,
            max_output=10,
            model_class="huge",  # type: ignore[arg-type]
        )
    assert "'huge'" in str(info.value)
    assert info.value.rule == "profile_value"


@pytest.mark.parametrize(
    ("requested", "family"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ],
)
def test_dated_ids_and_aliases_resolve_to_their_family(requested: str, family: str) -> None:
    """A dated id or alias gets its family's numbers under its own name."""
    profile = get_profile(requested)
    assert profile.name == requested
    assert attrs.evolve(profile, name=family) == get_profile(family)


def test_release_suffixes_are_stripped() -> None:
    """Dates, -latest and -preview… are release suffixes; other endings are kept."""
    assert undated("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert undated("gpt-4o-2024-08-06") == "gpt-4o"
    assert undated("claude-3-7-sonnet-latest") == "claude-3-7-sonnet"
    assert undated("gemini-2.5-pro-preview-06-05") == "gemini-2.5-pro"
    assert undated("gpt-4.1-nano") == "gpt-4.1-nano"
    assert undated("o3") == "o3"


def test_prefix_resolution_takes_the_longest_of_the_same_class() -> None:
    """The longest registered prefix wins, but never one of another size than the name reads."""
    assert (
        get_profile("claude-opus-4-5-fast").max_output == get_profile("claude-opus-4-5").max_output
    )
    assert get_profile("gpt-4.1-nano-batch").model_class == "small"
    with pytest.raises(UnknownModel):
        get_profile("o1-mini")  # reads small; its only prefix, o1, is large
    with pytest.raises(UnknownModel):
        get_profile("gpt-4")  # a prefix of registered names, not a member of one


def test_exact_registration_wins_over_the_family() -> None:
    """A profile registered under a dated id is used as is."""
    pinned = ModelProfile(
        name="gpt-4o-2099-01-01", provider="openai", context_window=64_000, max_output=4_000
    )
    register_profile(pinned, replace=True)
    assert get_profile("gpt-4o-2099-01-01") is pinned
    assert get_profile("gpt-4o-2099-01-02").context_window == 128_000


def test_unknown_names_list_the_known_ones() -> None:
    """A name of no registered family is UnknownModel listing every registered name."""
    with pytest.raises(UnknownModel, match="no model profile named 'llama-4-maverick'") as info:
        get_profile("llama-4-maverick")
    assert "claude-opus-4-5" in str(info.value)
    assert "gemini-2.5-pro" in str(info.value)
    assert info.value.rule == "unknown_model"


def test_resolution_does_not_register() -> None:
    """Resolving an alias leaves the registry as it was."""
    before = profile_names()
    get_profile("claude-haiku-4-5-20251001")
    assert profile_names() == before


def test_check_budget_allows_up_to_the_input_budget() -> None:
    """A budget up to the input budget passes; one token more names both numbers."""
    profile = get_profile("claude-sonnet-4-5")
    assert profile.check_budget(profile.input_budget) == profile.input_budget
    with pytest.raises(PolicyError) as info:
        profile.check_budget(profile.input_budget + 1)
    message = str(info.value)
    assert f"(got {profile.input_budget + 1})" in message
    assert f"{profile.input_budget} tokens" in message
    assert info.value.rule == "budget_over_model"
    assert info.value.details["input_budget"] == profile.input_budget
