"""Heading-aware chunking of knowledge-base documents for retrieval.

Retrieval works best on passages that are small enough to embed well and that know where
they come from, so a document is split along its headings first and only then by size. Every
chunk carries its heading path ("Billing and plans > Invoices") so that the answer model sees
the context that a passage lost when it was cut out of its page. Consecutive chunks of one
section share a little text so that a sentence cut at a chunk boundary is still found whole.
"""

import re
from dataclasses import asdict, dataclass
from html.parser import HTMLParser

MIN_MAX_CHARS = 100
CONTENT_TYPES = ("text", "markdown", "html")
HEADING_PATH_SEPARATOR = " > "
PARAGRAPH_SEPARATOR = "\n\n"
SENTENCE_SEPARATOR = " "

LINE_BREAK_RE = re.compile(r"\r\n?")
BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
SENTENCE_BOUNDARY_RE = re.compile(r"(?<=[.!?])\s+")
WHITESPACE_RE = re.compile(r"\s")
ATX_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")

HTML_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
HTML_BLOCK_TAGS = frozenset(
    {"p", "div", "li", "br", "tr", "section", "article", "blockquote", "pre"}
)
HTML_IGNORED_TAGS = frozenset({"script", "style", "head", "template", "noscript", "svg"})


@dataclass(frozen=True)
class ChunkingOptions:
    """How large chunks may grow and how much of one chunk the next one repeats."""

    max_chars: int = 1200
    overlap_chars: int = 200

    def __post_init__(self):
        if self.max_chars < MIN_MAX_CHARS:
            raise ValueError(f"max_chars must be at least {MIN_MAX_CHARS}, got {self.max_chars}")
        if not 0 <= self.overlap_chars < self.max_chars // 2:
            raise ValueError(
                "overlap_chars must be at least 0 and less than half of max_chars "
                f"({self.max_chars // 2}), got {self.overlap_chars}"
            )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChunkDraft:
    """A passage ready to be embedded; `heading` is kept apart so callers decide how to show it."""

    position: int
    heading: str
    text: str


@dataclass(frozen=True)
class _Section:
    heading: str
    body: str


@dataclass(frozen=True)
class _Piece:
    """A unit of packing; `starts_paragraph` tells how it joins the text before it."""

    text: str
    starts_paragraph: bool

    @property
    def separator(self) -> str:
        return PARAGRAPH_SEPARATOR if self.starts_paragraph else SENTENCE_SEPARATOR


DEFAULT_OPTIONS = ChunkingOptions()


def document_chunks(
    *, content: str, content_type: str, options: ChunkingOptions = DEFAULT_OPTIONS
) -> list[ChunkDraft]:
    """Split a document into chunks numbered from 0, each within `options.max_chars`.

    HTML is turned into Markdown first so that both share one notion of headings; plain text
    has none, since a line that starts with '#' there is just text.
    """
    if content_type not in CONTENT_TYPES:
        raise ValueError(
            f"unknown content_type {content_type!r}; expected one of {', '.join(CONTENT_TYPES)}"
        )
    content = LINE_BREAK_RE.sub("\n", content)
    if content_type == "html":
        content = html_to_markdown(content)
    if content_type == "text":
        sections = [_Section(heading="", body=content)]
    else:
        sections = markdown_sections(content)

    chunks: list[ChunkDraft] = []
    for section in sections:
        for text in _section_chunk_texts(section.body, options):
            chunks.append(ChunkDraft(position=len(chunks), heading=section.heading, text=text))
    return chunks


def html_to_markdown(html: str) -> str:
    """Render HTML as Markdown-like text: headings as '#' lines, blocks as paragraphs."""
    converter = _HtmlToMarkdown()
    converter.feed(html)
    converter.close()
    return PARAGRAPH_SEPARATOR.join(converter.blocks)


