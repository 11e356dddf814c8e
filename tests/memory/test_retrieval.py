"""Retrieval by relevance: tokenising, BM25 scores, ranking and choosing memory items (and, on
the planted set, the embedding and hybrid retrievers: tests/memory/test_embedding.py)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.errors import CtxflowError, PolicyError
from ctxflow.layers import Fact
from ctxflow.memory import EmbeddingRetriever, HybridRetriever
from ctxflow.memory._choosing import relevance_chooser
from ctxflow.memory._retrieval import (
    IMPORTANCE_WEIGHT,
    RECENCY_WEIGHT,
    RELEVANCE_WEIGHT,
    BM25Retriever,
    Ranked,
    Retriever,
    choose,
    rank,
    tokenize,
)

FACTS = [
    "The staging database host is db-stg-07.internal",
    "The production database host is db-prd-02.internal",
    "The staging cache host is cache-stg-01.internal",
    "Deploys to staging are allowed on Tuesdays",
    "The user prefers short answers",
]


class _Fixed:
    """A retriever that returns the scores it was given."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)

    def scores(self, documents: Sequence[str], query: str) -> list[float]:
        return list(self.values)


# -- tokenize ----------------------------------------------------------------


def test_tokenize_lowercases_splits_drops_stop_words_and_stems() -> None:
    """Words are lower-cased, split on non-alphanumerics, stop words dropped and stemmed."""
    assert tokenize("Which host serves the Staging-DB?") == ["host", "serv", "stage", "db"]


def test_tokenize_matches_inflections_of_one_word() -> None:
    """Inflected and derived forms share one stem, so paraphrases match."""
    stems = {tokenize(word)[0] for word in ["deploys", "deployment", "deployed", "deploying"]}
    assert stems == {"deploy"}


def test_tokenize_keeps_numbers_and_non_ascii_letters() -> None:
    """Numbers and letters outside ASCII are terms; underscores and punctuation split."""
    assert tokenize("port_5432, café") == ["port", "5432", "café"]


def test_tokenize_of_empty_or_stop_word_text_is_empty() -> None:
    """Text with no content words has no terms."""
    assert tokenize("") == []
    assert tokenize("  ... which of the ? ") == []


# -- BM25Retriever -----------------------------------------------------------


def test_bm25_retriever_is_a_retriever() -> None:
    """The BM25 retriever satisfies the Retriever protocol."""
    assert isinstance(BM25Retriever(), Retriever)


def test_bm25_scores_the_matching_document_highest() -> None:
    """The document sharing the most rare terms with the query scores highest."""
    scores = BM25Retriever().scores(FACTS, "Which host runs the staging database?")
    assert len(scores) == len(FACTS)
    assert max(range(len(FACTS)), key=scores.__getitem__) == 0
    assert scores[4] == 0.0


def test_bm25_matches_a_stemmed_paraphrase() -> None:
    """A query word matches another inflection of it in a document."""
    scores = BM25Retriever().scores(FACTS, "When can we deploy?")
    assert scores[3] > 0
    assert [score for i, score in enumerate(scores) if i != 3] == [0.0] * 4


def test_bm25_scores_are_deterministic_and_equal_for_duplicates() -> None:
    """The same input scores the same on a new retriever; duplicate documents score equally."""
    documents = [*FACTS, FACTS[0]]
    first = BM25Retriever().scores(documents, "staging database host")
    second = BM25Retriever().scores(documents, "staging database host")
    assert first == second
    assert first[0] == first[-1] > 0


@pytest.mark.parametrize(
    ("documents", "query", "expected"),
    [
        ([], "staging", []),
        ([], "", []),
        (FACTS, "", [0.0] * len(FACTS)),
        (FACTS, "the of which", [0.0] * len(FACTS)),
        (FACTS, "kubernetes", [0.0] * len(FACTS)),
        (["", "", "..."], "staging", [0.0, 0.0, 0.0]),
        (["", "staging host"], "", [0.0, 0.0]),
    ],
)
def test_bm25_edge_cases_score_zero(
    documents: list[str], query: str, expected: list[float]
) -> None:
    """No documents give no scores; an empty query, no shared term or empty documents give zeros."""
    assert BM25Retriever().scores(documents, query) == expected


def test_bm25_empty_document_beside_others_scores_zero() -> None:
    """An empty document among others scores zero while the others are scored."""
    scores = BM25Retriever().scores(["", "staging host", "production host"], "staging host")
    assert scores[0] == 0.0
    assert scores[1] > scores[2] > 0


