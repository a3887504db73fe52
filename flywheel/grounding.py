"""Extractive "quote" answers and a groundedness measure, both free of the database.

The 135M generator mostly ignores the passages it is given, while the knowledge base usually
holds a sentence that answers the question outright. Quoting that sentence is a better answer
than a generated one (it scores higher token F1 on the bench and cannot invent facts), so this
module finds it: passages are cut into sentences, each sentence is scored by how close its
embedding is to the question's and by how many of the question's rare words it repeats, and
the best one or two are returned. `groundedness` measures the other side of the same problem:
how much of a (generated) answer can be found in the passages it was supposed to come from.

Sentence splitting is a small regex splitter written here on purpose: the virtualenv has no
maintained splitter (no `pysbd`, no `syntok`), nltk's punkt data cannot be downloaded offline,
and the text to split is Markdown and man-page style plain text, whose headings, list items and
option lines no prose splitter knows about anyway; those need line-level rules first.
"""

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# A fragment shorter than this many words ("Options", "See also", "|---|") answers nothing.
MIN_SENTENCE_WORDS = 3
# Longer runs (a table row, a paragraph without full stops) are cut at a space near this length
# so that one candidate never swamps its embedding or the answer.
MAX_SENTENCE_CHARS = 400
# A one-line block this short and without final punctuation reads as a label for what follows.
MAX_LABEL_WORDS = 12

# Weights of the quote score: embedding closeness finds paraphrases, lexical overlap of the
# question's rare words finds the sentence about the very thing asked (names, codes, numbers),
# which embeddings of a small model blur. A question word found only in the heading of the
# sentence's section counts at HEADING_WORD_CREDIT: "What does E-520 mean?" is answered by a
# sentence under "## E-520: clock drift" that never repeats the code. The label bonus then lifts
# the sentence right under a heading or option line that names what the question asks about.
COSINE_WEIGHT = 0.5
LEXICAL_WEIGHT = 0.5
HEADING_WORD_CREDIT = 0.5
# A question word holding a digit (an error code, a model name, a number) pins down what is
# asked far more than a plain word ("What does error E-520 mean?"), so it weighs this much more.
CODE_WORD_WEIGHT = 2.0
LABEL_BONUS_WEIGHT = 0.2
# Below this nothing in the passages is taken to answer the question: with the bundled MiniLM
# on demo/flywheel-bench, the best sentence for an unrelated question scored at most 0.12 and
# that for a real question at least 0.33 (median 0.79).
DEFAULT_MIN_QUOTE_SCORE = 0.25
# A second sentence joins the best one only when it nearly ties it, or when it is the best
# one's neighbour and still scores this share of it: answers often run over two sentences, but
# every extra sentence that is not part of the answer costs precision.
CLOSE_SCORE_MARGIN = 0.03
ADJACENT_SCORE_RATIO = 0.85


def _word_set(words: str) -> frozenset[str]:
    """A set of words written as one whitespace-separated string (long lists stay readable)."""
    return frozenset(words.split())


