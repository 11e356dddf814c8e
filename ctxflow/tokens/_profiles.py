"""Model profiles: window sizes, output limits, size class and the encoding to count with.

The **input budget** of a call is ``context_window - output_reserve``
(DESIGN.md "The budget contract"). ``output_reserve`` defaults to
``min(max_output, 8192)``: agent turns rarely need more, and reserving a
model's whole ``max_output`` (64k for some) would waste a third of the window.
An explicit budget may be smaller than the input budget, never larger
(:meth:`ModelProfile.check_budget`): a larger window is one the model refuses.

``model_class`` (``small``, ``standard``, ``large``) picks the budget policy's
model adjustments. It defaults to what the name says of its family and size
(:mod:`ctxflow.tokens._families`); a name of no known family falls back to its
window (``small`` up to 32k, ``large`` from 400k). A profile may set it.

:func:`get_profile` resolves a name in three steps: the exact name; the name
without a release suffix (``-20250929``, ``-2024-08-06``, ``-latest``,
``-preview…``); the longest registered name that prefixes it at a ``-``
boundary and has the same size class as the name reads. A resolved profile
is the family's, renamed to the requested id, so the id reaches the provider
and usage calibration stays per model.

Anthropic and Google do not publish their tokenizers. Their profiles count with
``cl100k_base``, the closest encoding that ships offline, and the
:class:`~ctxflow.tokens.Calibration` learns the per-model correction from the
usage the provider reports. OpenAI's current models use ``o200k_base``, which
needs the ``ctxflow[o200k]`` extra; without it counting falls back to the
heuristic counter with a logged warning.
"""

from __future__ import annotations

import threading

import attrs

from ctxflow._checks import number_field
from ctxflow.errors import PolicyError, UnknownModel
from ctxflow.tokens._families import MODEL_CLASSES, ModelClass, family_class, undated

__all__ = [
    "DEFAULT_MODEL",
    "ModelProfile",
    "get_profile",
    "profile_names",
    "register_profile",
]

_SIZE = number_field("positive integer", rule="profile_value")


@attrs.frozen(kw_only=True)
class ModelProfile:
    """What ctxflow needs to know about a model to budget its context.

    ``model_class`` keys the budget policy's model adjustments; left out, it
    is what the name reads as (see the module docstring).
    """

    name: str
    provider: str
    context_window: int = attrs.field(validator=_SIZE)
    max_output: int = attrs.field(validator=_SIZE)
    output_reserve: int = attrs.field(default=-1)
    encoding: str = "cl100k_base"
    per_message_overhead: int = 4
    model_class: ModelClass = attrs.field(
        default=attrs.Factory(lambda self: _default_class(self), takes_self=True)
    )

    def __attrs_post_init__(self) -> None:
        if self.model_class not in MODEL_CLASSES:
            raise PolicyError(
                f"'model_class' must be one of {list(MODEL_CLASSES)} (got {self.model_class!r}) "
                f"for model {self.name!r}",
                rule="profile_value",
                field="model_class",
                model=self.name,
            )
        if self.output_reserve == -1:
            object.__setattr__(self, "output_reserve", min(self.max_output, 8_192))
        if not 0 <= self.output_reserve <= self.max_output:
            raise PolicyError(
                f"'output_reserve' must be between 0 and max_output={self.max_output} "
                f"(got {self.output_reserve}) for model {self.name!r}",
                rule="output_reserve",
                model=self.name,
            )
        if self.output_reserve >= self.context_window:
            raise PolicyError(
                f"model {self.name!r}: output_reserve={self.output_reserve} leaves no input "
                f"budget in a context_window of {self.context_window}",
                rule="no_input_budget",
                model=self.name,
            )
        if self.per_message_overhead < 0:
            raise PolicyError(
                f"'per_message_overhead' must be >= 0 (got {self.per_message_overhead})",
                rule="profile_value",
                field="per_message_overhead",
            )

    @property
    def input_budget(self) -> int:
        """Tokens a request may hold: ``context_window - output_reserve``."""
        return self.context_window - self.output_reserve

    def check_budget(self, budget: int) -> int:
        """``budget`` when it fits this model's input budget; a larger one is a PolicyError."""
        if budget > self.input_budget:
            raise PolicyError(
                f"'budget' must be at most the input budget of model {self.name!r}, "
                f"{self.input_budget} tokens (context_window {self.context_window} - "
                f"output_reserve {self.output_reserve}) (got {budget})",
                rule="budget_over_model",
                model=self.name,
                budget=budget,
                input_budget=self.input_budget,
            )
        return budget


def _default_class(profile: ModelProfile) -> ModelClass:
    """The class the name reads as; for a name of no known family, the window's."""
    by_name = family_class(profile.name) if isinstance(profile.name, str) else None
    if by_name is not None:
        return by_name
    window = profile.context_window
    if isinstance(window, bool) or not isinstance(window, int):
        return "standard"  # the context_window check refuses it next
    if window <= 32_768:
        return "small"
    if window >= 400_000:
        return "large"
    return "standard"