_WORDS = [
    "staging",
    "database",
    "host",
    "deploy",
    "deployed",
    "port",
    "the",
    "of",
    "rollback",
    "cache",
    "tests",
    "module",
    "window",
    "budget",
    "x1",
    "Ünïcödé",
    "...",
]


@settings(max_examples=60, deadline=None)
@given(
    documents=st.lists(
        st.lists(st.sampled_from(_WORDS), max_size=25).map(" ".join), min_size=1, max_size=60
    ),
    query=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=8).map(" ".join),
    k1=st.sampled_from([0.9, 1.2, 1.5, 2.0]),
    b=st.sampled_from([0.0, 0.4, 0.75, 1.0]),
)
def test_bm25_scores_are_bm25s_lucene_scores(
    documents: list[str], query: str, k1: float, b: float
) -> None:
    """The scores are those ``bm25s``'s ``lucene`` method gives the same terms (its
    float32 arithmetic agrees to about 1e-6), a repeated query term counting again."""
    import bm25s  # type: ignore[import-untyped]  # a dev dependency: the reference

    ours = BM25Retriever(k1=k1, b=b).scores(documents, query)
    corpus = [tokenize(document) for document in documents]
    if not any(corpus):
        assert ours == [0.0] * len(documents)
        return
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.index(corpus, create_empty_token=False, show_progress=False)
    ids = [model.vocab_dict[t] for t in tokenize(query) if t in model.vocab_dict]
    expected = model.get_scores_from_ids(ids).tolist() if ids else [0.0] * len(documents)
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_bm25_index_cache_is_a_bounded_lru() -> None:
    """Indexes are reused for the same documents and the least recently used is dropped."""
    retriever = BM25Retriever(cache_size=2)
    first, second, third = ["a staging host"], ["b staging host"], ["c staging host"]
    retriever.scores(first, "host")
    cached = retriever._indexes[tuple(first)]
    retriever.scores(first, "staging")
    assert retriever._indexes[tuple(first)] is cached
    retriever.scores(second, "host")
    retriever.scores(first, "host")
    retriever.scores(third, "host")
    assert list(retriever._indexes) == [tuple(first), tuple(third)]


def test_bm25_index_makes_postings_only_for_the_terms_queries_ask() -> None:
    """An index holds no posting until a query asks for a term; each query adds its own
    terms' postings (None for a term no document holds), and the scores do not depend on
    which postings an earlier query made."""
    retriever = BM25Retriever()
    documents = [*FACTS, "staging staging host"]
    index = retriever._index(tuple(documents))
    assert index.postings == {}
    first = retriever.scores(documents, "staging host")
    assert set(index.postings) == set(tokenize("staging host"))
    retriever.scores(documents, "kubernetes deploys")
    assert set(index.postings) == set(tokenize("staging host kubernetes deploys"))
    assert index.postings["kubernet"] is None
    assert retriever._indexes[tuple(documents)] is index
    asked_first = BM25Retriever()
    asked_first.scores(documents, "kubernetes deploys database the")
    assert asked_first.scores(documents, "staging host") == first


@pytest.mark.parametrize(
    "scores",
    [[1.0, float("nan"), 0.0], [1.0, "high", 0.0], [1.0, None, 0.0], [float("-inf"), 1.0, 0.0]],
)
def test_rank_refuses_a_retriever_score_that_is_not_a_finite_number(scores: list[object]) -> None:
    """A retriever's score that is not a finite number is a policy error naming it."""
    with pytest.raises(PolicyError) as raised:
        rank(["a", "b", "c"], "a", retriever=_Fixed(scores))  # type: ignore[arg-type]
    assert raised.value.rule == "retriever_scores"
    assert repr(scores[0] if scores[0] != 1.0 else scores[1]) in raised.value.message


def test_rank_takes_huge_finite_scores_whose_sum_overflows() -> None:
    """Scores that are each finite are taken even when their sum is not."""
    ranked = rank(["a", "b", "c"], "a", retriever=_Fixed([1e308, 1e308, 0.0]))
    assert [item.relevance for item in ranked] == [1.0, 1.0, 0.0]


