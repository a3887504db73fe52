"""The keyword side of retrieval: rare terms, the AND fallback for common words, filters, and
the term counts that tell them apart.

The chunks are written straight into an index version (their vectors play no part in keyword
search); `rare_term_rows` is set low so that a handful of rows makes a word common.
"""

import pytest

from flywheel.models import Chunk, ChunkTerm
from flywheel.selectors.retrieval import (
    RetrievalMode,
    RetrievalOptions,
    keyword_ranking,
    retrieve,
)
from flywheel.services import index_version_ensure_active
from tests.factories import ProjectFactory

UNIT_VECTOR = [1.0] + [0.0] * 383
RARE_TERM_ROWS = 3
HISTORY = "Offline sync keeps history for {n} days."
SCHEDULE = "Offline sync runs every {n} minutes."
# Rows holding one of the words of HISTORY each.
ONE_WORD_ROWS = [
    "Offline mode saves battery on trains.",
    "Sync conflicts are resolved by the latest edit.",
    "The history page lists every change.",
]


def chunks_write(index_version, texts: list[str], *, metadata: dict | None = None) -> list[int]:
    chunks = Chunk.objects.bulk_create(
        Chunk(
            project=index_version.project,
            index_version=index_version,
            position=position,
            text=text,
            metadata=metadata or {},
            content_hash=str(position),
            embedding=UNIT_VECTOR,
        )
        for position, text in enumerate(texts)
    )
    return [chunk.pk for chunk in chunks]


@pytest.fixture
def index_version(db):
    """ "offline", "sync" and "history" are each in more than RARE_TERM_ROWS rows, all three
    together in two."""
    version = index_version_ensure_active(project=ProjectFactory())
    chunks_write(
        version,
        [HISTORY.format(n=n) for n in range(2)] + [SCHEDULE.format(n=5)] + ONE_WORD_ROWS * 3,
    )
    return version


def ranked_texts(index_version, query: str, **options) -> list[str]:
    ranking = keyword_ranking(
        index_version_id=index_version.pk,
        query=query,
        limit=20,
        rare_term_rows=RARE_TERM_ROWS,
        **options,
    )
    texts = Chunk.objects.in_bulk([chunk_id for chunk_id, _ in ranking])
    return [texts[chunk_id].text for chunk_id, _ in ranking]


def test_a_rare_term_finds_its_row_however_many_rows_hold_the_common_words(index_version):
    # Written last: past the few rows read of each common word.
    (needle,) = chunks_write(
        index_version, ["Error E7731 means offline sync lost the licence server."]
    )

    ranking = keyword_ranking(
        index_version_id=index_version.pk,
        query="What does E7731 mean for offline sync?",
        limit=1,
        rare_term_rows=RARE_TERM_ROWS,
    )

    assert [chunk_id for chunk_id, _ in ranking] == [needle]
    assert ranking[0][1] > 0


def test_a_query_of_common_words_answers_with_the_rows_holding_them_all(index_version):
    texts = ranked_texts(index_version, "offline sync history")

    # The AND fallback: rows lacking a word (the schedule, the one-word rows) do not come.
    assert sorted(texts) == [HISTORY.format(n=0), HISTORY.format(n=1)]


def test_the_and_fallback_may_let_rows_lack_a_common_word_ranked_after(index_version):
    texts = ranked_texts(index_version, "offline sync history", fallback_may_lack=1)

    assert sorted(texts[:2]) == [HISTORY.format(n=0), HISTORY.format(n=1)]
    assert texts[2:] == [SCHEDULE.format(n=5)]


def term_counts(index_version, *lexemes: str) -> dict[str, int]:
    terms = ChunkTerm.objects.filter(index_version_id=index_version.pk, lexeme__in=lexemes)
    return {term.lexeme: term.chunks for term in terms}


def test_term_counts_follow_every_insert_update_and_delete(index_version):
    other = index_version_ensure_active(project=ProjectFactory())
    chunks_write(other, [HISTORY.format(n=9)])
    assert term_counts(index_version, "offlin", "sync", "histori", "run", "minut") == {
        "offlin": 6,
        "sync": 6,
        "histori": 5,
        "run": 1,
        "minut": 1,
    }
    assert term_counts(other, "offlin", "histori", "run") == {"offlin": 1, "histori": 1}

    Chunk.objects.filter(index_version=index_version, text=SCHEDULE.format(n=5)).update(
        text="Offline sync history is kept."
    )
    assert term_counts(index_version, "offlin", "histori", "run", "kept") == {
        "offlin": 6,
        "histori": 6,
        "kept": 1,
    }

    Chunk.objects.filter(index_version=index_version, text__startswith="Offline").delete()
    assert term_counts(index_version, "offlin", "sync", "histori", "kept") == {
        "sync": 3,
        "histori": 3,
    }
    assert term_counts(other, "offlin") == {"offlin": 1}


def test_queries_without_searchable_terms_find_nothing(index_version):
    assert ranked_texts(index_version, "") == []
    assert ranked_texts(index_version, "what is it and how?") == []
    assert ranked_texts(index_version, "zyxwvut") == []


def test_quotes_and_backslashes_in_a_query_are_searched_as_text(index_version):
    (needle,) = chunks_write(index_version, ["O'Brien wrote the C:\\temp\\sync guide."])

    ranking = keyword_ranking(
        index_version_id=index_version.pk,
        query="O'Brien's C:\\temp\\ guide",
        limit=5,
        rare_term_rows=RARE_TERM_ROWS,
    )

    assert ranking[0][0] == needle


def test_filters_apply_to_rare_terms_and_to_the_fallback(index_version):
    (billing,) = chunks_write(
        index_version,
        ["Error E7731 on invoices: offline sync history"],
        metadata={"section": "billing"},
    )
    chunks_write(
        index_version,
        ["Error E7731 on devices: offline sync"] + [HISTORY.format(n=n) for n in range(4)],
        metadata={"section": "devices"},
    )
    filters = {"section": "billing"}

    rare = keyword_ranking(
        index_version_id=index_version.pk,
        query="E7731",
        limit=5,
        filters=filters,
        rare_term_rows=RARE_TERM_ROWS,
    )
    common = keyword_ranking(
        index_version_id=index_version.pk,
        query="offline sync history",
        limit=20,
        filters=filters,
        rare_term_rows=RARE_TERM_ROWS,
    )

    assert [chunk_id for chunk_id, _ in rare] == [billing]
    assert [chunk_id for chunk_id, _ in common] == [billing]


def test_keyword_retrieval_reads_only_its_index_version_and_honours_filters(index_version):
    other = index_version_ensure_active(project=ProjectFactory())
    chunks_write(other, ["Error E7731 elsewhere."])
    chunks_write(index_version, ["Error E7731 on invoices."], metadata={"section": "billing"})
    chunks_write(index_version, ["Error E7731 on devices."], metadata={"section": "devices"})

    result = retrieve(
        project=index_version.project,
        query="E7731",
        options=RetrievalOptions(
            top_k=5, mode=RetrievalMode.KEYWORD, filters={"section": "billing"}
        ),
    )

    assert [chunk.text for chunk in result.chunks] == ["Error E7731 on invoices."]
    assert result.chunks[0].keyword_score > 0
