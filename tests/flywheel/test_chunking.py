"""The chunker splits documents along headings, stays within the size limit and overlaps."""

import itertools

import pytest

from flywheel.chunking import ChunkDraft, ChunkingOptions, document_chunks

SMALL = ChunkingOptions(max_chars=200, overlap_chars=60)


def long_paragraph(topic: str, sentences: int) -> str:
    return " ".join(
        f"Sentence {number} explains how {topic} behaves for accounts on the yearly plan."
        for number in range(sentences)
    )


def shared_overlap_length(previous: str, following: str) -> int:
    """Length of the longest text that ends `previous`, starts `following` at a word boundary
    on both sides, and is followed in `following` by whitespace; 0 when there is none."""
    for length in range(min(len(previous), len(following) - 1), 0, -1):
        starts_on_word = length == len(previous) or previous[-length - 1].isspace()
        if starts_on_word and previous.endswith(following[:length]) and following[length].isspace():
            return length
    return 0


def test_nested_markdown_headings_give_heading_paths():
    content = "\n".join(
        [
            "Intro before any heading.",
            "# Billing and plans",
            "Plans overview.",
            "## Invoices ##",
            "Invoices are monthly.",
            "### Refunds",
            "Refunds take a week.",
            "## Taxes",
            "VAT applies.",
            "# Support",
            "## Hours",
            "Open all day.",
        ]
    )

    chunks = document_chunks(content=content, content_type="markdown")

    assert [(chunk.heading, chunk.text) for chunk in chunks] == [
        ("", "Intro before any heading."),
        ("Billing and plans", "Plans overview."),
        ("Billing and plans > Invoices", "Invoices are monthly."),
        ("Billing and plans > Invoices > Refunds", "Refunds take a week."),
        ("Billing and plans > Taxes", "VAT applies."),
        ("Support > Hours", "Open all day."),
    ]


def test_headings_inside_code_fences_are_text():
    content = "\n".join(
        [
            "# Setup",
            "Run this:",
            "```bash",
            "# install the client",
            "pip install client",
            "```",
            "~~~",
            "## not a heading either",
            "~~~",
            "# Usage",
            "Call it.",
        ]
    )

    chunks = document_chunks(content=content, content_type="markdown")

    assert [chunk.heading for chunk in chunks] == ["Setup", "Usage"]
    assert "# install the client" in chunks[0].text
    assert "## not a heading either" in chunks[0].text


def test_html_becomes_sections_without_scripts_and_with_entities_unescaped():
    content = """
        <html><head><title>Page title</title><style>p { color: red; }</style></head>
        <body>
          <h1>Billing &amp; plans</h1>
          <p>Plans   are
             billed &lt;monthly&gt;.</p>
          <script>var secret = "tracking";</script>
          <h2>Invoices</h2>
          <ul><li>Sent by email</li><li>Paid in&nbsp;30 days</li></ul>
          <noscript>Enable JavaScript</noscript>
        </body></html>
    """

    chunks = document_chunks(content=content, content_type="html")

    assert chunks == [
        ChunkDraft(position=0, heading="Billing & plans", text="Plans are billed <monthly>."),
        ChunkDraft(
            position=1,
            heading="Billing & plans > Invoices",
            text="- Sent by email\n\n- Paid in 30 days",
        ),
    ]


def test_long_section_is_split_within_limit_with_overlap_at_word_boundary():
    content = "# Guide\n\n" + long_paragraph("billing", 12) + "\n\n" + long_paragraph("tax", 4)

    chunks = document_chunks(content=content, content_type="markdown", options=SMALL)

    assert len(chunks) > 2
    assert all(0 < len(chunk.text) <= SMALL.max_chars for chunk in chunks)
    assert all(chunk.text == chunk.text.strip() for chunk in chunks)
    for previous, following in itertools.pairwise(chunks):
        overlap = shared_overlap_length(previous.text, following.text)
        assert 0 < overlap <= SMALL.overlap_chars, (previous.text, following.text)


def test_overlong_sentences_and_words_are_cut_within_limit():
    words = " ".join(f"word{number}" for number in range(80))
    content = f"{words}\n\n{'x' * 450}"

    chunks = document_chunks(content=content, content_type="text", options=SMALL)

    assert all(0 < len(chunk.text) <= SMALL.max_chars for chunk in chunks)
    assert "word79" in " ".join(chunk.text for chunk in chunks)
    assert sum(chunk.text.count("x") for chunk in chunks) >= 450


def test_no_overlap_across_sections():
    content = "# First\n\n" + long_paragraph("billing", 6) + "\n\n# Second\n\nShort closing words."

    chunks = document_chunks(content=content, content_type="markdown", options=SMALL)

    assert chunks[-1] == ChunkDraft(
        position=len(chunks) - 1, heading="Second", text="Short closing words."
    )
    assert chunks[-2].heading == "First"


def test_without_overlap_chunks_do_not_repeat_text():
    options = ChunkingOptions(max_chars=200, overlap_chars=0)
    content = long_paragraph("billing", 8)

    chunks = document_chunks(content=content, content_type="text", options=options)

    assert len(chunks) > 1
    assert " ".join(chunk.text for chunk in chunks) == content


def test_plain_text_has_no_headings_and_normalises_line_endings():
    content = "# not a heading\r\nstill the first paragraph\r\n\r\n## nor this"

    chunks = document_chunks(content=content, content_type="text")

    assert chunks == [
        ChunkDraft(
            position=0,
            heading="",
            text="# not a heading\nstill the first paragraph\n\n## nor this",
        )
    ]


def test_positions_are_consecutive_across_the_document():
    content = "\n\n".join(
        f"# Part {part}\n\n{long_paragraph(f'topic {part}', 5)}" for part in range(3)
    )

    chunks = document_chunks(content=content, content_type="markdown", options=SMALL)

    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    assert len({chunk.heading for chunk in chunks}) == 3


def test_empty_sections_give_no_chunks():
    chunks = document_chunks(content="# Only\n\n## Headings\n\n   \n", content_type="markdown")

    assert chunks == []


def test_options_as_dict():
    assert ChunkingOptions().as_dict() == {"max_chars": 1200, "overlap_chars": 200}


@pytest.mark.parametrize(
    ("max_chars", "overlap_chars", "message"),
    [
        (99, 0, "max_chars must be at least 100"),
        (200, -1, "overlap_chars must be at least 0"),
        (200, 100, "less than half of max_chars"),
    ],
)
def test_invalid_options_are_refused(max_chars, overlap_chars, message):
    with pytest.raises(ValueError, match=message):
        ChunkingOptions(max_chars=max_chars, overlap_chars=overlap_chars)


def test_unknown_content_type_is_refused():
    with pytest.raises(ValueError, match="unknown content_type 'pdf'"):
        document_chunks(content="anything", content_type="pdf")
