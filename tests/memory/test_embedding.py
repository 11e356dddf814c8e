"""Relevance by meaning: the WordLlama embedding retriever, its fusion with BM25, and the extra."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest

import ctxflow.memory._embedding as embedding_module
from ctxflow.engine import Engine
from ctxflow.errors import CtxflowError, PolicyError
from ctxflow.layers import Fact, LayeredState, SystemLayer
from ctxflow.memory import (
    RETRIEVERS,
    BM25Retriever,
    EmbeddingRetriever,
    EmbeddingsUnavailable,
    HybridRetriever,
    Retriever,
    relevance_chooser,
    retriever_named,
)
from ctxflow.memory._retrieval import choose, rank
from ctxflow.model import Message

# Each question shares almost no word with its fact: a paraphrase a word match misses.
FACTS = [
    "The staging database host is db-stg-07.internal",
    "Deploys to production are allowed on Tuesdays after the change review",
    "The user prefers short answers without bullet lists",
    "The billing service is owned by Priya Raman",
    "Nightly backups of the search index start at 02:00 UTC",
    "The CI pipeline caches pip wheels between jobs",
]
PARAPHRASES = [
    ("Which machine runs the DB for pre-production?", 0),
    ("When may we ship a release to prod?", 1),
    ("What format should responses take?", 2),
    ("Who is responsible for invoicing?", 3),
]


@pytest.fixture(scope="module")
def embedder() -> EmbeddingRetriever:
    """One embedding retriever for the module (the model loads once per process anyway)."""
    return EmbeddingRetriever()


class _CountingEmbedder(EmbeddingRetriever):
    """A real embedding retriever that counts the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.embedded.extend(texts)
        return super().embed(texts)


def test_embedding_and_hybrid_retrievers_are_retrievers(embedder: EmbeddingRetriever) -> None:
    """Both satisfy the Retriever protocol and name their score source."""
    hybrid = HybridRetriever(embedding=embedder)
    assert isinstance(embedder, Retriever) and isinstance(hybrid, Retriever)
    assert (embedder.source, hybrid.source) == ("embedding", "bm25+embedding")
    assert "cache_size=4096" in repr(embedder) and "k=10" in repr(hybrid)


@pytest.mark.parametrize(("question", "position"), PARAPHRASES)
def test_a_paraphrased_question_ranks_its_fact_first(
    embedder: EmbeddingRetriever, question: str, position: int
) -> None:
    """A question worded apart from its fact ranks that fact first by meaning."""
    assert rank(FACTS, question, retriever=embedder)[0].index == position
    assert rank(FACTS, question, retriever=HybridRetriever(embedding=embedder))[0].index == position


def test_word_matching_misses_these_paraphrases() -> None:
    """BM25 ranks another fact first for the paraphrases (what makes the test above meaningful)."""
    bm25 = BM25Retriever()
    missed = [
        q for q, position in PARAPHRASES if rank(FACTS, q, retriever=bm25)[0].index != position
    ]
    assert len(missed) == len(PARAPHRASES)


def test_similarities_are_cosines_and_scores_are_above_the_mean(
    embedder: EmbeddingRetriever,
) -> None:
    """An identical text has similarity 1; scores are the similarity above the list's mean."""
    similar = embedder.similarities(FACTS, FACTS[3])
    assert similar[3] == pytest.approx(1.0, abs=1e-5)
    assert all(-1.0 <= value <= 1.0 + 1e-6 for value in similar)
    mean = sum(similar) / len(similar)
    expected = [max(value - mean, 0.0) for value in similar]
    assert embedder.scores(FACTS, FACTS[3]) == pytest.approx(expected)
    assert min(embedder.scores(FACTS, FACTS[3])) == 0.0


def test_duplicates_score_equally_and_scores_are_deterministic(
    embedder: EmbeddingRetriever,
) -> None:
    """Equal texts score equally, and asking again gives the same scores."""
    documents = [FACTS[0], FACTS[3], FACTS[0]]
    for retriever in (embedder, HybridRetriever(embedding=embedder)):
        first = retriever.scores(documents, "who owns billing")
        assert first[0] == first[2]
        assert retriever.scores(documents, "who owns billing") == first