def _p(name: str, provider: str, window: int, out: int, encoding: str) -> ModelProfile:
    return ModelProfile(
        name=name, provider=provider, context_window=window, max_output=out, encoding=encoding
    )


# Context window and max output as the providers' model pages state them.
_BUILTIN = [
    # Anthropic (counted with cl100k_base, the closest offline encoding)
    _p("claude-opus-4-5", "anthropic", 200_000, 64_000, "cl100k_base"),
    _p("claude-opus-4-1", "anthropic", 200_000, 32_000, "cl100k_base"),
    _p("claude-opus-4", "anthropic", 200_000, 32_000, "cl100k_base"),
    _p("claude-sonnet-4-5", "anthropic", 200_000, 64_000, "cl100k_base"),
    _p("claude-sonnet-4", "anthropic", 200_000, 64_000, "cl100k_base"),
    _p("claude-haiku-4-5", "anthropic", 200_000, 64_000, "cl100k_base"),
    _p("claude-3-7-sonnet", "anthropic", 200_000, 64_000, "cl100k_base"),
    _p("claude-3-5-haiku", "anthropic", 200_000, 8_192, "cl100k_base"),
    _p("claude-3-haiku", "anthropic", 200_000, 4_096, "cl100k_base"),
    # OpenAI
    _p("gpt-5", "openai", 400_000, 128_000, "o200k_base"),
    _p("gpt-5-mini", "openai", 400_000, 128_000, "o200k_base"),
    _p("gpt-5-nano", "openai", 400_000, 128_000, "o200k_base"),
    _p("gpt-4.1", "openai", 1_047_576, 32_768, "o200k_base"),
    _p("gpt-4.1-mini", "openai", 1_047_576, 32_768, "o200k_base"),
    _p("gpt-4.1-nano", "openai", 1_047_576, 32_768, "o200k_base"),
    _p("gpt-4o", "openai", 128_000, 16_384, "o200k_base"),
    _p("gpt-4o-mini", "openai", 128_000, 16_384, "o200k_base"),
    _p("o1", "openai", 200_000, 100_000, "o200k_base"),
    _p("o3", "openai", 200_000, 100_000, "o200k_base"),
    _p("o3-mini", "openai", 200_000, 100_000, "o200k_base"),
    _p("o4-mini", "openai", 200_000, 100_000, "o200k_base"),
    _p("gpt-4-turbo", "openai", 128_000, 4_096, "cl100k_base"),
    _p("gpt-3.5-turbo", "openai", 16_385, 4_096, "cl100k_base"),
    # Google (counted with cl100k_base)
    _p("gemini-2.5-pro", "google", 1_048_576, 65_536, "cl100k_base"),
    _p("gemini-2.5-flash", "google", 1_048_576, 65_536, "cl100k_base"),
    _p("gemini-2.5-flash-lite", "google", 1_048_576, 65_536, "cl100k_base"),
    _p("gemini-2.0-flash", "google", 1_048_576, 8_192, "cl100k_base"),
    _p("gemini-2.0-flash-lite", "google", 1_048_576, 8_192, "cl100k_base"),
]

#: The profile ``ctxflow run`` and the engine use when none is named.
DEFAULT_MODEL = "claude-sonnet-4-5"

_lock = threading.Lock()
_registry: dict[str, ModelProfile] = {p.name: p for p in _BUILTIN}


def register_profile(profile: ModelProfile, *, replace: bool = False) -> None:
    """Add a profile; refuse to shadow an existing name unless ``replace``."""
    with _lock:
        if profile.name in _registry and not replace:
            raise PolicyError(
                f"a profile named {profile.name!r} exists; pass replace=True to replace it",
                rule="profile_exists",
                model=profile.name,
            )
        _registry[profile.name] = profile


def get_profile(name: str) -> ModelProfile:
    """The profile for ``name``: registered under it, or its family's renamed to it.

    Resolution: the exact name; else the name without its release suffix
    (date, ``-latest``, ``-preview…``); else the longest registered name that
    prefixes it at a ``-`` boundary and is of the size class the name reads
    as. Raises :class:`UnknownModel` listing the registered names.
    """
    found = _registry.get(name)
    if found is not None:
        return found
    found = _family_of(name)
    if found is None:
        raise UnknownModel(
            f"no model profile named {name!r} (nor a family it belongs to); "
            f"known: {', '.join(sorted(_registry))}",
            rule="unknown_model",
            model=name,
        )
    return attrs.evolve(found, name=name)


def _family_of(name: str) -> ModelProfile | None:
    base = undated(name)
    found = _registry.get(base)
    if found is not None:
        return found
    reads_as = family_class(name)
    fitting = [
        (len(registered), profile)
        for registered, profile in list(_registry.items())
        if base.startswith(f"{registered}-")
        and (reads_as is None or profile.model_class == reads_as)
    ]
    return max(fitting, key=lambda pair: pair[0])[1] if fitting else None


def profile_names() -> list[str]:
    """Every registered profile name, sorted."""
    return sorted(_registry)