def test_bm25_retriever_is_safe_to_share_between_threads() -> None:
    """Threads scoring through one retriever all get the single-threaded answer."""
    retriever = BM25Retriever(cache_size=1)
    corpora = [[f"{fact} variant {n}" for fact in FACTS] for n in range(4)]
    expected = [BM25Retriever().scores(corpus, "staging host deploy") for corpus in corpora]
    failures: list[int] = []

    def work(n: int) -> None:
        for _ in range(20):
            if retriever.scores(corpora[n], "staging host deploy") != expected[n]:
                failures.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.parametrize(
    "arguments", [{"k1": 0.0}, {"k1": float("nan")}, {"b": 1.5}, {"cache_size": 0}]
)
def test_bm25_rejects_unusable_parameters(arguments: dict[str, float]) -> None:
    """Non-positive k1, b outside [0, 1] or an empty cache are policy errors."""
    with pytest.raises(PolicyError):
        BM25Retriever(**arguments)  # type: ignore[arg-type]


# -- rank --------------------------------------------------------------------


def test_rank_puts_the_relevant_fact_first_and_explains_why() -> None:
    """The best match comes first, with relevance 1.0 and the matched query words in its reason."""
    ranked = rank(FACTS, "Which host serves the staging database?")
    # "database" is in fewer facts than "staging", so it weighs more.
    assert [item.index for item in ranked][:3] == [0, 1, 2]
    best = ranked[0]
    assert best.relevance == 1.0
    assert best.score == pytest.approx(RELEVANCE_WEIGHT)
    assert best.reason == "relevance 1.00 (host, staging, database)"
    assert sorted(item.index for item in ranked) == list(range(len(FACTS)))


def test_rank_reason_names_importance_and_recency_when_given() -> None:
    """The reason shows importance and recency when they are part of the score."""
    ranked = rank(
        FACTS, "deployment on staging", importance=[0.5] * 5, recency=[0.0, 0.2, 0.4, 0.9, 1.0]
    )
    assert ranked[0].index == 3
    assert ranked[0].reason == (
        "relevance 1.00 (deployment, staging), importance 0.50, recency 0.90"
    )
    unmatched = next(item for item in ranked if item.index == 4)
    assert unmatched.reason == "relevance 0.00, importance 0.50, recency 1.00"


def test_rank_score_is_the_documented_weighted_sum() -> None:
    """Score = relevance, importance and recency weighted by the module's constants."""
    ranked = rank(
        ["a", "b", "c"],
        "q",
        importance=[0.2, 0.4, 1.0],
        recency=[1.0, 0.5, 0.0],
        retriever=_Fixed([4.0, 2.0, -1.0]),
    )
    by_index = {item.index: item for item in ranked}
    assert by_index[0].relevance == 1.0
    assert by_index[1].relevance == 0.5
    assert by_index[2].relevance == 0.0
    for position, weight, fresh in [(0, 0.2, 1.0), (1, 0.4, 0.5), (2, 1.0, 0.0)]:
        expected = (
            RELEVANCE_WEIGHT * by_index[position].relevance
            + IMPORTANCE_WEIGHT * weight
            + RECENCY_WEIGHT * fresh
        )
        assert by_index[position].score == pytest.approx(expected)
    assert RELEVANCE_WEIGHT > IMPORTANCE_WEIGHT + RECENCY_WEIGHT
    assert IMPORTANCE_WEIGHT > RECENCY_WEIGHT


def test_rank_relevance_dominates_importance_and_recency() -> None:
    """A fully relevant item outranks an unrelated one that is most important and newest."""
    ranked = rank(
        ["staging host is db-7", "user likes tea"],
        "staging host",
        importance=[0.0, 1.0],
        recency=[0.0, 1.0],
    )
    assert [item.index for item in ranked] == [0, 1]


def test_rank_with_empty_query_orders_by_importance_then_recency() -> None:
    """Without query terms, importance leads, recency breaks its ties, then later position."""
    ranked = rank(
        ["a fact", "b fact", "c fact", "d fact"],
        "",
        importance=[0.5, 0.9, 0.5, 0.5],
        recency=[0.3, 0.1, 0.8, 0.3],
    )
    assert [item.index for item in ranked] == [1, 2, 3, 0]
    assert all(item.relevance == 0.0 for item in ranked)


