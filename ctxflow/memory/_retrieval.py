"""Retrieval by relevance: which memory items a window shows when not all of them fit.

When the memory allocation of a window cannot hold every fact, episode and
procedure, items are ranked by their relevance to the task and the latest turn,
then by importance, then by recency, and the best that fit are kept.

Relevance comes from a :class:`Retriever`; the default is :class:`BM25Retriever`,
Okapi BM25 (Lucene's variant, the scores of ``bm25s``'s ``lucene`` method) over
terms that are lower-cased, split on anything that is not a letter or digit, stripped of
English stop words and stemmed with the Snowball English stemmer (PyStemmer), so
"deploys", "deployed" and "deployment" all match "deploy". Nothing is downloaded.
Relevance by meaning (``EmbeddingRetriever``, ``HybridRetriever``) is an optional
extra: see :mod:`ctxflow.memory._embedding`.

Gotchas:

- The same memory is ranked every turn, so a retriever keeps the indexes of the
  last few document lists (keyed by the exact tuple of texts); changing one item
  makes a new index. An index makes a term's posting when a query first asks for
  it (one pass over the documents, whose stemmed terms are cached), so a list
  ranked once costs what its query's terms touch; querying sums the postings of
  the query's terms.
- Relevance is normalised per call: the best-matching text has relevance 1.0
  and the others a fraction of it, so scores are comparable only within one call.
- :func:`choose` returns items in their original order, not rank order, so a
  rendered memory block moves as little as possible from one turn to the next.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple, Protocol, runtime_checkable

import attrs
import Stemmer  # type: ignore[import-not-found]

from ctxflow.errors import PolicyError

__all__ = [
    "IMPORTANCE_WEIGHT",
    "RECENCY_WEIGHT",
    "RELEVANCE_WEIGHT",
    "BM25Retriever",
    "Ranked",
    "Retriever",
    "choose",
    "rank",
    "tokenize",
]

#: Weight of normalised relevance (0..1) in a ranked item's score: the dominant part.
RELEVANCE_WEIGHT = 0.7
#: Weight of importance (0..1) in a ranked item's score.
IMPORTANCE_WEIGHT = 0.2
#: Weight of recency (0..1, 1 = newest) in a ranked item's score.
RECENCY_WEIGHT = 0.1

_REASON_TERMS = 5

# Common English function words; question words ("which", "where") included,
# since questions are the usual query.
# fmt: off
_STOP_WORDS = frozenset([
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "aren", "as", "at", "be", "because", "been", "before", "being", "below", "between",
    "both", "but", "by", "can", "cannot", "could", "couldn", "did", "didn", "do", "does", "doesn",
    "doing", "don", "down", "during", "each", "either", "else", "ever", "few", "for", "from",
    "further", "get", "gets", "got", "had", "hadn", "has", "hasn", "have", "haven", "having", "he",
    "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into",
    "is", "isn", "it", "its", "itself", "just", "let", "ll", "me", "might", "more", "most", "must",
    "mustn", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or",
    "other", "ought", "our", "ours", "ourselves", "out", "over", "please", "re", "s",
    "same", "shall", "shan", "she", "should", "shouldn", "so", "some", "such", "t", "than", "that",
    "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "us", "ve", "very", "was", "wasn",
    "we", "were", "weren", "what", "whats", "when", "where", "which", "while", "who", "whom",
    "whose", "why", "will", "with", "won", "would", "wouldn", "you", "your", "yours", "yourself",
    "yourselves",
])
# fmt: on
_WORD = re.compile(r"[^\W_]+")
_STEMMER_LOCK = threading.Lock()
_STEMMER: Any = Stemmer.Stemmer("english")


def _words(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]


def _stem(words: list[str]) -> list[str]:
    # A PyStemmer object is not safe to share between threads.
    with _STEMMER_LOCK:
        stems: list[str] = _STEMMER.stemWords(words)
    return stems


def tokenize(text: str) -> list[str]:
    """The index terms of ``text``: lower-cased words and numbers, stop words dropped, stemmed."""
    return _stem(_words(text))


class _Terms(NamedTuple):
    """A document's terms as BM25 reads them."""

    length: int  # how many terms, repeats included
    distinct: tuple[str, ...]  # each term once, in first-seen order
    repeats: dict[str, int] | None  # the count of each term seen more than once


# Memory items' lines come back at every index build until they change: stem them
# once. A few times what memory holds at its default limits (queries never enter).
@lru_cache(maxsize=1024)
def _terms(text: str) -> _Terms:
    terms = tokenize(text)
    counts = Counter(terms)
    repeats = {term: n for term, n in counts.items() if n > 1}
    return _Terms(len(terms), tuple(counts), repeats or None)


