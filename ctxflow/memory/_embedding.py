"""Relevance by meaning: WordLlama embeddings, and their fusion with BM25.

:class:`EmbeddingRetriever` scores a text by the cosine similarity of its
embedding to the query's, with WordLlama's ``l2_supercat`` model at 256
dimensions (average-pooled token vectors; numpy, safetensors and tokenizers, no
PyTorch). :class:`HybridRetriever` fuses BM25's ranking with the embedding's
(reciprocal-rank fusion). Both need the ``embeddings`` extra
(``pip install 'ctxflow[embeddings]'``); without it, constructing one raises
:class:`EmbeddingsUnavailable`. ``import ctxflow`` imports neither wordllama nor
numpy: they load when a retriever is made.

Gotchas:

- Offline by construction: the weights and the tokenizer are read from the
  files in wordllama's wheel, by path. ``WordLlama.load()`` is not used: in
  wordllama 0.4 it looks for the tokenizer in a folder the wheel does not have
  and falls back to a download (or to a file in the user's cache folder).
- Importing wordllama calls ``logging.basicConfig(level=INFO)``; ctxflow is a
  silent library, so the root logger's handlers and level are put back as they
  were.
- Embeddings are cached by text, so an unchanged memory item (frozen, the same
  rendered line) is embedded once, not every window; the matrix of the last few
  document lists is kept too. An embedding retriever's score is the similarity
  above the list's mean similarity (at least zero): ranking normalises relevance
  by the best score, and raw cosines of one topic's texts lie so close together
  that importance and recency would outweigh them.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ctxflow.errors import CtxflowError, PolicyError
from ctxflow.memory._retrieval import BM25Retriever, Retriever

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "RETRIEVERS",
    "EmbeddingRetriever",
    "EmbeddingsUnavailable",
    "HybridRetriever",
    "retriever_named",
]

#: The retrievers :func:`retriever_named` (and ``--retriever``) knows, by name.
RETRIEVERS: Final = ("bm25", "embedding", "hybrid")

_WEIGHTS = ("weights", "l2_supercat_256.safetensors")
_TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")
_EXTRA = "pip install 'ctxflow[embeddings]'"
_IMPORT_LOCK = threading.Lock()


class EmbeddingsUnavailable(CtxflowError, ImportError):
    """The optional ``embeddings`` extra (wordllama) is not installed, or its model is missing."""


def _import(name: str) -> Any:
    """Import ``name``, leaving the root logger as it was (wordllama configures it on import)."""
    with _IMPORT_LOCK:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return importlib.import_module(name)
        finally:
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)
            root.setLevel(level)


def _modules() -> tuple[Any, Any, Any, Any]:
    """numpy, safetensors, tokenizers and wordllama's inference module, or a typed error."""
    try:
        return (
            _import("numpy"),
            _import("safetensors"),
            _import("tokenizers"),
            _import("wordllama.inference"),
        )
    except ImportError as exc:
        raise EmbeddingsUnavailable(
            f"embedding retrieval needs the embeddings extra: {_EXTRA} (got {exc})",
            rule="embeddings_extra",
        ) from exc


@cache
def _model() -> Any:
    """The packaged l2_supercat 256-dim WordLlama model, loaded once per process from its files."""
    numpy, safetensors, tokenizers, inference = _modules()
    package = Path(inference.__file__).parent
    weights, tokenizer = package.joinpath(*_WEIGHTS), package.joinpath(*_TOKENIZER)
    for path in (weights, tokenizer):
        if not path.is_file():
            raise EmbeddingsUnavailable(
                f"the installed wordllama does not ship {path.name} (reinstall it: {_EXTRA})",
                rule="embeddings_model",
                path=str(path),
            )
    with safetensors.safe_open(str(weights), framework="np", device="cpu") as handle:
        matrix = handle.get_tensor("embedding.weight")
    return inference.WordLlamaInference(
        numpy.asarray(matrix), tokenizers.Tokenizer.from_file(str(tokenizer))
    )


_MODEL_LOCK = threading.Lock()


def _loaded() -> Any:
    with _MODEL_LOCK:
        return _model()


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(
            f"{name!r} must be a positive integer (got {value!r})",
            rule=f"embedding_{name}",
            value=value,
        )
    return value