def test_rank_ties_go_to_the_newer_then_the_later_item() -> None:
    """Equal scores are ordered by recency, then by larger index."""
    texts = ["staging host"] * 4
    assert [item.index for item in rank(texts, "staging")] == [3, 2, 1, 0]
    # 0.2 * 0.5 == 0.1 * 1.0 exactly, so items 0 and 1 tie on score.
    ranked = rank(texts, "staging", importance=[0.5, 0.0, 0.5, 0.0], recency=[0.0, 1.0, 0.0, 1.0])
    assert ranked[0].score == ranked[3].score
    assert [item.index for item in ranked] == [3, 1, 2, 0]


def test_rank_of_nothing_is_empty() -> None:
    """Ranking no texts gives an empty list."""
    assert rank([], "staging") == []
    assert rank([], "", importance=[], recency=[]) == []


def test_rank_uses_the_given_retriever() -> None:
    """A custom retriever's scores decide the order."""
    ranked = rank(["x", "y", "z"], "anything", retriever=_Fixed([0.1, 0.3, 0.2]))
    assert [item.index for item in ranked] == [1, 2, 0]
    assert ranked[0].relevance == 1.0


@pytest.mark.parametrize(
    "arguments",
    [
        {"importance": [0.5]},
        {"recency": [0.5, 0.5, 0.5, 0.5]},
        {"importance": [0.5, 1.5, 0.5]},
        {"recency": [0.5, -0.1, 0.5]},
        {"importance": [0.5, float("nan"), 0.5]},
        {"importance": [True, 0.5, 0.5]},
        {"retriever": _Fixed([1.0, 2.0])},
        {"retriever": _Fixed([1.0, float("inf"), 0.0])},
    ],
)
def test_rank_rejects_mismatched_or_out_of_range_inputs(arguments: dict[str, object]) -> None:
    """Lengths that differ from the texts, values outside [0, 1] or bad scores are policy errors."""
    with pytest.raises(PolicyError) as raised:
        rank(["a", "b", "c"], "a", **arguments)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError)
    assert raised.value.rule


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([*FACTS, "", "staging", "host host host"]), max_size=12),
    st.sampled_from(["", "staging host", "deploys", "database production", "tea"]),
    st.data(),
)
def test_rank_is_a_sorted_permutation(texts: list[str], query: str, data: st.DataObject) -> None:
    """Every text appears once, scores never increase, and relevance stays in [0, 1]."""
    unit = st.floats(min_value=0, max_value=1)
    importance = data.draw(st.lists(unit, min_size=len(texts), max_size=len(texts)))
    recency = data.draw(st.lists(unit, min_size=len(texts), max_size=len(texts)))
    ranked = rank(texts, query, importance=importance, recency=recency)
    assert sorted(item.index for item in ranked) == list(range(len(texts)))
    assert all(a.score >= b.score for a, b in itertools.pairwise(ranked))
    assert all(0.0 <= item.relevance <= 1.0 for item in ranked)
    assert rank(texts, query, importance=importance, recency=recency) == ranked


# -- choose ------------------------------------------------------------------


def test_choose_takes_the_best_that_fit_in_original_order() -> None:
    """The best-ranked items that fit are returned, ordered by their position."""
    chosen = choose(FACTS, "staging host", sizes=[10, 10, 10, 10, 10], allowance=25)
    assert [item.index for item in chosen] == [0, 2]
    assert all(isinstance(item, Ranked) for item in chosen)


def test_choose_skips_an_item_too_large_and_keeps_filling() -> None:
    """An item that does not fit what is left is skipped; smaller, lower-ranked ones still go in."""
    query = "staging database host"
    assert [item.index for item in rank(FACTS, query)] == [0, 1, 2, 3, 4]
    chosen = choose(FACTS, query, sizes=[30, 10, 25, 5, 5], allowance=30)
    assert [item.index for item in chosen] == [0]
    chosen = choose(FACTS, query, sizes=[31, 10, 25, 5, 5], allowance=30)
    assert [item.index for item in chosen] == [1, 3, 4]


def test_choose_edge_cases() -> None:
    """No texts, a zero allowance or zero-sized items behave plainly."""
    assert choose([], "x", sizes=[], allowance=10) == []
    assert choose(FACTS, "staging", sizes=[1] * 5, allowance=0) == []
    assert [item.index for item in choose(FACTS, "", sizes=[0] * 5, allowance=0)] == [
        0,
        1,
        2,
        3,
        4,
    ]