@runtime_checkable
class Retriever(Protocol):
    """Scores texts by their relevance to a query.

    A retriever may name where its scores come from in a ``source`` attribute
    (``"embedding"``, ``"bm25+embedding"``); a ranked text's reason then says
    so, and shows the query words the text matched only when the source names
    ``bm25`` (a retriever without one counts as lexical).
    """

    def scores(self, documents: Sequence[str], query: str) -> list[float]:
        """One score per document, in order; higher is more relevant, equal inputs score equally."""
        ...


class _Index:
    """One document list's BM25 index, its postings made term by term as queries ask.

    Made from the documents' cached terms in one pass (their lengths' norms);
    a term's posting (its idf, the positions of the documents holding it and
    their term-frequency components) is made the first time a query asks for
    it, in one pass over the documents' terms for all the query's new terms,
    and kept. So a list ranked once costs a set lookup per term of its
    documents and weights for the query's terms alone, not a posting for
    every term, and one ranked again and again costs a lookup per query term.
    Postings are tuples of numbers only: the collector stops tracking them
    within its first passes. Two threads filling a posting at once make the
    same entry twice.
    """

    __slots__ = ("_corpus", "_norms", "postings", "size")

    def __init__(self, documents: tuple[str, ...], k1: float, b: float) -> None:
        corpus = [_terms(document) for document in documents]
        self._corpus = corpus
        self.size = size = len(corpus)
        total = sum(terms.length for terms in corpus)
        shrink = k1 * b * size / total if total else 0.0  # k1 * b / avglen
        base = k1 * (1 - b)
        self._norms = [base + shrink * terms.length for terms in corpus]
        self.postings: dict[str, tuple[float, tuple[int, ...], tuple[float, ...]] | None] = {}

    def postings_of(
        self, terms: Sequence[str]
    ) -> list[tuple[float, tuple[int, ...], tuple[float, ...]] | None]:
        """Each term's idf, the documents holding it and their weights (None: no document
        holds it), making the postings not made yet in one pass over the documents."""
        postings = self.postings
        missing = {term for term in terms if term not in postings}
        if missing:
            found: dict[str, list[int]] = {term: [] for term in missing}
            for at, document in enumerate(self._corpus):
                for term in document.distinct:
                    if term in missing:
                        found[term].append(at)
            corpus, norms, size = self._corpus, self._norms, self.size
            for term, positions in found.items():
                if not positions:
                    postings[term] = None
                    continue
                weights = []
                for at in positions:
                    repeats = corpus[at].repeats
                    tf = 1 if repeats is None else repeats.get(term, 1)
                    weights.append(tf / (norms[at] + tf))
                n = len(positions)
                idf = math.log(1 + (size - n + 0.5) / (n + 0.5))
                postings[term] = (idf, tuple(positions), tuple(weights))
        return [postings[term] for term in terms]


class BM25Retriever:
    """Okapi BM25 relevance (Lucene's variant), with an LRU of indexes per document list.

    ``k1`` and ``b`` are BM25's term-saturation and length-normalisation
    parameters; ``cache_size`` is how many document lists keep their index.
    Safe to share between threads.

    A document scores ``sum(idf(t) * tf / (tf + k1 * (1 - b + b * len / avglen)))``
    over the query's terms ``t`` (a repeated term counts again), with
    ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))``: the scores of ``bm25s``'s
    ``lucene`` method (a test holds them to it). The index is a dictionary of
    postings made term by term, the first time a query asks for a term: memory
    is re-indexed whenever a tier changes, a few hundred short texts at a time,
    and ranked by two queries; a posting for every term of every text would
    cost more to make than the queries it serves (200 memory lines: 0.53 ms to
    index and score once that way, 0.17 ms this way).
    """

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, cache_size: int = 4) -> None:
        if not (math.isfinite(k1) and k1 > 0):
            raise PolicyError(f"'k1' must be a positive number (got {k1!r})", rule="bm25_k1", k1=k1)
        if not (math.isfinite(b) and 0 <= b <= 1):
            raise PolicyError(f"'b' must be a number in [0, 1] (got {b!r})", rule="bm25_b", b=b)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise PolicyError(
                f"'cache_size' must be a positive integer (got {cache_size!r})",
                rule="bm25_cache_size",
                cache_size=cache_size,
            )
        self.k1 = k1
        self.b = b
        self.cache_size = cache_size
        self._indexes: OrderedDict[tuple[str, ...], _Index] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BM25Retriever(k1={self.k1!r}, b={self.b!r}, cache_size={self.cache_size!r})"

    def scores(self, documents: Sequence[str], query: str) -> list[float]:
        """BM25 score of each document for ``query`` (all zeros when nothing can match)."""
        key = tuple(documents)
        if not key:
            return []
        terms = tokenize(query)
        if not terms:
            return [0.0] * len(key)
        index = self._index(key)
        found = [0.0] * index.size
        for entry in index.postings_of(terms):
            if entry is not None:
                idf, positions, weights = entry
                for position, weight in zip(positions, weights, strict=True):
                    found[position] += idf * weight
        return found

    def _index(self, documents: tuple[str, ...]) -> _Index:
        with self._lock:
            index = self._indexes.get(documents)
            if index is not None:
                self._indexes.move_to_end(documents)
                return index
        index = _Index(documents, self.k1, self.b)
        with self._lock:
            self._indexes[documents] = index
            self._indexes.move_to_end(documents)
            while len(self._indexes) > self.cache_size:
                self._indexes.popitem(last=False)
        return index