class EmbeddingRetriever:
    """Relevance by meaning: cosine similarity of WordLlama embeddings (the ``embeddings`` extra).

    A text's score is its similarity to the query above the mean similarity of
    the texts ranked with it (zero when below). ``cache_size`` is how many texts
    keep their embedding. Raises :class:`EmbeddingsUnavailable` when the extra
    is missing. Safe to share between threads.
    """

    #: What ``ctxflow window --explain`` names as the source of an item's relevance.
    source = "embedding"

    def __init__(self, *, cache_size: int = 4_096) -> None:
        self.cache_size = _positive_int(cache_size, "cache_size")
        self._model = _loaded()
        self._numpy: Any = importlib.import_module("numpy")
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        # per document list: the embeddings of its distinct texts, and each document's row
        self._matrices: OrderedDict[tuple[str, ...], tuple[NDArray[np.float32], list[int]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingRetriever(cache_size={self.cache_size!r})"

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length embeddings of ``texts``, one row each (a blank text: zeros).

        Not cached: :meth:`similarities` and :meth:`scores` embed only texts they
        have not seen.
        """
        numpy = self._numpy
        if not texts:
            empty: NDArray[np.float32] = numpy.zeros(
                (0, self._model.embedding.shape[1]), dtype=numpy.float32
            )
            return empty
        with self._lock:
            vectors = self._model.embed(list(texts), norm=False)
        vectors[[not text.strip() for text in texts]] = 0.0
        lengths = numpy.linalg.norm(vectors, axis=1, keepdims=True)
        result: NDArray[np.float32] = numpy.divide(
            vectors, lengths, out=numpy.zeros_like(vectors), where=lengths > 0
        )
        return result

    def similarities(self, documents: Sequence[str], query: str) -> list[float]:
        """The cosine similarity of each document's embedding to the query's (-1..1)."""
        key = tuple(documents)
        if not key:
            return []
        matrix, rows = self._matrix(key)
        query_vector = self._vectors_of((query,))[0]
        # One product per distinct text, so equal documents get exactly equal similarities.
        distinct: list[float] = (matrix @ query_vector).tolist()
        return [distinct[row] for row in rows]

    def scores(self, documents: Sequence[str], query: str) -> list[float]:
        """Each document's similarity to ``query`` above the documents' mean (at least zero;
        zero for a blank document)."""
        similar = self.similarities(documents, query)
        counted = [value for value, text in zip(similar, documents, strict=True) if text.strip()]
        if not counted:
            return [0.0] * len(similar)
        mean = sum(counted) / len(counted)
        return [
            max(value - mean, 0.0) if text.strip() else 0.0
            for value, text in zip(similar, documents, strict=True)
        ]

    def _matrix(self, key: tuple[str, ...]) -> tuple[NDArray[np.float32], list[int]]:
        with self._lock:
            found = self._matrices.get(key)
            if found is not None:
                self._matrices.move_to_end(key)
                return found
        distinct = {text: row for row, text in enumerate(dict.fromkeys(key))}
        matrix = (self._vectors_of(tuple(distinct)), [distinct[text] for text in key])
        with self._lock:
            self._matrices[key] = matrix
            while len(self._matrices) > 4:
                self._matrices.popitem(last=False)
        return matrix

    def _vectors_of(self, texts: tuple[str, ...]) -> NDArray[np.float32]:
        with self._lock:
            known = {text: self._vectors[text] for text in texts if text in self._vectors}
            for text in known:
                self._vectors.move_to_end(text)
        missing = list(dict.fromkeys(text for text in texts if text not in known))
        if missing:
            fresh = self.embed(missing)
            with self._lock:
                for text, vector in zip(missing, fresh, strict=True):
                    known[text] = vector
                    self._vectors[text] = vector
                while len(self._vectors) > self.cache_size:
                    self._vectors.popitem(last=False)
        stacked: NDArray[np.float32] = self._numpy.stack([known[text] for text in texts])
        return stacked


class HybridRetriever:
    """BM25 and embedding relevance fused by reciprocal rank (the ``embeddings`` extra).

    A text's score is ``1 / (k + rank)`` under each retriever that gives it a
    positive score, summed (rank 1 is the best; equal scores share the mean of
    their places).
    ``k`` damps the lead of the first ranks. Safe to share between threads.
    """

    source = "bm25+embedding"

    def __init__(
        self,
        *,
        bm25: BM25Retriever | None = None,
        embedding: EmbeddingRetriever | None = None,
        k: int = 10,
    ) -> None:
        self.k = _positive_int(k, "k")
        self.bm25 = bm25 if bm25 is not None else BM25Retriever()
        self.embedding = embedding if embedding is not None else EmbeddingRetriever()

    def __repr__(self) -> str:
        return f"HybridRetriever(bm25={self.bm25!r}, embedding={self.embedding!r}, k={self.k!r})"

    def scores(self, documents: Sequence[str], query: str) -> list[float]:
        """The reciprocal-rank fusion of the BM25 and the embedding scores of each document."""
        if not documents:
            return []
        fused = [0.0] * len(documents)
        for found in (
            self.bm25.scores(documents, query),
            self.embedding.similarities(documents, query),
        ):
            for position, place in enumerate(_places(found)):
                if place is not None:
                    fused[position] += 1.0 / (self.k + place)
        return fused


def _places(scores: Sequence[float]) -> list[float | None]:
    """Each score's rank among ``scores`` (1 = best; equal scores share the mean of their
    places), None where the score is not positive."""
    first: dict[float, int] = {}
    last: dict[float, int] = {}
    for place, value in enumerate(sorted(scores, reverse=True), start=1):
        first.setdefault(value, place)
        last[value] = place
    return [(first[value] + last[value]) / 2 if value > 0 else None for value in scores]


def retriever_named(name: str) -> Retriever:
    """A new retriever by name: ``"bm25"``, ``"embedding"`` or ``"hybrid"`` (:data:`RETRIEVERS`).

    Raises :class:`ctxflow.errors.PolicyError` for another name and
    :class:`EmbeddingsUnavailable` for the last two without the extra.
    """
    if name == "bm25":
        return BM25Retriever(cache_size=16)
    if name == "embedding":
        return EmbeddingRetriever()
    if name == "hybrid":
        return HybridRetriever(bm25=BM25Retriever(cache_size=16))
    raise PolicyError(
        f"a retriever must be one of {', '.join(RETRIEVERS)} (got {name!r})",
        rule="retriever_name",
        name=name,
    )