@pytest.mark.parametrize(
    ("sizes", "allowance"),
    [([1, 2], 10), ([1, -1, 1, 1, 1], 10), ([1, 1.5, 1, 1, 1], 10), ([1] * 5, -1), ([1] * 5, True)],
)
def test_choose_rejects_bad_sizes_and_allowance(sizes: list[int], allowance: int) -> None:
    """Sizes must be one non-negative integer per text and the allowance a non-negative integer."""
    with pytest.raises(CtxflowError):
        choose(FACTS, "staging", sizes=sizes, allowance=allowance)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(FACTS), max_size=10).flatmap(
        lambda texts: st.tuples(
            st.just(texts),
            st.lists(
                st.integers(min_value=0, max_value=20), min_size=len(texts), max_size=len(texts)
            ),
        )
    ),
    st.integers(min_value=0, max_value=60),
)
def test_choose_never_exceeds_the_allowance(
    texts_and_sizes: tuple[list[str], list[int]], allowance: int
) -> None:
    """The chosen sizes sum to at most the allowance, and nothing left out would still fit."""
    texts, sizes = texts_and_sizes
    chosen = choose(texts, "staging host", sizes=sizes, allowance=allowance)
    used = sum(sizes[item.index] for item in chosen)
    assert used <= allowance
    assert [item.index for item in chosen] == sorted({item.index for item in chosen})
    taken = {item.index for item in chosen}
    assert all(sizes[i] > allowance - used for i in range(len(texts)) if i not in taken)


# -- acceptance: paraphrased questions over 500 stored facts ------------------

_ENVIRONMENTS = [
    "staging",
    "production",
    "development",
    "qa",
    "sandbox",
    "canary",
    "demo",
    "preview",
]
_SHORT = {
    "staging": "stg",
    "production": "prd",
    "development": "dev",
    "qa": "qa",
    "sandbox": "sbx",
    "canary": "cny",
    "demo": "dmo",
    "preview": "pvw",
}
_SERVICES = [
    "billing",
    "search",
    "auth",
    "payments",
    "inventory",
    "notifications",
    "analytics",
    "gateway",
    "scheduler",
    "reporting",
]
_PEOPLE = [
    "Priya Raman",
    "Tomas Novak",
    "Amara Okafor",
    "Lena Fischer",
    "Kenji Watanabe",
    "Sofia Alvarez",
    "Omar Haddad",
    "Mei Lin",
]
_REGIONS = ["eu-west-1", "us-east-2", "ap-south-1", "eu-central-1", "us-west-2", "sa-east-1"]
_DAYS = ["Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays"]