_DEFAULT_RETRIEVER = BM25Retriever()


@attrs.frozen(kw_only=True)
class Ranked:
    """One text's place in a ranking.

    ``index`` is its position in the input, ``score`` the combined score that
    orders the ranking, ``relevance`` its relevance normalised to 0..1 within the
    call, and ``reason`` a short account of both (for ``ctxflow window --explain``;
    written when asked for, not for every ranked text).
    """

    index: int
    score: float
    relevance: float
    terms: tuple[str, ...] = ()
    importance: float | None = None
    recency: float | None = None
    source: str | None = None

    @property
    def reason(self) -> str:
        """Why the text ranks where it does: relevance (source, words), importance, recency."""
        return _reason(self.relevance, list(self.terms), self.importance, self.recency, self.source)


def rank(
    texts: Sequence[str],
    query: str,
    *,
    importance: Sequence[float] | None = None,
    recency: Sequence[float] | None = None,
    retriever: Retriever | None = None,
) -> list[Ranked]:
    """Rank ``texts`` for ``query``, best first.

    The score is ``RELEVANCE_WEIGHT * relevance + IMPORTANCE_WEIGHT * importance
    + RECENCY_WEIGHT * recency``, where relevance is the retriever's score divided
    by the best one (negative scores count as zero), and importance and recency
    are numbers in [0, 1] per text (missing: zero). Equal scores are ordered by
    recency, then by position, later first. A query with no terms ranks by
    importance and recency alone. The default retriever is a shared
    :class:`BM25Retriever`.
    """
    ordered, made = _ranking(texts, query, importance, recency, retriever)
    return [made(position) for position in ordered]


def _ranking(
    texts: Sequence[str],
    query: str,
    importance: Sequence[float] | None,
    recency: Sequence[float] | None,
    retriever: Retriever | None,
) -> tuple[list[int], Callable[[int], Ranked]]:
    """The positions of ``texts`` in :func:`rank` order, and what builds the
    :class:`Ranked` of one (a caller keeping a few builds only those)."""
    count = len(texts)
    importances = _unit_values(importance, count, "importance")
    recencies = _unit_values(recency, count, "recency")
    if count == 0:
        return [], _nothing  # no position to build a Ranked for
    ranker = retriever or _DEFAULT_RETRIEVER
    raw = ranker.scores(texts, query)
    relevances = _normalised(raw, count)
    source = getattr(ranker, "source", None)
    source = source if isinstance(source, str) and source else None
    query_stems = _query_stems(query) if source is None or "bm25" in source else []
    matching = bool(query_stems) and any(relevances)
    weights = importances if importances is not None else [0.0] * count
    freshness = recencies if recencies is not None else [0.0] * count
    scores = [
        RELEVANCE_WEIGHT * relevance + IMPORTANCE_WEIGHT * weight + RECENCY_WEIGHT * fresh
        for relevance, weight, fresh in zip(relevances, weights, freshness, strict=True)
    ]
    ordered = sorted(
        range(count), key=lambda position: (-scores[position], -freshness[position], -position)
    )

    def made(position: int) -> Ranked:
        relevance = relevances[position]
        return Ranked(
            index=position,
            score=scores[position],
            relevance=relevance,
            terms=tuple(_matched(query_stems, _terms(texts[position]).distinct))
            if matching and relevance > 0
            else (),
            importance=None if importances is None else weights[position],
            recency=None if recencies is None else freshness[position],
            source=source,
        )

    return ordered, made