def test_the_cache_embeds_each_text_once() -> None:
    """Ranking the same memory again embeds only the new query; a changed item embeds only it."""
    counting = _CountingEmbedder()
    counting.scores(FACTS, "who owns billing")
    assert sorted(counting.embedded) == sorted([*FACTS, "who owns billing"])
    counting.embedded.clear()
    counting.scores(FACTS, "who owns billing")
    counting.scores(list(reversed(FACTS)), "when are backups")
    assert counting.embedded == ["when are backups"]
    changed = [*FACTS[:-1], "The CI pipeline caches npm packages between jobs"]
    counting.scores(changed, "who owns billing")
    assert counting.embedded == ["when are backups", changed[-1]]


def test_a_window_after_a_memory_change_embeds_only_the_changed_item() -> None:
    """Through relevance_chooser, memory items whose lines did not change are not embedded again."""
    counting = _CountingEmbedder()
    facts = [Fact(key=f"k{n}", value=text, step=n) for n, text in enumerate(FACTS)]
    lines = [f"{f.key}: {f.value}" for f in facts]
    pick = relevance_chooser("Who is responsible for invoicing?", retriever=counting)
    chosen = pick("semantic", facts, lines, [10] * len(facts), 20, settled=False)
    assert 3 in {index for index, _ in chosen}
    assert len(counting.embedded) == len(facts) + 1
    counting.embedded.clear()
    lines[0] = "k0: The staging database host is db-stg-08.internal"
    pick("semantic", facts, lines, [10] * len(facts), 20, settled=False)
    assert counting.embedded == [lines[0]]


def test_the_text_cache_is_bounded() -> None:
    """Past cache_size texts the least recently used embedding is dropped (and re-embedded)."""
    counting = _CountingEmbedder()
    counting.cache_size = 3
    counting.scores(FACTS[:2], "q")
    counting.scores(FACTS[2:4], "q")
    counting.embedded.clear()
    counting.scores([FACTS[1], FACTS[0]], "q")
    assert counting.embedded == [FACTS[1], FACTS[0]]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> list[str]:
    """Any socket connect or name lookup fails (and is recorded); HOME is an empty folder."""
    tried: list[str] = []

    def refuse(*args: object, **kwargs: object) -> Any:
        tried.append(repr(args[:2]))
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tried


def test_loading_and_ranking_never_touch_the_network(no_network: list[str]) -> None:
    """The model loads from the wheel's files and ranks with every connect refused."""
    embedding_module._model.cache_clear()
    retriever = EmbeddingRetriever()
    assert rank(FACTS, PARAPHRASES[3][0], retriever=retriever)[0].index == 3
    hybrid = HybridRetriever(embedding=retriever)
    assert rank(FACTS, PARAPHRASES[0][0], retriever=hybrid)[0].index == 0
    assert no_network == []