# Per attribute, the phrasings a stored fact may have — "key: value" lines as
# ctxflow renders facts, and sentences — each with questions that paraphrase it
# the way a user asks later: other function words, word order and inflection, a
# synonym here and there ("DB", "box", "machine"), words of their own.
_PHRASINGS: dict[str, list[tuple[str, list[str]]]] = {
    "host": [
        (
            "{env} {svc} database host: {value}",
            [
                "Which host runs the {svc} database in {env}?",
                "What's the host for the {env} {svc} DB?",
                "{svc} database on {env}: which host was it again?",
                "Where does the {svc} database live in {env}?",
            ],
        ),
        (
            "The {svc} database for {env} is hosted on {value}.",
            [
                "Where is the {env} {svc} database hosted?",
                "On which machine is {svc}'s {env} database hosted?",
                "Which box hosts the {svc} DB in {env}?",
            ],
        ),
        (
            "{value} is the host of the {env} {svc} database.",
            ["Which host is the {env} {svc} database on?", "{env} {svc} DB: what host?"],
        ),
    ],
    "port": [
        (
            "{env} {svc} API port: {value}",
            [
                "Which port does the {svc} API use in {env}?",
                "What port is {env} {svc} on?",
                "{svc} in {env}, API port number?",
                "Which socket does the {env} {svc} API take?",
            ],
        ),
        (
            "The {env} {svc} API listens on port {value}.",
            [
                "Which port does {svc} listen on in {env}?",
                "What port is the {env} {svc} API listening on?",
            ],
        ),
        (
            "Port {value} is where the {svc} API accepts connections in {env}.",
            [
                "Which port accepts {svc} connections on {env}?",
                "What port should I connect to for {env} {svc}?",
            ],
        ),
    ],
    "owner": [
        (
            "{env} {svc} owner: {value}",
            [
                "Who is the owner of {svc} in {env}?",
                "Who's the {svc} owner for {env}?",
                "Who is responsible for {svc} in {env}?",
            ],
        ),
        (
            "The {env} {svc} service is owned by {value}.",
            ["Who owns the {svc} service in {env}?", "Which person owns {env} {svc}?"],
        ),
        (
            "{value} owns the {svc} service in {env}.",
            ["Who owns {svc} on {env}?", "In {env}, who owns the {svc} service?"],
        ),
    ],
    "region": [
        (
            "{env} {svc} region: {value}",
            [
                "Which region is {svc} in for {env}?",
                "What region does the {env} {svc} deployment use?",
                "Which datacenter is {env} {svc} in?",
            ],
        ),
        (
            "The {env} {svc} cluster runs in region {value}.",
            [
                "Which region does the {env} {svc} cluster run in?",
                "In what region is {svc}'s {env} cluster running?",
            ],
        ),
        (
            "{svc} in {env} is deployed to the {value} region.",
            [
                "Which region is {env} {svc} deployed in?",
                "Where, region-wise, do we deploy {svc} for {env}?",
            ],
        ),
    ],
    "version": [
        (
            "{env} {svc} version: {value}",
            [
                "What version of {svc} is on {env}?",
                "Which {svc} version does {env} have?",
                "Which release of {svc} is live on {env}?",
            ],
        ),
        (
            "{svc} version running in {env}: {value}",
            [
                "What version of {svc} is running in {env}?",
                "Which {svc} version runs on {env} now?",
            ],
        ),
        (
            "{env} runs {svc} version {value}.",
            ["Which version of {svc} does {env} run?", "What {svc} version is {env} on?"],
        ),
    ],
    "backup": [
        (
            "{env} {svc} backup schedule: {value}",
            [
                "When are {svc} backups scheduled in {env}?",
                "What's the backup schedule for {env} {svc}?",
                "When is {svc} on {env} backed up?",
            ],
        ),
        (
            "Backups of the {env} {svc} database run {value}.",
            [
                "When do the {env} {svc} database backups run?",
                "At what time does the {svc} backup run on {env}?",
            ],
        ),
        (
            "{svc} on {env}: the backup job starts {value}.",
            [
                "When does the {svc} backup job start in {env}?",
                "What time do {env} {svc} backups start?",
            ],
        ),
    ],
    "window": [
        (
            "{env} {svc} deploy window: {value}",
            [
                "When is the {svc} deployment window on {env}?",
                "When can I deploy {svc} to {env}?",
                "When may I ship {svc} to {env}?",
            ],
        ),
        (
            "Deploys of {svc} to {env} are allowed {value}.",
            [
                "When are {svc} deployments to {env} allowed?",
                "When am I allowed to deploy {svc} on {env}?",
            ],
        ),
        (
            "Release window for {svc} in {env}: {value}.",
            [
                "When is the {env} {svc} release window?",
                "What's the release window of {svc} for {env}?",
            ],
        ),
    ],
}


def _value(attribute: str, env: str, svc: str, rng: random.Random) -> str:
    if attribute == "host":
        return f"{svc[:4]}-{_SHORT[env]}-{rng.randint(1, 40):02d}.internal"
    if attribute == "port":
        return str(rng.randint(1024, 65000))
    if attribute == "owner":
        return rng.choice(_PEOPLE)
    if attribute == "region":
        return rng.choice(_REGIONS)
    if attribute == "version":
        return f"{rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 30)}"
    if attribute == "backup":
        return f"nightly at {rng.randint(0, 5):02d}:{rng.choice(['00', '30'])} UTC"
    return f"on {rng.choice(_DAYS)} between {rng.randint(8, 15)}:00 and {rng.randint(16, 18)}:00"


def _planted_set(seed: int, *, cross: bool = False) -> tuple[list[str], list[tuple[str, int]]]:
    """500 stored facts, and paraphrased questions for 100 of them with the fact's index.

    Every fact is one (environment, service, attribute) of a full grid, so each
    planted fact has distractors that differ only in environment, in service or
    in attribute. Each planted fact is asked in every paraphrase of its own
    phrasing, or with ``cross`` in every paraphrase of its attribute's other
    phrasings.
    """
    rng = random.Random(seed)
    triples = [
        (env, svc, attribute)
        for env in _ENVIRONMENTS
        for svc in _SERVICES
        for attribute in _PHRASINGS
    ]
    stored = rng.sample(triples, 500)
    facts: list[str] = []
    phrasing: list[int] = []
    for env, svc, attribute in stored:
        chosen = rng.randrange(len(_PHRASINGS[attribute]))
        template = _PHRASINGS[attribute][chosen][0]
        text = template.format(env=env, svc=svc, value=_value(attribute, env, svc, rng))
        facts.append(text[0].upper() + text[1:])
        phrasing.append(chosen)
    planted: list[tuple[str, int]] = []
    for position in sorted(rng.sample(range(500), 100)):
        env, svc, attribute = stored[position]
        for number, (_, questions) in enumerate(_PHRASINGS[attribute]):
            if (number != phrasing[position]) is cross:
                planted += [(question.format(env=env, svc=svc), position) for question in questions]
    return facts, planted