def _nothing(position: int) -> Ranked:
    raise IndexError(position)


def choose(
    texts: Sequence[str],
    query: str,
    *,
    sizes: Sequence[int],
    allowance: int,
    importance: Sequence[float] | None = None,
    recency: Sequence[float] | None = None,
    retriever: Retriever | None = None,
) -> list[Ranked]:
    """The best-ranked texts whose ``sizes`` add up to at most ``allowance``, in input order.

    Texts are taken in :func:`rank` order; one that does not fit in what is left
    is skipped and later, smaller ones may still be taken.
    """
    if len(sizes) != len(texts):
        raise PolicyError(
            f"'sizes' must have one entry per text ({len(texts)}) (got {len(sizes)})",
            rule="retrieval_lengths",
            expected=len(texts),
            got=len(sizes),
        )
    if not (set(map(type, sizes)) <= {int} and (not sizes or min(sizes) >= 0)):
        for size in sizes:  # name the first that is not a non-negative int
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise PolicyError(
                    f"'sizes' must be non-negative integers (got {size!r})",
                    rule="retrieval_size",
                    size=size,
                )
    if isinstance(allowance, bool) or not isinstance(allowance, int) or allowance < 0:
        raise PolicyError(
            f"'allowance' must be a non-negative integer (got {allowance!r})",
            rule="retrieval_allowance",
            allowance=allowance,
        )
    left = allowance
    kept: list[int] = []
    ordered, made = _ranking(texts, query, importance, recency, retriever)
    for position in ordered:
        size = sizes[position]
        if size <= left:
            kept.append(position)
            left -= size
    kept.sort()
    return [made(position) for position in kept]


def _one_per_text(got: int, count: int, what: str, rule: str) -> None:
    """Refuse ``got`` entries where there must be one per text (``count``)."""
    if got != count:
        raise PolicyError(
            f"{what} per text ({count}) (got {got})", rule=rule, expected=count, got=got
        )


def _unit_values(values: Sequence[float] | None, count: int, name: str) -> list[float] | None:
    if values is None:
        return None
    _one_per_text(len(values), count, f"{name!r} must have one entry", "retrieval_lengths")
    if set(map(type, values)) <= _NUMBERS and all(0 <= value <= 1 for value in values):
        return list(map(float, values))
    for value in values:  # name the first that is not a number in [0, 1]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise PolicyError(
                f"{name!r} values must be numbers in [0, 1] (got {value!r})",
                rule=f"retrieval_{name}",
                value=value,
            )
    return list(map(float, values))


_NUMBERS = frozenset({int, float})


def _normalised(raw: Sequence[float], count: int) -> list[float]:
    _one_per_text(len(raw), count, "a retriever must return one score", "retriever_scores")
    try:
        numbers = list(map(float, raw))
    except (TypeError, ValueError):
        numbers = []
    # A sum of finite numbers is finite or overflows; NaN or an infinity anywhere is not.
    if len(numbers) != count or not math.isfinite(sum(numbers)):
        for value in raw:  # name the first that is not a finite number
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise PolicyError(
                    f"a retriever's scores must be finite numbers (got {value!r})",
                    rule="retriever_scores",
                    value=value,
                )
    clamped = [number if number > 0 else 0.0 for number in numbers]
    best = max(clamped)
    if best <= 0:
        return [0.0] * count
    return [value / best for value in clamped]


def _query_stems(query: str) -> list[tuple[str, str]]:
    """Each distinct stem of ``query`` with the first word that produced it, in query order."""
    words = _words(query)
    seen: dict[str, str] = {}
    for stem, word in zip(_stem(words), words, strict=True):
        seen.setdefault(stem, word)
    return list(seen.items())


def _matched(query_stems: list[tuple[str, str]], terms: tuple[str, ...]) -> list[str]:
    return [word for stem, word in query_stems if stem in terms]


def _reason(
    relevance: float,
    terms: list[str],
    importance: float | None,
    recency: float | None,
    source: str | None = None,
) -> str:
    parts = [f"relevance {relevance:.2f}" + (f" by {source}" if source else "")]
    if terms:
        shown = terms[:_REASON_TERMS]
        more = ", …" if len(terms) > _REASON_TERMS else ""
        parts[0] += f" ({', '.join(shown)}{more})"
    if importance is not None:
        parts.append(f"importance {importance:.2f}")
    if recency is not None:
        parts.append(f"recency {recency:.2f}")
    return ", ".join(parts)