def test_without_the_extra_asking_for_it_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With wordllama not importable, each way to ask for embeddings names ctxflow[embeddings]."""
    embedding_module._model.cache_clear()
    for name in [name for name in sys.modules if name.split(".")[0] == "wordllama"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "wordllama", None)
    try:
        for make in (EmbeddingRetriever, HybridRetriever, lambda: retriever_named("embedding")):
            with pytest.raises(EmbeddingsUnavailable, match=r"ctxflow\[embeddings\]") as caught:
                make()
            assert isinstance(caught.value, CtxflowError) and isinstance(caught.value, ImportError)
            assert caught.value.rule == "embeddings_extra"
        assert isinstance(retriever_named("bm25"), BM25Retriever)
    finally:
        embedding_module._model.cache_clear()


def test_retriever_named_knows_three_names_and_refuses_others(
    embedder: EmbeddingRetriever,
) -> None:
    """bm25, embedding and hybrid make their retrievers; another name is a PolicyError."""
    assert RETRIEVERS == ("bm25", "embedding", "hybrid")
    assert isinstance(retriever_named("embedding"), EmbeddingRetriever)
    assert isinstance(retriever_named("hybrid"), HybridRetriever)
    with pytest.raises(PolicyError, match=r"one of bm25, embedding, hybrid \(got 'bert'\)"):
        retriever_named("bert")


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (lambda: EmbeddingRetriever(cache_size=0), "embedding_cache_size"),
        (lambda: EmbeddingRetriever(cache_size=True), "embedding_cache_size"),
        (lambda: HybridRetriever(k=0), "embedding_k"),
    ],
)
def test_unusable_parameters_are_refused(make: Any, rule: str) -> None:
    """A cache size or fusion constant that is not a positive integer is a PolicyError."""
    with pytest.raises(PolicyError) as caught:
        make()
    assert caught.value.rule == rule


def test_empty_memory_and_empty_queries(embedder: EmbeddingRetriever) -> None:
    """No documents: no scores; an empty query or empty texts score zero and rank by weight."""
    hybrid = HybridRetriever(embedding=embedder)
    for retriever in (embedder, hybrid):
        assert retriever.scores([], "anything") == []
        assert retriever.scores(FACTS, "") == [0.0] * len(FACTS)
        assert retriever.scores(["", "   "], "who owns billing") == [0.0, 0.0]
        assert rank([], "who owns billing", retriever=retriever) == []
        ranked = rank(FACTS[:3], "", importance=[0.2, 0.9, 0.5], retriever=retriever)
        assert [item.index for item in ranked] == [1, 2, 0]
        assert choose([], "q", sizes=[], allowance=10, retriever=retriever) == []
    assert embedder.similarities(["", FACTS[0]], "") == [0.0, 0.0]
    assert embedder.embed([]).shape == (0, 256)


def test_reasons_name_the_score_source(embedder: EmbeddingRetriever) -> None:
    """A reason says the relevance came from the embedding (no matched words) or the fusion."""
    question = "Who owns the billing service?"
    best = rank(FACTS, question, retriever=embedder)[0]
    assert best.reason == "relevance 1.00 by embedding"
    fused = rank(FACTS, question, retriever=HybridRetriever(embedding=embedder))[0]
    assert fused.reason == "relevance 1.00 by bm25+embedding (owns, billing, service)"


def test_one_retriever_is_safe_to_share_between_threads(embedder: EmbeddingRetriever) -> None:
    """Threads ranking through one hybrid retriever get the same answers as one thread."""
    hybrid = HybridRetriever(embedding=EmbeddingRetriever())
    expected = {q: hybrid.scores(FACTS, q) for q, _ in PARAPHRASES}
    hybrid = HybridRetriever(embedding=EmbeddingRetriever())
    found: list[bool] = []

    def work() -> None:
        for question, _ in PARAPHRASES * 3:
            found.append(hybrid.scores(FACTS, question) == expected[question])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found and all(found)


def test_the_engine_ranks_memory_with_the_retriever_it_is_given(
    embedder: EmbeddingRetriever,
) -> None:
    """Engine(retriever=...) chooses memory that does not fit by that retriever, and says so."""
    facts = [
        Fact(key=f"service-{k}", value=f"the {name} service listens on port {8000 + k}", step=k)
        for k, name in enumerate(["billing", "search", "auth", "mail", "queue"] * 60)
    ]
    facts.append(Fact(key="invoicing-owner", value=FACTS[3], step=0))
    engine = Engine(
        state=LayeredState(system=SystemLayer(prompt="Be careful.")).with_facts(facts),
        budget=4_000,
        retriever=embedder,
    )
    engine.add_message(Message.user("Who is responsible for invoicing?"))
    window = engine.window(phase="execution")
    reasons = window.report.memory_chosen["semantic"]
    assert len(reasons) < len(facts)
    assert all(" by embedding" in reason for reason in reasons)
    assert any(reason.startswith("invoicing-owner: relevance") for reason in reasons)
    with pytest.raises(PolicyError, match="'retriever' must be a Retriever"):
        Engine(retriever=object())  # type: ignore[arg-type]


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def test_importing_ctxflow_loads_neither_wordllama_nor_numpy() -> None:
    """``import ctxflow`` and ``ctxflow.memory`` leave wordllama and numpy unimported."""
    out = _python(
        "import sys, ctxflow, ctxflow.memory, ctxflow.engine\n"
        "print(sorted(n for n in ('numpy', 'wordllama') if n in sys.modules))"
    )
    assert out == "[]"


def test_making_a_retriever_leaves_the_root_logger_alone() -> None:
    """wordllama configures logging on import; the retriever puts the root logger back."""
    out = _python(
        "import logging\n"
        "from ctxflow.memory import EmbeddingRetriever\n"
        "EmbeddingRetriever().scores(['a fact'], 'a question')\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level)"
    )
    assert out == f"0 {logging.WARNING}"
