"""Tests for offline token counting, profiles and calibration."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import PolicyError, TokenizerUnavailable, UnknownModel
from ctxflow.model import Message, TextBlock, ToolResultBlock, ToolUseBlock, Transcript
from ctxflow.testing import capture_events
from ctxflow.tokens import (
    IMAGE_TOKENS,
    CalibratedCounter,
    Calibration,
    HeuristicCounter,
    ModelProfile,
    TiktokenCounter,
    counter_for,
    get_profile,
    message_measure,
    profile_names,
    register_profile,
)
from ctxflow.tokens._counters import MEASURE_VERSION, MEMO_CHARS, _short_count

# Runs in a fresh interpreter with every socket refused and an empty tiktoken cache,
# so any attempt to download an encoding fails loudly.
OFFLINE = """
import json, socket, sys
def refuse(*a, **k):
    raise OSError("network disabled in this test")
class Refusing(socket.socket):
    connect = connect_ex = refuse
socket.socket = Refusing
socket.create_connection = refuse
socket.getaddrinfo = refuse
from ctxflow.tokens import TiktokenCounter
texts = json.loads(sys.stdin.read())
out = {}
for name in ("cl100k_base", "o200k_base"):
    counter = TiktokenCounter(name)
    out[name] = [counter._encoding.encode_ordinary(t) for t in texts]
print(json.dumps(out))
"""

SAMPLES = ["hello world", "def f(x):\n    return x  # <|endoftext|>", "Ünïcödé — ✓"]


def test_counts_offline_with_empty_cache(tmp_path: Path) -> None:
    """Both encodings load and count with the network refused and an empty cache."""
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE],
        input=json.dumps(SAMPLES),
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout)
    # Reference ids of the official encodings.
    assert ids["cl100k_base"][0] == [15339, 1917]
    assert ids["o200k_base"][0] == [24912, 2375]
    assert all(len(seq) > 0 for seq in ids["cl100k_base"])


def test_cl100k_data_has_the_official_hash() -> None:
    """The cl100k data file ctxflow loads is byte-identical to the official one."""
    import tiktoken_ext

    data = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert digest == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def test_special_token_text_counts_as_text() -> None:
    """Text containing <|endoftext|> is counted, not refused."""
    assert TiktokenCounter("cl100k_base").count("a <|endoftext|> b") > 3


def test_short_counts_come_from_the_cache_and_equal_fresh_ones() -> None:
    """Texts up to MEMO_CHARS are counted once; a cached count is the encoder's count."""
    counter = TiktokenCounter("cl100k_base")
    encode = counter._encoding.encode_ordinary
    short = "[bash result cleared by ctxflow: 12k characters; recall it by its call id]"
    long = "word " * (MEMO_CHARS // 5 + 10)
    _short_count.cache_clear()
    for text in (short, short, "", "ok", long, long, *SAMPLES):
        assert counter.count(text) == len(encode(text))
    info = _short_count.cache_info()
    assert info.hits >= 1  # the second ``short``
    assert info.currsize == 3 + len(SAMPLES)  # short, "", "ok" and the samples; never ``long``
    again = pickle.loads(pickle.dumps(counter))  # a counter still travels to other processes
    assert again.count(short) == counter.count(short)
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys; print(pickle.load(sys.stdin.buffer).count('ok'))",
        ],
        input=pickle.dumps(counter),
        capture_output=True,
        check=True,
    )
    assert int(fresh.stdout) == counter.count("ok")


def test_unknown_encoding_is_typed() -> None:
    """Asking for an encoding ctxflow does not ship is TokenizerUnavailable."""
    with pytest.raises(TokenizerUnavailable, match="p50k"):
        TiktokenCounter("p50k_base")