def _top_five_share(
    facts: list[str],
    questions: list[tuple[str, int]],
    importance: list[float] | None = None,
    recency: list[float] | None = None,
    retriever: Retriever | None = None,
) -> float:
    hits = 0
    for question, position in questions:
        top = rank(facts, question, importance=importance, recency=recency, retriever=retriever)[:5]
        hits += position in {item.index for item in top}
    return hits / len(questions)


def _weights(seed: int, count: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed + 1)
    importance = [rng.choice([0.3, 0.5, 0.5, 0.7, 0.9]) for _ in range(count)]
    return importance, [rng.random() for _ in range(count)]


def test_planted_set_shares_keywords_between_planted_facts_and_distractors() -> None:
    """Each planted fact has distractors naming the same environment and service, or attribute."""
    facts, questions = _planted_set(7)
    assert len(facts) == len(set(facts)) == 500
    assert len({position for _, position in questions}) == 100
    assert len(questions) > 200
    for question, position in questions[:30]:
        shared = set(tokenize(question)) & set(tokenize(facts[position]))
        assert shared
        assert sum(1 for fact in facts if shared & set(tokenize(fact))) > 20


@pytest.mark.parametrize("seed", [7, 2026])
def test_paraphrased_questions_find_their_fact_in_the_top_five(seed: int) -> None:
    """Over 500 facts, paraphrases of 100 planted ones find them in rank's top 5 ≥ 95%."""
    facts, questions = _planted_set(seed)
    share = _top_five_share(facts, questions)
    assert share >= 0.95, f"top-5 share on relevance alone {share:.2f} < 0.95"
    importance, recency = _weights(seed, len(facts))
    share = _top_five_share(facts, questions, importance, recency)
    assert share >= 0.95, f"top-5 share with importance and recency {share:.2f} < 0.95"


@pytest.mark.parametrize("seed", [7, 2026])
def test_questions_worded_like_a_sibling_phrasing_stay_mostly_in_the_top_five(seed: int) -> None:
    """A question worded like another phrasing of its attribute still finds its fact ≥ 60%.

    This is the hard case for any lexical ranking: such a question matches the
    fact's siblings in other environments that share that phrasing as well as
    it matches the fact, so only the environment's rarity tells them apart.
    """
    facts, questions = _planted_set(seed, cross=True)
    share = _top_five_share(facts, questions)
    assert share >= 0.6, f"top-5 share on relevance alone {share:.2f} < 0.60"


@pytest.fixture(scope="module")
def meaning_retrievers() -> dict[str, Retriever]:
    """The embedding retriever and the hybrid on it (the ``embeddings`` extra; one model load)."""
    embedding = EmbeddingRetriever()
    return {"embedding": embedding, "hybrid": HybridRetriever(embedding=embedding)}


# The least top-5 share each retriever must reach per seed: (paraphrases, with importance
# and recency, another phrasing, another phrasing with importance and recency). Measured on
# seeds 7 and 2026: embedding 94.8/95.1, 94.4/92.6, 82.3/79.6, 80.1/76.2 %; hybrid
# 99.6/99.6, 98.8/98.8, 84.8/80.8, 83.8/81.4 % (BM25: 95.2/97.5, 95.6/97.1, 66.7/70.3,
# 65.1/70.3 %); each floor is a few points under the lower seed.
_MEANING_FLOORS = {
    "embedding": (0.92, 0.90, 0.75, 0.72),
    "hybrid": (0.97, 0.96, 0.77, 0.77),
}


