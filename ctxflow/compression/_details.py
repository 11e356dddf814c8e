"""The details users state, found fast: codes, numbers with units, paths, "my X is …".

Truncation and condensation flush these to semantic memory before hiding the
turns that hold them, and the extractive summarizer lists them; so the scan
runs over every user turn a compression hides. One combined regular
expression finds the cues; Python's engine tries every alternative at every
position, about a microsecond a character, so for ASCII text (nearly all of
it) :func:`detail_hits` tries it only where a cue can begin: at a cue word, at
a line start, and inside a whitespace-free run holding a digit, ``/``, ``@``,
``$`` or a dot before a letter. Every cue needs one of them, so the hits are
those of ``finditer`` over the whole text (a property test holds them equal),
in a fraction of the time. Every cue is linear in any text, pasted blobs too.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Sequence

from ctxflow.layers import Fact
from ctxflow.model import SUMMARY_OF, Message, Role, TextBlock

__all__ = ["block_texts", "detail_hits", "extract_details"]

# Specific, checkable details a user states: one scan over the text finds the
# cues, then only the sentences holding a hit are judged. Strong cues say the
# user is stating something to keep ("my X is", "please use", "the code is …");
# weak ones are details by their shape (codes, numbers with units, paths).
_STRONG = (
    r"\b(?:my|our)\s+[\w'\u2019 -]{1,40}?\s+(?:is|are|was|=)\s+\S"
    r"|(?:^|\bplease\s+|\b(?:yes|yeah|ok|okay|sure|correct|right)\b[,.!]?\s+)"
    r"(?:use|set|keep|go\s+with|pick|choose|switch\s+to|deploy\s+to|send)\b"
    r"|\bthe\s+[\w'\u2019 -]{1,40}?\s+(?:is|are|should\s+be|must\s+be|=)\s+"
    r"[\"'`(]?(?=[A-Z0-9/~$\u20ac\u00a3])"
    r"|\b(?:code|id|number|password|pin|key|token|version|port|host|email|account|order"
    r"|reservation|ticket|username|address)\b\s*(?:is|:|=|#)\s*\S"
)
# Each cue is linear in the text it scans, whatever the text: a pasted blob
# (base64, minified code, "a.a.a…") must not make the scan quadratic. So the
# lookaheads and the code itself are bounded, and a file name or an address is
# tried only where its run of name characters begins.
_WEAK = (
    r"(?-i:\b(?=[A-Z0-9_-]{0,63}\d)(?=[A-Z0-9_-]{0,63}[A-Z])[A-Z0-9][A-Z0-9_-]{3,63}\b)"
    r"|\b[a-z]+_[a-z0-9_]*\d\b|\b[a-z]{2,}(?:[-.]\d+|\d{2,})\b"
    r"|\b\d+(?:\.\d+)?\s?(?:ms|s|secs?|seconds?|min|minutes?|hours?|days?|weeks?|[kmgt]i?b"
    r"|%|px|rpm|items?|rows?|users?|workers?|threads?|retries|times|percent)\b"
    r"|[$\u20ac\u00a3]\s?\d|\bport\s+\d{2,5}\b|\bv?\d+\.\d+\.\d+\b|\b\d{3,}\b"
    r"|(?<![\w/])(?:~|\.{1,2})?/[\w.-]+(?:/[\w.-]+)+"
    r"|(?<![\w.-])[\w.-]{1,200}\.(?:py|js|ts|md|json|ya?ml"
    r"|toml|cfg|ini|go|rs|java|sh|sql|txt|log|csv|conf)\b"
    r"|(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+|https?://\S+"
)
_DETAIL = re.compile(f"(?im)(?P<strong>{_STRONG})|(?P<weak>{_WEAK})")
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_DETAIL_CHARS = 240
_MAX_DETAILS = 48

# Where a cue can begin. Every strong cue begins at a line start or at one of
# these words, standing alone (a word boundary on both sides); every weak one
# lies inside a whitespace-free run holding an anchor at or after its start (a
# digit, a path's or URL's slash, an address's at sign, a price's dollar, a file
# extension's dot), or begins at the word "port". Where only one kind can begin,
# only that kind is tried.
_CUE_WORDS = re.compile(
    "okay|ok|my|our|please|yes|yeah|sure|correct|right|the|code|id|number|password|pin|key"
    "|token|version|port|host|email|account|order|reservation|ticket|username|address"
)
# A whitespace-free run holding an anchor (a full stop is not one; a dot before a
# letter is); the lookbehind lets only a run's first character start a match.
_ANCHORED_RUN = re.compile(r"(?<!\S)\S*?(?:[0-9/@$]|\.[A-Za-z])\S*")
# Inside a run, every weak cue but an address begins at a word boundary, at a
# price's dollar, at a path's or file name's first character or at a URL's "h".
_WEAK_STARTS = re.compile(r"\b|(?=[$~./hH-])")
_STRONG_ONLY = re.compile(f"(?im)(?P<strong>{_STRONG})")
_WEAK_ONLY = re.compile(f"(?im)(?P<weak>{_WEAK})")


def _in_word(text: str, at: int) -> bool:
    """True when ``text[at]`` is a word character (ASCII text)."""
    return 0 <= at < len(text) and (text[at].isalnum() or text[at] == "_")


def detail_hits(text: str) -> list[re.Match[str]]:
    """The matches of the detail cues in ``text``, exactly those of ``finditer``, in order."""
    if not text.isascii():
        return list(_DETAIL.finditer(text))
    tries: dict[int, re.Pattern[str]] = {}
    for run in _ANCHORED_RUN.finditer(text):
        begin, stop = run.span()
        if "@" in run.group():  # an address's cue may begin at any character of its run
            tries.update(dict.fromkeys(range(begin, stop), _WEAK_ONLY))
        else:
            tries.update((m.start(), _WEAK_ONLY) for m in _WEAK_STARTS.finditer(text, begin, stop))
    if 2 * len(tries) > len(text):  # a dense blob: trying each place costs more than a scan
        return list(_DETAIL.finditer(text))
    starts = [0]
    for word in _CUE_WORDS.finditer(text.lower()):
        at = word.start()
        if not _in_word(text, at - 1) and not _in_word(text, word.end()):
            if word.group() == "port":  # "port 8080" is a weak cue that starts at a word
                tries[at] = _DETAIL
            starts.append(at)
    line = text.find("\n")
    while line >= 0:
        starts.append(line + 1)
        line = text.find("\n", line + 1)
    for at in starts:
        kind = tries.get(at)
        if kind is None:
            tries[at] = _STRONG_ONLY
        elif kind is _WEAK_ONLY:
            tries[at] = _DETAIL
    hits: list[re.Match[str]] = []
    end = 0
    for at in sorted(tries):
        if at < end:
            continue
        match = tries[at].match(text, at)
        if match is not None:
            hits.append(match)
            end = match.end()
    return hits


def _sentences_with_details(text: str) -> Iterator[tuple[int, str]]:
    """Each (score, sentence) of ``text`` holding a detail cue: 2 for a strong one, else 1."""
    if "```" in text:
        text = _FENCE.sub("\n", text)
    start = stop = -1
    best = 0
    for match in detail_hits(text):
        score = 2 if match.lastgroup == "strong" else 1
        if match.start() < stop:
            best = max(best, score)
            continue
        if best and 8 <= stop - start <= _DETAIL_CHARS + 8:
            yield best, text[start:stop].strip()
        # The sentence starts after the last sentence end before the cue; the
        # search starts where the previous sentence stopped (linear in the text).
        start = max(text.rfind("\n", max(stop, 0), match.start()) + 1, stop)
        for end in _SENTENCE_END.finditer(text, start, match.start()):
            start = end.end()
        ender = _SENTENCE_END.search(text, match.end())
        stop = ender.end() if ender else len(text)
        best = score
    if best and 8 <= stop - start <= _DETAIL_CHARS + 8:
        yield best, text[start:stop].strip()


#: Texts up to this size keep their scan in a small cache: a condensation scans its
#: span in the rung (facts to flush) and again in the summarizer (its Details).
_CACHED_TEXT_CHARS = 65_536


@functools.lru_cache(maxsize=256)
def _cached_details(text: str) -> tuple[tuple[int, str], ...]:
    return tuple(_sentences_with_details(text))


def _details_of(text: str) -> Iterator[tuple[int, str]] | tuple[tuple[int, str], ...]:
    if len(text) <= _CACHED_TEXT_CHARS:
        return _cached_details(text)
    return _sentences_with_details(text)


def extract_details(messages: Sequence[Message], *, limit: int = _MAX_DETAILS) -> list[Fact]:
    """Specific details users state, as facts: codes, numbers, paths, "my X is …", "use …".

    Only the text users wrote is read (tool output and assistant text are
    not), sentence by sentence; a sentence is kept verbatim when it holds an
    identifier, a number with a unit, a port, a path, an address, a
    confirmation ("yes, use …"), a directive ("please use …") or a statement
    such as "my account is …" / "the code is …". Duplicates are dropped; at
    most ``limit`` are returned (strong cues first, then the most recent), in
    conversation order, each keyed ``detail:<digest>``.
    """
    found: list[tuple[int, int, Fact]] = []
    seen: set[str] = set()
    order = 0
    for message in messages:
        if (
            message.role is not Role.USER
            or SUMMARY_OF in message.metadata
            or message.metadata.get("ctxflow.kind") == "summary"
        ):
            continue
        for text in block_texts(message):
            for score, sentence in _details_of(text):
                line = " ".join(sentence.split())
                if not 8 <= len(line) <= _DETAIL_CHARS:
                    continue
                digest = hashlib.sha1(line.lower().encode()).hexdigest()[:10]
                if digest in seen:
                    continue
                seen.add(digest)
                found.append(
                    (score, order, Fact(key=f"detail:{digest}", value=line, source=message.id))
                )
                order += 1
    if len(found) > limit:
        found = sorted(found, key=lambda item: (-item[0], -item[1]))[:limit]
        found.sort(key=lambda item: item[1])
    return [fact for _, _, fact in found]


def block_texts(message: Message) -> list[str]:
    """The message's non-empty text blocks (tool results and calls excluded)."""
    return [b.text for b in message.content if isinstance(b, TextBlock) and b.text]