def test_missing_o200k_falls_back_with_warning(tmp_path: Path) -> None:
    """Without bpe-openai, o200k falls back to the heuristic counter, logs it and warns why."""
    code = (
        "import sys, warnings; sys.modules['bpe_openai'] = None\n"
        "from ctxflow.testing import capture_events\n"
        "from ctxflow.tokens import counter_for\n"
        "with warnings.catch_warnings(record=True) as caught, capture_events() as logs:\n"
        "    warnings.simplefilter('always')\n"
        "    c = counter_for('o200k_base')\n"
        "print(c.name, logs[0]['event'], logs[0]['level'], caught[0].category.__name__)\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["heuristic", "tokenizer_fallback", "info", "CtxflowWarning"]


def test_counter_for_known_encoding_logs_nothing() -> None:
    """An available encoding gives the exact counter without a warning."""
    with capture_events() as logs:
        counter = counter_for("cl100k_base")
    assert isinstance(counter, TiktokenCounter)
    assert logs == []


def test_heuristic_counter_rounds_up() -> None:
    """The heuristic counts ceil(chars / chars_per_token)."""
    assert HeuristicCounter(4).count("abcde") == 2
    assert HeuristicCounter().count("") == 0


def test_message_measure_counts_every_block() -> None:
    """A message counts its texts, tool names and inputs, results, images and overhead."""
    counter = HeuristicCounter(1)
    measure = message_measure(counter, overhead=3)
    use = ToolUseBlock(id="t", name="ab", input={"k": 1})
    assert measure(Message(role="assistant", content=(TextBlock(text="xy"), use))) == (
        3 + 2 + 2 + len('{"k":1}')
    )
    result = ToolResultBlock(tool_use_id="t", content="abc")
    assert measure(Message(role="user", content=(result,))) == 3 + 3
    from ctxflow.model import ImageBlock

    image = Message(role="user", content=(ImageBlock(source={"type": "url", "url": "u"}),))
    assert measure(image) == 3 + IMAGE_TOKENS


def test_measure_keys_name_what_they_count() -> None:
    """A measure's key names its counter exactly and its overhead; others have none."""
    tiktoken = message_measure(TiktokenCounter("cl100k_base"), overhead=4)
    assert tiktoken.key == f"message/{MEASURE_VERSION}/tiktoken:cl100k_base/4"
    assert message_measure(TiktokenCounter("cl100k_base"), overhead=3).key != tiktoken.key
    assert message_measure(HeuristicCounter(3.5)).key != message_measure(HeuristicCounter(4)).key
    assert message_measure(HeuristicCounter(4)).key == message_measure(HeuristicCounter(4)).key

    class Other(HeuristicCounter):
        """A subclass may count differently: it gets no key."""

    assert message_measure(Other()).key is None
    calibrated = CalibratedCounter(HeuristicCounter(), Calibration(), "gpt-4o")
    assert message_measure(calibrated).key is None


def test_profiles() -> None:
    """Built-in profiles give an input budget; unknown names are typed errors."""
    profile = get_profile("claude-sonnet-4-5")
    assert profile.input_budget == profile.context_window - profile.output_reserve
    assert profile.output_reserve <= profile.max_output
    assert "gpt-4o" in profile_names()
    with pytest.raises(UnknownModel, match="no model profile named 'nope'"):
        get_profile("nope")


def test_profile_without_input_budget_is_rejected() -> None:
    """A reserve that eats the whole window is a PolicyError."""
    with pytest.raises(PolicyError, match="leaves no input budget") as info:
        ModelProfile(
            name="x", provider="p", context_window=1000, max_output=2000, output_reserve=1000
        )
    assert info.value.rule == "no_input_budget"
    with pytest.raises(PolicyError, match="'context_window' must be a positive integer"):
        ModelProfile(name="x", provider="p", context_window=0, max_output=10)


def test_register_profile_refuses_shadowing() -> None:
    """A registered profile can be fetched; re-registering needs replace=True."""
    profile = ModelProfile(name="test-model-x", provider="p", context_window=10_000, max_output=500)
    register_profile(profile)
    assert get_profile("test-model-x").output_reserve == 500
    with pytest.raises(PolicyError):
        register_profile(profile)
    register_profile(profile, replace=True)


def test_calibration_learns_and_clamps() -> None:
    """Observed usage moves the factor toward actual/estimated, within bounds."""
    calibration = Calibration(alpha=0.5)
    assert calibration.factor("m") == 1.0
    assert calibration.observe("m", 100, 110) == pytest.approx(1.1)
    assert calibration.observe("m", 100, 130) == pytest.approx(1.2)
    assert calibration.samples("m") == 2
    assert calibration.observe("wild", 100, 10_000) == 2.0
    with pytest.raises(PolicyError):
        calibration.observe("m", 0, 10)
    counter = CalibratedCounter(HeuristicCounter(1), calibration, "m")
    assert counter.count("x" * 100) == 120
    assert counter.name == "heuristic+calibrated"


# Pieces a text is made of where the pre-tokenizers differ: newlines before and after
# punctuation, slashes, spaces, contractions, digits, letters of several scripts.
_PIECES = [
    "\n",
    "\n\n",
    "\r\n",
    " \n",
    "\t",
    " ",
    "  ",
    "/",
    "//",
    ".",
    "...",
    "'s",
    "'ll",
    "-",
    "# ",
    "- ",
    "```",
    ":",
    "a",
    "word",
    "Word",
    "CAPS",
    "x_y",
    "12",
    "12345",
    "é",
    "日本",
    "😀",
    "<|endoftext|>",
]


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
@settings(max_examples=250, deadline=None)
@given(text=st.lists(st.sampled_from(_PIECES), max_size=60).map("".join))
def test_line_cuts_add_up_to_the_count(encoding: str, text: str) -> None:
    """Cut where ``line_cuts`` cuts, a text's pieces count what the whole text counts."""
    counter = _loaded(encoding)
    encode = counter._encoding.encode_ordinary
    cuts = counter.line_cuts(text)
    assert "".join(cuts) == text
    assert sum(len(encode(cut)) for cut in cuts) == len(encode(text))


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_line_cuts_add_up_over_the_corpus(encoding: str, corpus: list[Transcript]) -> None:
    """Every multi-line text of the corpus (tool output, code, prompts) counts the same cut."""
    counter = _loaded(encoding)
    encode = counter._encoding.encode_ordinary
    texts = [
        block_text
        for transcript in corpus
        for message in transcript.messages
        for block_text in _texts(message)
        if "\n" in block_text
    ]
    assert len(texts) > 1_000
    for text in texts[:: max(1, len(texts) // 3_000)]:
        cuts = counter.line_cuts(text)
        assert len(cuts) == 1 + sum(1 for k in range(1, len(text)) if _cut_at(text, k))
        assert sum(len(encode(cut)) for cut in cuts) == len(encode(text)), text[:200]


def _loaded(encoding: str) -> TiktokenCounter:
    # A package o200k's loading reaches still calls a deprecated importlib API.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return TiktokenCounter(encoding)


def _cut_at(text: str, k: int) -> bool:
    return text[k - 1] == "\n" and not text[k].isspace() and text[k] != "/"


def _texts(message: Message) -> list[str]:
    found = [block.text for block in message.content if isinstance(block, TextBlock)]
    found += [r.text for r in message.tool_results]
    return found
