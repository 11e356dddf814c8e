"""The detail scan: its fast path finds exactly what the plain regular expression finds."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.compression import _details as details
from ctxflow.compression._details import detail_hits
from ctxflow.model import Role, TextBlock, Transcript


def _plain(text: str) -> list[tuple[tuple[int, int], str | None]]:
    return [(m.span(), m.lastgroup) for m in details._DETAIL.finditer(text)]


def _fast(text: str) -> list[tuple[tuple[int, int], str | None]]:
    return [(m.span(), m.lastgroup) for m in detail_hits(text)]


_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def _reference_sentences(text: str) -> Iterator[tuple[int, str]]:
    """The sentence rule as first written: cues by ``finditer``, each start from the line's."""
    if "```" in text:
        text = details._FENCE.sub("\n", text)
    start = stop = -1
    best = 0
    for match in details._DETAIL.finditer(text):
        score = 2 if match.lastgroup == "strong" else 1
        if match.start() < stop:
            best = max(best, score)
            continue
        if best and 8 <= stop - start <= details._DETAIL_CHARS + 8:
            yield best, text[start:stop].strip()
        start = text.rfind("\n", 0, match.start()) + 1
        for end in _SENTENCE_END.finditer(text, start, match.start()):
            start = end.end()
        ender = _SENTENCE_END.search(text, match.end())
        stop = ender.end() if ender else len(text)
        best = score
    if best and 8 <= stop - start <= details._DETAIL_CHARS + 8:
        yield best, text[start:stop].strip()


# Pieces that make cues, near-cues and their boundaries likely in a drawn text.
_PIECES = st.sampled_from(
    [
        "my",
        "our",
        "the",
        "is",
        "are",
        "=",
        ":",
        "#",
        ".",
        ",",
        "!",
        "?",
        "/",
        "@",
        "$",
        "_",
        "-",
        "~",
        "`",
        "(",
        '"',
        "'",
        "",
        " ",
        "  ",
        "\n",
        "\t",
        "\x1c",
        "\u00a0",
        "€",
        "é",
        "5",
        "42",
        "1234",
        "AB12",
        "X9Y8Z7",
        "v1.2.3",
        "3.14",
        "port",
        "8080",
        "code",
        "id",
        "pin",
        "okay",
        "ok",
        "yes",
        "please",
        "use",
        "set",
        "deploy to",
        "should be",
        "my account is",
        "the host is",
        "src/app.py",
        "~/x/y",
        "../a/b",
        "notes.md",
        "a.b",
        "x@y.io",
        "https://h.io/p",
        "snake_case1",
        "abc12",
        "5 ms",
        "10GB",
        "word",
        "Word",
        "```",
    ]
)
_TEXTS = st.lists(_PIECES, max_size=40).map("".join)


_KEYWORDS = [
    "code",
    "id",
    "number",
    "password",
    "pin",
    "key",
    "token",
    "version",
    "port",
    "host",
    "email",
    "account",
    "order",
    "reservation",
    "ticket",
    "username",
    "address",
]

# One text per cue, each found by the plain expression; alone, after a word, after a
# line break and after a tab the fast scan must find what the plain one finds.
_CUES = [
    "my dog is Rex",
    "Our plan was B",
    "please use tabs",
    "yes, use the blue one",
    "Okay. switch to main",
    "sure keep it",
    "use the old key",
    "The host is A1",
    "the limit should be 5",
    *(f"{word}: X" for word in _KEYWORDS),
    *(f"{word} = 7" for word in _KEYWORDS),
    "AB12CD",
    "run_2",
    "py311",
    "10 ms",
    "$ 5",
    "$5",
    "port 8080",
    "v1.2.3",
    "4096",
    "~/a/b",
    "../a/b",
    "/etc/hosts",
    "notes.md",
    "(-notes.md",
    "(+me@x.io",
    "me@x.io",
    "me@x._a",
    "https://h.io",
]


def test_every_cue_is_found_wherever_it_stands() -> None:
    for cue in _CUES:
        assert _plain(cue), cue
        for text in (cue, f"so {cue}.", f"First.\n{cue}", f"x\t{cue} now"):
            assert _fast(text) == _plain(text), text


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_the_fast_scan_finds_exactly_the_plain_matches(text: str) -> None:
    assert _fast(text) == _plain(text)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=200))
def test_the_fast_scan_agrees_on_arbitrary_ascii(text: str) -> None:
    assert _fast(text) == _plain(text)


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_sentences_are_those_of_the_first_rule(text: str) -> None:
    details._cached_details.cache_clear()
    assert list(details._sentences_with_details(text)) == list(_reference_sentences(text))


def test_every_user_text_of_the_corpus_scans_alike(corpus: list[Transcript]) -> None:
    texts = [
        block.text
        for transcript in corpus
        for message in transcript.messages
        if message.role is Role.USER
        for block in message.content
        if isinstance(block, TextBlock)
    ]
    assert len(texts) > 1_000
    for text in texts:
        assert _fast(text) == _plain(text)
        assert list(details._sentences_with_details(text)) == list(_reference_sentences(text))


def test_a_long_line_of_many_sentences_is_scanned_once() -> None:
    # Each sentence holds a cue; the sentence search starts where the last one stopped.
    text = " ".join(f"Item {n} costs ${n}.50 today." for n in range(2_000))
    found = list(details._sentences_with_details(text))
    assert len(found) == 2_000
    assert found[0] == (1, "Item 0 costs $0.50 today.")
    assert found == list(_reference_sentences(text))


def test_hostile_blobs_are_scanned_in_linear_time() -> None:
    """Pasted blobs once made the cue expression quadratic (minutes for 100k characters).

    The test times nothing: a quadratic scan of these texts would not end
    within the suite's run.
    """
    blobs = [
        "a." * 50_000,  # a file-name cue tried at every word
        "AB-" * 33_000,  # a code's lookaheads at every word
        "a" * 100_000 + "@b",  # an address cue tried at every character
        "x/" * 50_000,
        "1." * 50_000,
        "(-" * 50_000,
    ]
    for blob in blobs:
        details._cached_details.cache_clear()
        assert _fast(blob) == _plain(blob)
        list(details._sentences_with_details(blob))