STOP_WORDS = _word_set(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each either else ever few for from further get gets got had
    hadn't has hasn't have haven't having he her here hers herself him himself his how however
    i if in into is isn't it it's its itself just let's may me might more most must mustn't my
    myself neither no nor not now of off on once one's only or other ought our ours ourselves
    out over own per please same shall shan't she should shouldn't so some such than that
    that's the their theirs them themselves then there there's these they this those through
    thus to too under until up upon us very via was wasn't we were weren't what what's when
    where which while who whom whose why will with won't would wouldn't yet you your yours
    yourself yourselves
    """
) | _word_set(
    # Words of the question form itself ("how long", "how many", "what does X mean") that
    # would otherwise match unrelated sentences ("long-range radio", "this usually means").
    "long many mean meaning means meant much often"
)

# Words before a full stop that do not end a sentence.
ABBREVIATIONS = _word_set(
    "approx cf dept dr e.g eg etc fig i.e ie inc jr ltd mr mrs ms no nos p pp prof sr st vs"
)

# A decimal number stays whole ("5.3", "1,200"); otherwise runs of letters and digits, with
# inner apostrophes ("don't", "hub's").
TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:'[^\W_]+)*")
# Codes and model names that hold a digit ("E-520", "HS-7", "Cellar-3") are one token: their
# parts alone ("e", "7") name nothing, and would match any other "7".
CODE_TOKEN_RE = re.compile(r"(?<![\w-])(?=[\w-]*\d)[^\W_]+(?:-[^\W_]+)+(?![\w-])")
WHITESPACE_RE = re.compile(r"\s+")
LINE_BREAK_RE = re.compile(r"\r\n?")
OVERSTRIKE_RE = re.compile(r".\x08")  # raw `man` output: "N\bNA\bA" is a bold "NA"

CODE_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX_HEADING_RE = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE_RE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
THEMATIC_BREAK_RE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
# Man-page section headings stand at the left margin in capitals: NAME, SYNOPSIS, EXIT STATUS.
MAN_HEADING_RE = re.compile(r"^[A-Z][A-Z0-9 ,/&()'-]{1,58}[A-Z)]$")
# The running header and footer of a rendered man page: "SORT(1)    User Commands    SORT(1)",
# "GNU coreutils 9.1    September 2022    SORT(1)".
MAN_PAGE_FRAME_RE = re.compile(r"^(?:\S+\(\d\w*\) {3,}.*|\S.* {3,}\S+\(\d\w*\)[ \t]*)$")
BLOCKQUOTE_RE = re.compile(r"^[ \t]{0,3}>[ \t]?")
LIST_ITEM_RE = re.compile(r"^[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+(?=\S)")
# "-r, --reverse", "--key=KEYDEF", "-?": a dash glued to a letter, digit or second dash.
OPTION_LINE_RE = re.compile(r"^[ \t]*--?[A-Za-z0-9?#]")
# An option table row keeps its description on the same line after a gap of two spaces or more.
OPTION_DESCRIPTION_GAP_RE = re.compile(
    r"^[ \t]*--?\S+(?:,? --?\S+)*(?: [A-Z<\[]\S*)?(?: {2,}|\t)\S"
)
TABLE_ROW_RE = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
TABLE_RULE_RE = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$")

MARKDOWN_IMAGE_RE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
MARKDOWN_LINK_RE = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\[[^\]]*\])")
INLINE_CODE_RE = re.compile(r"`+([^`]+)`+")
STRONG_RE = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
EMPHASIS_RE = re.compile(r"(?<![\w*])\*(?=\S)([^*]+?)(?<=\S)\*(?![\w*])")
MARKDOWN_ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")

# Sentence ends: terminal punctuation, optional closing quotes or brackets, then whitespace.
SENTENCE_END_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
SENTENCE_START_RE = re.compile(r"[\"'\u201c\u2018(\[]*[A-Z0-9]")
LAST_WORD_RE = re.compile(r"(\S+)$")
SINGLE_INITIAL_RE = re.compile(r"[A-Za-z]")
DOTTED_ABBREVIATION_RE = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
# A line ending like this is a statement; one ending in ":" ("Ordering options:") announces.
FINAL_PUNCTUATION = (".", "!", "?", ";", ",")


@dataclass(frozen=True)
class Quote:
    """One quoted sentence: where it came from (index into the passages given) and its score."""

    text: str
    passage_index: int
    score: float


@dataclass(frozen=True)
class QuoteAnswer:
    """An extractive answer: the quotes joined in passage order, and the quotes themselves."""

    text: str
    quotes: list[Quote]


@dataclass(frozen=True)
class _Segment:
    """A sentence-like unit of a text, with what the quote scorer needs to know about its place.

    `is_heading`: a Markdown or man-page heading, a title rather than a statement, so it is never
    quoted; `is_label`: a heading or a short unpunctuated one-line block ("--reverse",
    "Battery > Charging") that announces what the next segment is about.
    """

    text: str
    is_heading: bool
    is_label: bool

    @property
    def word_count(self) -> int:
        return _word_count(self.text)


@dataclass
class _Block:
    """Lines gathered into one unit before it is cut into sentences."""

    kind: str  # "prose", "item", "option" or "table"
    lines: list[str]


@dataclass(frozen=True)
class _Candidate:
    text: str
    passage_index: int
    position: int  # index of the segment in its passage, headings included
    section_heading: str | None  # the heading of the section holding it, or the passage title
    label: str | None  # the heading or label line directly above, if any


# --- sentence splitting -------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Cut Markdown or man-page style plain text into sentence-like units, in reading order.

    Headings, list items, table rows and option lines ("-r, --reverse   reverse the result")
    each become one unit, since their line breaks carry meaning; prose paragraphs are joined
    across line wraps and cut at sentence ends. Fenced code and fragments under
    MIN_SENTENCE_WORDS words are dropped (they answer nothing) and runs longer than
    MAX_SENTENCE_CHARS are cut at a space.
    """
    return [segment.text for segment in _segments(text) if segment.word_count >= MIN_SENTENCE_WORDS]


def _segments(text: str) -> list[_Segment]:
    """All units of `text`, short ones included, so that labels too short to quote still
    count as the context of the sentence below them."""
    text = OVERSTRIKE_RE.sub("", LINE_BREAK_RE.sub("\n", text))
    segments: list[_Segment] = []
    block: _Block | None = None
    in_code_fence = False

    def end_block() -> None:
        nonlocal block
        if block is not None:
            segments.extend(_block_segments(block))
        block = None

    for raw_line in text.split("\n"):
        if CODE_FENCE_RE.match(raw_line):
            end_block()
            in_code_fence = not in_code_fence
            continue
        if in_code_fence:
            continue
        line = BLOCKQUOTE_RE.sub("", raw_line).rstrip()
        if not line.strip():
            end_block()
        elif heading := ATX_HEADING_RE.match(line):
            end_block()
            segments.extend(_heading_segments(heading.group(1)))
        elif (
            SETEXT_UNDERLINE_RE.match(line)
            and block is not None
            and block.kind == "prose"
            and len(block.lines) == 1
        ):  # "Title\n=====": the line above was a heading
            heading_text = block.lines[0]
            block = None
            segments.extend(_heading_segments(heading_text))
        elif (
            THEMATIC_BREAK_RE.match(line)
            or TABLE_RULE_RE.match(line)
            or MAN_PAGE_FRAME_RE.match(line)
        ):
            end_block()
        elif MAN_HEADING_RE.match(line):
            end_block()
            segments.extend(_heading_segments(line))
        elif TABLE_ROW_RE.match(line):
            end_block()
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            block = _Block(kind="table", lines=[" | ".join(cell for cell in cells if cell)])
            end_block()
        elif LIST_ITEM_RE.match(line):
            end_block()
            block = _Block(kind="item", lines=[LIST_ITEM_RE.sub("", line)])
        elif OPTION_LINE_RE.match(line) and _starts_option(block, line):
            end_block()
            block = _Block(kind="option", lines=[line])
        elif block is None:
            block = _Block(kind="prose", lines=[line])
        else:
            block.lines.append(line)
    end_block()
    return segments


def _starts_option(block: _Block | None, line: str) -> bool:
    """Whether a line starting with a dash option opens an option entry rather than continuing
    a wrapped prose line ("... pass the\\n--reverse flag to ...")."""
    return (
        block is None or block.kind == "option" or OPTION_DESCRIPTION_GAP_RE.match(line) is not None
    )


def _heading_segments(raw_heading: str) -> list[_Segment]:
    text = _plain_inline(raw_heading)
    return [_Segment(text=text, is_heading=True, is_label=True)] if text else []


def _block_segments(block: _Block) -> list[_Segment]:
    text = _plain_inline(" ".join(line.strip() for line in block.lines))
    if not text:
        return []
    if block.kind in ("option", "table"):
        # An option entry stays whole: a second sentence of its description cut off from the
        # option name would no longer say which option it describes.
        pieces = _capped(text)
    else:
        pieces = [piece for sentence in _prose_sentences(text) for piece in _capped(sentence)]
    is_label = (
        block.kind == "prose"
        and len(block.lines) == 1
        and len(pieces) == 1
        and _word_count(text) <= MAX_LABEL_WORDS
        and not text.endswith(FINAL_PUNCTUATION)
    ) or (block.kind == "option" and len(block.lines) == 1 and _word_count(text) < 3)
    return [_Segment(text=piece, is_heading=False, is_label=is_label) for piece in pieces]


def _word_count(text: str) -> int:
    """Tokens holding a letter: "shuf(1), uniq(1)" is two words, not four."""
    return sum(1 for token in TOKEN_RE.findall(text) if any(char.isalpha() for char in token))


def _plain_inline(text: str) -> str:
    """Markdown inline markup removed (links keep their words, images go), spaces collapsed."""
    text = MARKDOWN_IMAGE_RE.sub("", text)
    text = MARKDOWN_LINK_RE.sub(r"\1", text)
    text = INLINE_CODE_RE.sub(r"\1", text)
    text = STRONG_RE.sub(r"\2", text)
    text = EMPHASIS_RE.sub(r"\1", text)
    text = MARKDOWN_ESCAPE_RE.sub(r"\1", text)
    return WHITESPACE_RE.sub(" ", text).strip()


def _prose_sentences(text: str) -> list[str]:
    """Cut a paragraph at sentence ends, but not after abbreviations or initials ("e.g.",
    "Dr.", "J. Smith") nor before a lowercase word."""
    sentences: list[str] = []
    start = 0
    for match in SENTENCE_END_RE.finditer(text):
        if not SENTENCE_START_RE.match(text, match.end()) or match.group().startswith(".."):
            continue  # a lowercase word follows, or an ellipsis ("[OPTION]... [FILE]")
        if match.group().startswith(".") and _ends_with_abbreviation(text[start : match.start()]):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _ends_with_abbreviation(text: str) -> bool:
    last = LAST_WORD_RE.search(text)
    if last is None:
        return False
    word = last.group(1).lstrip("(\"'")
    return (
        word.lower() in ABBREVIATIONS
        or SINGLE_INITIAL_RE.fullmatch(word) is not None
        or DOTTED_ABBREVIATION_RE.fullmatch(word) is not None
    )


def _capped(text: str) -> list[str]:
    """`text` in pieces of at most MAX_SENTENCE_CHARS, cut at the last space before the limit."""
    pieces: list[str] = []
    while len(text) > MAX_SENTENCE_CHARS:
        cut = text.rfind(" ", 0, MAX_SENTENCE_CHARS + 1)
        if cut <= 0:
            cut = MAX_SENTENCE_CHARS
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


# --- content words ------------------------------------------------------------------------


def _content_tokens(text: str) -> list[str]:
    """Lowercased words that carry meaning: stop words and lone letters dropped, numbers kept,
    possessives and plurals folded ("probes", "probe's" -> "probe") so that a question and its
    answer sentence meet on the same word."""
    text = text.replace("\u2019", "'").lower()
    codes = CODE_TOKEN_RE.findall(text)
    tokens: list[str] = []
    for raw in [*codes, *TOKEN_RE.findall(CODE_TOKEN_RE.sub(" ", text))]:
        if raw in STOP_WORDS:
            continue
        token = _folded(raw)
        if token in STOP_WORDS or (len(token) < 2 and not token.isdigit()):
            continue
        tokens.append(token)
    return tokens


def _folded(token: str) -> str:
    """A crude stem: enough suffix stripping that "buried" meets "burying" and "probes" meets
    "probe" (both sides are folded alike, so stems need not be words), not a real stemmer."""
    if token.endswith("'s"):
        token = token[:-2]
    if not token.isalpha() or len(token) <= 3:
        return token
    for suffix, replacement in (("ies", "y"), ("ied", "y"), ("ying", "y")):
        if token.endswith(suffix) and len(token) > 4:
            return token[: -len(suffix)] + replacement
    if token.endswith("s") and not token.endswith(("ss", "us", "is")) and len(token) > 3:
        token = token[:-1]
    for suffix in ("ing", "ed"):  # "need" and "bring" keep theirs: 3 letters must remain
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            token = token[: -len(suffix)]
            break
    if token.endswith("e") and len(token) > 4:
        token = token[:-1]
    return token


def _inverse_document_frequencies(documents: Sequence[set[str]]) -> Callable[[str], float]:
    """Smoothed IDF over the candidate sentences: a word that few sentences share says more
    about which sentence is meant than one found everywhere ("hub" in a hub manual). Words
    holding a digit weigh CODE_WORD_WEIGHT times more."""
    document_frequency: Counter[str] = Counter()
    for terms in documents:
        document_frequency.update(terms)
    count = len(documents)

    def idf(term: str) -> float:
        weight = CODE_WORD_WEIGHT if any(character.isdigit() for character in term) else 1.0
        return weight * math.log(1.0 + (count + 1) / (document_frequency[term] + 1))

    return idf


def _weighted_overlap(
    question_terms: set[str],
    terms: set[str],
    idf: Callable[[str], float],
    context_terms: frozenset[str] = frozenset(),
) -> float:
    """The IDF-weighted share of the question's content words that `terms` contains, in [0, 1];
    a word found only in `context_terms` (the section heading) earns HEADING_WORD_CREDIT."""
    total = sum(idf(term) for term in question_terms)
    if total == 0:
        return 0.0
    found = sum(
        idf(term) * (1.0 if term in terms else HEADING_WORD_CREDIT)
        for term in question_terms
        if term in terms or term in context_terms
    )
    return found / total


# --- quote answers ------------------------------------------------------------------------


def quote_answer(
    *,
    question: str,
    passages: Sequence[str],
    embed: Callable[[list[str]], np.ndarray],
    max_sentences: int = 2,
    min_score: float = DEFAULT_MIN_QUOTE_SCORE,
) -> QuoteAnswer | None:
    """Answer `question` with the sentence(s) of `passages` that best answer it, or None.

    `embed` maps texts to L2-normalised rows; it is called once, with the question first and
    then every distinct candidate sentence. A sentence's score is COSINE_WEIGHT times its
    cosine with the question plus LEXICAL_WEIGHT times the IDF-weighted share of the question's
    content words it contains (words with digits weigh CODE_WORD_WEIGHT more; a word found only
    in the section's heading earns HEADING_WORD_CREDIT), plus LABEL_BONUS_WEIGHT times how well
    the heading or label line right above it matches the question. Scores lie roughly in
    [0, 1.2]. The best sentence is taken, then up to
    `max_sentences - 1` next-best ones, each only while it nearly ties the best or neighbours a
    chosen sentence in the same passage; the quotes are joined in passage order. None when no
    sentence scores above `min_score` (nothing in the passages answers the question).
    Ties go to the earlier passage and sentence, so the result is deterministic.
    """
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    scored = _scored_candidates(question=question, passages=passages, embed=embed)
    if not scored:
        return None
    # Stable sort: equal scores keep passage and sentence order.
    scored.sort(key=lambda item: -item[0])

    best_score, best = scored[0]
    if best_score <= min_score:
        return None
    chosen = [(best_score, best)]
    for score, candidate in scored[1:]:
        if len(chosen) >= max_sentences or score <= min_score:
            break
        if any(candidate.text == taken.text for _, taken in chosen):
            continue  # the same sentence from an overlapping passage
        nearly_ties = score >= best_score - CLOSE_SCORE_MARGIN
        neighbours = score >= ADJACENT_SCORE_RATIO * best_score and any(
            _adjacent(candidate, taken) for _, taken in chosen
        )
        if not (nearly_ties or neighbours):
            break
        chosen.append((score, candidate))

    chosen.sort(key=lambda item: (item[1].passage_index, item[1].position))
    quotes = [
        Quote(text=candidate.text, passage_index=candidate.passage_index, score=score)
        for score, candidate in chosen
    ]
    return QuoteAnswer(text=" ".join(quote.text for quote in quotes), quotes=quotes)


def _scored_candidates(
    *, question: str, passages: Sequence[str], embed: Callable[[list[str]], np.ndarray]
) -> list[tuple[float, _Candidate]]:
    """Every candidate sentence with its quote score, in passage order (see `quote_answer`)."""
    candidates = list(_candidates(passages))
    if not candidates:
        return []

    distinct_texts = list(dict.fromkeys(candidate.text for candidate in candidates))
    vectors = _normalised_rows(np.asarray(embed([question, *distinct_texts]), dtype=np.float64))
    if vectors.shape[0] != len(distinct_texts) + 1:
        raise ValueError(
            f"embed returned {vectors.shape[0]} rows for {len(distinct_texts) + 1} texts"
        )
    cosine_of = dict(zip(distinct_texts, (vectors[1:] @ vectors[0]).tolist(), strict=True))

    terms_of = {text: set(_content_tokens(text)) for text in distinct_texts}
    idf = _inverse_document_frequencies(list(terms_of.values()))
    question_terms = set(_content_tokens(question))

    scored: list[tuple[float, _Candidate]] = []
    for candidate in candidates:
        heading_terms = frozenset(_content_tokens(candidate.section_heading or ""))
        lexical = _weighted_overlap(question_terms, terms_of[candidate.text], idf, heading_terms)
        score = COSINE_WEIGHT * cosine_of[candidate.text] + LEXICAL_WEIGHT * lexical
        if candidate.label is not None:
            label_terms = set(_content_tokens(candidate.label))
            score += LABEL_BONUS_WEIGHT * _weighted_overlap(question_terms, label_terms, idf)
        scored.append((score, candidate))
    return scored


def _candidates(passages: Sequence[str]) -> Iterator[_Candidate]:
    """Every quotable sentence of every passage, with the heading of its section and the label
    directly above it. A label line that opens a passage ("Power > Batteries", as retrieved
    chunks are often shown) is the passage's title and so also its section heading."""
    for passage_index, passage in enumerate(passages):
        section_heading: str | None = None
        pending_label: str | None = None
        for position, segment in enumerate(_segments(passage)):
            if segment.is_heading or (segment.is_label and position == 0):
                section_heading = pending_label = segment.text
                continue
            if segment.word_count >= MIN_SENTENCE_WORDS:
                yield _Candidate(
                    text=segment.text,
                    passage_index=passage_index,
                    position=position,
                    section_heading=section_heading,
                    label=pending_label,
                )
            pending_label = segment.text if segment.is_label else None


def _adjacent(first: _Candidate, second: _Candidate) -> bool:
    return (
        first.passage_index == second.passage_index and abs(first.position - second.position) == 1
    )


def _normalised_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (again: a caller's embedder may not normalise), zero rows kept."""
    if vectors.ndim != 2:
        raise ValueError(f"embed must return a 2-D array, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


# --- groundedness -------------------------------------------------------------------------


def groundedness(*, answer: str, passages: Sequence[str]) -> float:
    """The share of the answer's content tokens (every occurrence counts) found in the passages.

    Content tokens are lowercased words without stop words, numbers kept, plurals folded, so a
    number or name the model made up counts against it while rewording with function words does
    not. An answer without content tokens ("Yes.", "") has shown nothing grounded: 0.0, not 1.0.
    """
    answer_tokens = _content_tokens(answer)
    if not answer_tokens:
        return 0.0
    passage_tokens = {token for passage in passages for token in _content_tokens(passage)}
    found = sum(1 for token in answer_tokens if token in passage_tokens)
    return found / len(answer_tokens)