class _HtmlToMarkdown(HTMLParser):
    """Collects the visible text of a page as blocks, dropping what a reader never sees."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._text_parts: list[str] = []
        self._block_prefix = ""
        self._heading_level = 0
        self._ignored_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in HTML_IGNORED_TAGS:
            self._ignored_depth += 1
        elif self._ignored_depth:
            return
        elif tag in HTML_HEADING_TAGS:
            self._end_block()
            self._heading_level = int(tag[1])
        elif tag in HTML_BLOCK_TAGS:
            self._end_block()
            if tag == "li":
                self._block_prefix = "- "

    def handle_endtag(self, tag):
        if tag in HTML_IGNORED_TAGS:
            self._ignored_depth = max(0, self._ignored_depth - 1)
        elif self._ignored_depth:
            return
        elif tag in HTML_HEADING_TAGS or tag in HTML_BLOCK_TAGS:
            self._end_block()
            self._block_prefix = ""
            self._heading_level = 0

    def handle_data(self, data):
        if not self._ignored_depth:
            self._text_parts.append(data)

    def close(self):
        super().close()
        self._end_block()

    def _end_block(self):
        """Emit the text gathered so far; an empty block keeps its pending prefix or level."""
        text = " ".join("".join(self._text_parts).split())
        self._text_parts = []
        if not text:
            return
        if self._heading_level:
            self.blocks.append(f"{'#' * self._heading_level} {text}")
        else:
            self.blocks.append(f"{self._block_prefix}{text}")
        self._block_prefix = ""


def markdown_sections(markdown: str) -> list[_Section]:
    """Cut Markdown at ATX headings outside code fences; each section knows its heading path."""
    sections: list[_Section] = []
    heading_stack: list[tuple[int, str]] = []
    body_lines: list[str] = []
    open_fence = ""

    def close_section():
        heading = HEADING_PATH_SEPARATOR.join(title for _, title in heading_stack)
        sections.append(_Section(heading=heading, body="\n".join(body_lines)))
        body_lines.clear()

    for line in markdown.split("\n"):
        fence = CODE_FENCE_RE.match(line)
        if open_fence:
            if fence and _closes_fence(fence, open_fence):
                open_fence = ""
        elif fence:
            open_fence = fence.group(1)
        elif heading := ATX_HEADING_RE.match(line):
            close_section()
            level = len(heading.group(1))
            while heading_stack and heading_stack[-1][0] >= level:
                heading_stack.pop()
            heading_stack.append((level, heading.group(2)))
            continue
        body_lines.append(line)
    close_section()
    return sections


def _closes_fence(fence: re.Match, open_fence: str) -> bool:
    marker = fence.group(1)
    return (
        marker[0] == open_fence[0] and len(marker) >= len(open_fence) and not fence.group(2).strip()
    )


def _section_chunk_texts(body: str, options: ChunkingOptions) -> list[str]:
    """Chunk one section; a section that fits stays whole, otherwise chunks overlap.

    Packing leaves room for the overlap and its separator, so adding the overlap never
    pushes a chunk past `max_chars`.
    """
    paragraphs = [p.strip() for p in BLANK_LINE_RE.split(body) if p.strip()]
    whole = PARAGRAPH_SEPARATOR.join(paragraphs)
    if len(whole) <= options.max_chars:
        return [whole] if whole else []

    if not options.overlap_chars:
        budget = options.max_chars
        return [piece.text for piece in _pack(_pieces(paragraphs, budget), budget)]

    budget = options.max_chars - options.overlap_chars - len(PARAGRAPH_SEPARATOR)
    packed = _pack(_pieces(paragraphs, budget), budget)
    texts = [packed[0].text]
    for chunk in packed[1:]:
        overlap = _overlap_tail(texts[-1], options.overlap_chars)
        texts.append(f"{overlap}{chunk.separator}{chunk.text}" if overlap else chunk.text)
    return texts


def _pieces(paragraphs: list[str], budget: int) -> list[_Piece]:
    """Break paragraphs into pieces of at most `budget` characters, coarsest cut first."""
    pieces: list[_Piece] = []
    for paragraph in paragraphs:
        if len(paragraph) <= budget:
            units = [paragraph]
        else:
            units = [
                unit
                for sentence in SENTENCE_BOUNDARY_RE.split(paragraph)
                for unit in _sentence_units(sentence, budget)
            ]
        pieces.extend(
            _Piece(text=unit, starts_paragraph=index == 0) for index, unit in enumerate(units)
        )
    return pieces


def _sentence_units(sentence: str, budget: int) -> list[str]:
    if len(sentence) <= budget:
        return [sentence]
    return [
        word[start : start + budget]
        for word in sentence.split()
        for start in range(0, len(word), budget)
    ]


def _pack(pieces: list[_Piece], budget: int) -> list[_Piece]:
    """Join consecutive pieces greedily while the joined text stays within `budget`."""
    packed: list[_Piece] = []
    for piece in pieces:
        if packed:
            candidate = f"{packed[-1].text}{piece.separator}{piece.text}"
            if len(candidate) <= budget:
                packed[-1] = _Piece(text=candidate, starts_paragraph=packed[-1].starts_paragraph)
                continue
        packed.append(piece)
    return packed


def _overlap_tail(previous: str, overlap_chars: int) -> str:
    """The end of `previous`, at most `overlap_chars` long, starting at a word boundary."""
    if len(previous) <= overlap_chars:
        return previous
    tail = previous[-overlap_chars:]
    if not previous[-overlap_chars - 1].isspace():
        first_space = WHITESPACE_RE.search(tail)
        if not first_space:
            return ""
        tail = tail[first_space.start() :]
    return tail.strip()