@pytest.mark.parametrize("seed", [7, 2026])
@pytest.mark.parametrize("name", ["embedding", "hybrid"])
def test_retrieval_by_meaning_on_the_planted_set(
    meaning_retrievers: dict[str, Retriever], name: str, seed: int
) -> None:
    """Embedding and hybrid retrieval reach their measured top-5 shares on both planted sets;
    the hybrid beats BM25's on the questions worded like another phrasing."""
    retriever = meaning_retrievers[name]
    facts, questions = _planted_set(seed)
    crossed, crossed_questions = _planted_set(seed, cross=True)
    importance, recency = _weights(seed, len(facts))
    shares = (
        _top_five_share(facts, questions, retriever=retriever),
        _top_five_share(facts, questions, importance, recency, retriever=retriever),
        _top_five_share(crossed, crossed_questions, retriever=retriever),
        _top_five_share(crossed, crossed_questions, importance, recency, retriever=retriever),
    )
    floors = _MEANING_FLOORS[name]
    assert all(share >= floor for share, floor in zip(shares, floors, strict=True)), (
        f"{name} top-5 shares {[f'{share:.3f}' for share in shares]} under {floors}"
    )
    if name == "hybrid":
        assert shares[2] > _top_five_share(crossed, crossed_questions) + 0.05


@pytest.mark.parametrize("seed", [7, 2026])
def test_choose_with_room_for_twenty_items_includes_the_fact(seed: int) -> None:
    """With an allowance that holds about 20 of 500 facts, choose includes the asked one ≥ 95%."""
    facts, questions = _planted_set(seed)
    importance, recency = _weights(seed, len(facts))
    sizes = [len(fact) // 4 + 1 for fact in facts]
    allowance = 20 * round(sum(sizes) / len(sizes))
    hits = 0
    for question, position in questions:
        chosen = choose(
            facts,
            question,
            sizes=sizes,
            allowance=allowance,
            importance=importance,
            recency=recency,
        )
        assert sum(sizes[item.index] for item in chosen) <= allowance
        assert len(chosen) >= 10
        hits += position in {item.index for item in chosen}
    share = hits / len(questions)
    assert share >= 0.95, f"share of questions whose fact was chosen {share:.2f} < 0.95"


class _CountingRetriever(BM25Retriever):
    """A real BM25 retriever that counts the rankings it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def scores(self, documents: Sequence[str], query: str) -> list[float]:
        self.asked += 1
        return super().scores(documents, query)


def test_the_same_question_is_answered_once() -> None:
    """A chooser asked the same question again (settled memory, same allowance) answers from
    its cache; another allowance or another item ranks again, with the same result as new."""
    facts = [
        Fact(key=f"k{n}", value=f"port {8000 + n} serves the {w} api", step=n)
        for n, w in enumerate(["billing", "search", "auth", "upload", "billing", "ledger"])
    ]
    lines = [f.value for f in facts]
    sizes = [10] * len(facts)
    retriever = _CountingRetriever()
    pick = relevance_chooser("billing api", stable_query="billing", retriever=retriever)
    first = pick("semantic", facts, lines, sizes, 30, settled=True)
    again = pick("semantic", facts, lines, sizes, 30, settled=True)
    assert first == again and retriever.asked == 1
    wider = pick("semantic", facts, lines, sizes, 40, settled=True)
    assert retriever.asked == 2 and len(wider) == 4
    fresh = relevance_chooser("billing api", stable_query="billing", retriever=BM25Retriever())
    assert fresh("semantic", facts, lines, sizes, 30, settled=True) == first
    assert {lines[k] for k, _ in first} >= {lines[0], lines[4]}


def test_an_index_gives_the_collector_nothing_to_walk_per_posting() -> None:
    """Postings are tuples of numbers, which the collector stops tracking within its
    first passes: an index kept across windows brings no tracked objects to its
    oldest generation (thousands per index brought full collections on)."""
    import gc

    retriever = BM25Retriever()
    documents = [f"fact {n}: deploy module {n} to the staging host" for n in range(200)]
    retriever.scores(documents, " ".join(documents))  # every term gets its posting
    index = retriever._indexes[tuple(documents)]
    # A pass untracks a tuple that holds nothing tracked; a tuple whose inner tuples
    # it reached later in the same pass goes at the next one.
    gc.collect()
    gc.collect()
    entries = list(index.postings.values())
    assert len(entries) > 200
    assert not any(gc.is_tracked(entry) for entry in entries)
    assert not any(gc.is_tracked(part) for entry in entries for part in entry[1:])
