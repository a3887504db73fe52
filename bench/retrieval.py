"""Retrieval over 100k chunks: HNSW recall against exact search, and how often vector,
keyword and hybrid retrieval find the one passage that answers a labelled query.

The corpus is synthetic but varied: sentences from templates about 200 fictional products,
their features, plans, regions, part codes and numbers. Among them sit 100 "needles", each
the only passage holding its fact, with a query that asks for it in one of three ways:

- lexical: the query names a rare part code, error code or coined name and little else; the
  filler holds the same sentences with other codes, so only the exact token tells them apart;
- semantic: the query paraphrases a policy with (almost) no word in common with it;
- mixed: the query names the product and paraphrases a fact that the filler states for every
  other product, so neither the product's name nor the fact's meaning is enough alone.

Chunks are embedded with the real model (flywheel.ml.loading.embed_texts; the matrix is
cached under var/bench-cache/ so a rerun skips it), loaded with a binary COPY, and the HNSW
and full-text indexes are rebuilt after the load, as one would for a bulk import.

Measured side by side: HNSW recall@10 and latency per ef_search (on the product's HNSW build
and on others), and every labelled query through retrieve() in vector, keyword and hybrid mode
with each keyword query in turn: the one the product had before (any term, every match
ranked), any term with only the first matches ranked, and the product's rare terms + AND
fallback at several thresholds.

Run from the repository root: .venv/bin/python bench/retrieval.py [--chunks 100000]
"""

import argparse
import hashlib
import os
import random
import re
import string
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import (
    REPOSITORY_ROOT,
    bench_django_setup,
    machine_context,
    percentiles,
    table,
)

BRANDS = [
    "Lumora",
    "Quillmate",
    "Harborline",
    "Vantor",
    "Brightnest",
    "Cobaltix",
    "Ferrowave",
    "Glimmerly",
    "Kestrel",
    "Novaquill",
    "Orbitra",
    "Pellucid",
    "Ravenstone",
    "Solvane",
    "Tidewell",
    "Umbrix",
    "Veridian",
    "Wrenfield",
    "Zephyrra",
    "Ashgrove",
]
SERIES = ["Go", "Pro", "Max", "Mini", "Studio", "Edge", "One", "Air", "Core", "Flex"]
FEATURES = [
    "offline sync",
    "two-factor sign-in",
    "shared folders",
    "the audit log",
    "webhooks",
    "single sign-on",
    "nightly backups",
    "full-text search",
    "push notifications",
    "the team calendar",
    "guest access",
    "version history",
    "custom domains",
    "data import",
    "role-based permissions",
    "CSV export",
    "the billing portal",
    "the mobile widget",
]
PLANS = ["Starter", "Team", "Business", "Enterprise"]
REGIONS = ["Frankfurt", "Dublin", "Virginia", "Oregon", "Singapore", "Sydney", "Tokyo", "Montreal"]
# Coined names (connectors, brackets, themes) are built from these: words no model has seen.
SYLLABLES = [
    "tal",
    "low",
    "fen",
    "bris",
    "quel",
    "quor",
    "vane",
    "mad",
    "drick",
    "ysel",
    "om",
    "brazz",
    "kel",
    "trune",
    "zor",
    "pim",
    "wex",
    "ard",
    "ul",
    "vox",
    "nid",
    "ser",
    "gav",
    "rith",
]


@dataclass(frozen=True)
class Template:
    """A sentence about one product. The filler states it for many products with random
    values; a needle states it once with values reserved for it and asks `lexical_query`
    (only the rare code or name identifies the needle) or `mixed_query` (a paraphrase that
    names the product)."""

    text: str
    lexical_query: str = ""
    mixed_query: str = ""


TEMPLATES = [
    Template(
        "{product} keeps {feature} history for {n} days on the {plan} plan.",
        mixed_query="For how long does {product} retain records of {feature}?",
    ),
    Template(
        "Since version {version}, {feature} in {product} handles up to {n} requests per minute.",
        mixed_query="What is the throughput ceiling of {feature} in {product}?",
    ),
    Template(
        "Admins can switch {feature} off for a whole {product} workspace from the settings page.",
        mixed_query="Can an administrator disable {feature} across {product}?",
    ),
    Template(
        "The {region} data centre serves {product} customers with a median latency of {n} ms.",
        mixed_query="How quick is {product} for people near {region}?",
    ),
    Template(
        "On the {plan} plan, {product} allows {n} members per workspace and {m} GB of storage.",
        mixed_query="How many people can join one {product} team on {plan}?",
    ),
    Template(
        "The {product} battery lasts about {n} hours of continuous use and charges in {m} hours.",
        mixed_query="How long can I use the {product} before plugging it in?",
    ),
    Template(
        "Firmware {version} for the {product} fixes a crash in {feature} and speeds up "
        "start-up by {n} percent."
    ),
    Template(
        "{product} dashboards redraw their charts every {n} seconds.",
        mixed_query="How often does the {product} dashboard refresh its graphs?",
    ),
    Template(
        "Download links for {product} exports expire after {n} hours.",
        mixed_query="How long may I fetch a finished {product} export?",
    ),
    Template(
        "The {product} warranty covers manufacturing defects for {m} years.",
        mixed_query="If my {product} breaks, for how long am I protected?",
    ),
    Template(
        "Each {product} licence may be activated on up to {m} devices at a time.",
        mixed_query="On how many computers can I install {product} simultaneously?",
    ),
    Template(
        "{product} encrypts {feature} data at rest and rotates its keys every {n} days.",
        mixed_query="How frequently are the {product} encryption secrets replaced?",
    ),
    Template(
        "Support for {product} on the {plan} plan answers tickets within {m} business hours.",
        mixed_query="How fast does {product} customer service reply on {plan}?",
    ),
    Template(
        "The {product} API returns at most {n} records per page.",
        mixed_query="What is the page size limit of the {product} API?",
    ),
    Template(
        "{product} sends a usage summary to workspace owners every {m} weeks.",
        mixed_query="How regularly do {product} owners get activity reports?",
    ),
    Template("Uploading more than {n} files at once to {product} queues the rest for {m} minutes."),
    Template(
        "Prices for {product} on the {plan} plan start at {n} euros per user per month.",
        mixed_query="How much does {product} {plan} cost?",
    ),
    Template("The {product} mobile app needs at least {m} GB of free space on the phone."),
    Template("{feature} for {product} is in public beta in the {region} region."),
    Template(
        "Part {code} is the replacement power adapter for the {product} and ships within {m} days.",
        lexical_query="{code} shipping",
    ),
    Template(
        "Error {error} means the {product} lost contact with its licence server; restart "
        "the service.",
        lexical_query="what does {error} mean",
    ),
    Template(
        "The {name} connector links {product} to legacy ERP systems over SFTP.",
        lexical_query="{name} connector setup",
    ),
    Template(
        "Firmware build {code} for the {product} disables the legacy pairing mode.",
        lexical_query="what changed in build {code}",
    ),
    Template(
        "Order the {name} mounting bracket to fix the {product} to a wall.",
        lexical_query="{name} bracket",
    ),
    Template(
        "SKU {code} bundles the {product} with a two-year extended service plan.",
        lexical_query="what is included in SKU {code}",
    ),
    Template(
        "The {name} theme pack changes the {product} icons and colour palette.",
        lexical_query="{name} theme",
    ),
]

# Policies the filler never mentions, each asked with (almost) no word of the passage.
SEMANTIC_NEEDLES = [
    (
        "Customers who cancel within the first fortnight are reimbursed in full, no questions "
        "asked.",
        "Can I get my money back if I quit after ten days?",
    ),
    (
        "Accounts that stay dormant for eighteen months are closed and their contents erased.",
        "What happens to my data if I don't log in for a year and a half?",
    ),
    (
        "Students and teachers receive a seventy percent reduction on every subscription tier.",
        "Is there an education discount for schools?",
    ),
    (
        "Our helpdesk is staffed around the clock, including weekends and public holidays.",
        "Can I reach customer service on a Sunday night?",
    ),
    (
        "Charities registered in the EU may use the software free of charge.",
        "Do non-profit organisations have to pay?",
    ),
    (
        "The desktop client cannot run on machines with less than four gigabytes of memory.",
        "What are the minimum RAM requirements for my computer?",
    ),
    (
        "Invoices can be settled by bank transfer, credit card or PayPal.",
        "Which payment methods do you accept?",
    ),
    (
        "Personal information is never sold to advertisers or other third parties.",
        "Do you share my data with marketing companies?",
    ),
    (
        "When a colleague leaves the company, an administrator can hand over their files to "
        "another member.",
        "How do I transfer ownership of documents from an employee who quit?",
    ),
    (
        "The interface is translated into Spanish, German, Japanese and eleven other languages.",
        "Can I switch the menus to my native tongue?",
    ),
    (
        "Screen readers such as JAWS and VoiceOver are fully supported.",
        "Is the product accessible for blind users?",
    ),
    (
        "Lost hardware is replaced free of charge once per year if reported within forty-eight "
        "hours.",
        "My device was stolen, will you send me a new one?",
    ),
    (
        "Passwords must contain at least twelve characters including a symbol.",
        "How long does my passphrase need to be?",
    ),
    (
        "Sessions end automatically after thirty minutes without any activity.",
        "Why am I logged out when I leave my computer idle for half an hour?",
    ),
    (
        "Our servers run entirely on electricity from wind and solar farms.",
        "Is your hosting powered by renewable energy?",
    ),
    (
        "A penetration test by an independent firm is carried out every spring.",
        "Do external auditors check your security each year?",
    ),
    (
        "Deliveries to islands and remote areas take up to three extra working days.",
        "Will shipping to the Shetlands be slower?",
    ),
    (
        "Gift vouchers never expire and can be combined with seasonal promotions.",
        "Is there a time limit on using a present card?",
    ),
    (
        "Parents can restrict what children see through the family controls.",
        "How do I stop my kids from accessing adult content?",
    ),
    (
        "Upgrading the operating system may require reinstalling the printer driver.",
        "After updating Windows my printing stopped working, what should I do?",
    ),
    (
        "Interns and contractors may be granted temporary seats that lapse after ninety days.",
        "Can I give a freelancer short-term access?",
    ),
    (
        "Every purchase plants a tree through our reforestation partner.",
        "Do you do anything for the environment when I buy?",
    ),
    (
        "The warehouse closes for stocktaking during the last week of December.",
        "Will orders ship over the Christmas holidays?",
    ),
    (
        "Recordings of video calls are stored for sixty days and then removed.",
        "How long can I watch back a past conference call?",
    ),
    (
        "Two people cannot edit the same cell at once; the second editor sees it locked.",
        "What happens if my coworker and I type into the spreadsheet simultaneously?",
    ),
    (
        "Newsletters can be unsubscribed from with a single click at the bottom of any email.",
        "How do I stop receiving your marketing messages?",
    ),
    (
        "The smartwatch companion app requires a phone paired over Bluetooth.",
        "Does the wearable need my mobile nearby to work?",
    ),
    (
        "Orders above two hundred euros qualify for complimentary express delivery.",
        "When is fast shipping free?",
    ),
    (
        "Older versions of a file can be restored from the timeline for up to one year.",
        "I overwrote my spreadsheet by mistake, can I get the previous copy back?",
    ),
    (
        "Leaked credentials trigger an immediate forced sign-out on all devices.",
        "What do you do if my password shows up in a data breach?",
    ),
    (
        "Veterans and first responders receive a lifetime reduction of fifteen percent.",
        "Do you offer discounts to military personnel and firefighters?",
    ),
    (
        "Uptime has been above 99.95 percent in each of the last twenty-four months.",
        "How reliable has the service been over the past two years?",
    ),
    (
        "Children under thirteen may only sign up with a guardian's consent.",
        "Can my 10-year-old create an account alone?",
    ),
]
SEMANTIC_HEADING = "Help centre"
LEXICAL_NEEDLES = 34
MIXED_NEEDLES = 33
# Share of chunks with a second sentence about the same product, for varied lengths.
SECOND_SENTENCE_SHARE = 0.3
# Unlabelled queries added to the labelled ones for the HNSW recall measurement.
RECALL_EXTRA_QUERIES = 100
EMBEDDING_BATCH = 4096
HIT_TOP_K = 5


class Category(StrEnum):
    LEXICAL = "lexical"
    SEMANTIC = "semantic"
    MIXED = "mixed"


@dataclass(frozen=True)
class Needle:
    category: Category
    chunk_index: int
    query: str


@dataclass
class Corpus:
    headings: list[str]
    texts: list[str]
    needles: list[Needle]
    unlabelled_queries: list[str]


def coined_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.sample(SYLLABLES, rng.choice([2, 3]))).capitalize())
    return sorted(names)


def slot_values(rng: random.Random, *, product: str, numbers: list[int], names: list[str]):
    """Values for every slot of the templates. Codes and coined names come from `numbers`
    and `names`: a needle passes one value reserved for it, the filler the shared pools."""
    letters = string.ascii_uppercase
    number = rng.choice(numbers)
    return {
        "product": product,
        "feature": rng.choice(FEATURES),
        "plan": rng.choice(PLANS),
        "region": rng.choice(REGIONS),
        "n": rng.randrange(10, 1000),
        "m": rng.randrange(2, 31),
        "version": f"{rng.randint(2, 9)}.{rng.randint(0, 30)}",
        "code": f"{rng.choice(letters)}{rng.choice(letters)}-{number}-{rng.choice(letters)}",
        "error": f"E{number}",
        "name": rng.choice(names),
    }


def sentence(template: Template, values: dict) -> str:
    text = template.text.format(**values)
    return text[0].upper() + text[1:]  # a feature may open it ("the audit log for …")


def corpus_generate(*, size: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    products = [f"{brand} {series}" for brand in BRANDS for series in SERIES]
    # Four-digit numbers (for part and error codes) and coined names: the needles take the
    # first ones and the filler never uses them, so each identifies exactly one chunk.
    numbers = rng.sample(range(1000, 10000), 9000)
    names = coined_names(rng, 800)
    rng.shuffle(names)
    needle_numbers, filler_numbers = numbers[:LEXICAL_NEEDLES], numbers[LEXICAL_NEEDLES:]
    needle_names, filler_names = names[:LEXICAL_NEEDLES], names[LEXICAL_NEEDLES:]
    lexical_templates = [t for t in TEMPLATES if t.lexical_query]
    mixed_templates = [t for t in TEMPLATES if t.mixed_query]

    def filler_values(product: str) -> dict:
        return slot_values(rng, product=product, numbers=filler_numbers, names=filler_names)

    # (template, product) pairs a mixed needle states: the filler must not state them again.
    reserved: set[tuple[Template, str]] = set()

    def filler_sentence(product: str, *, besides: Template | None = None) -> tuple[Template, str]:
        while True:
            template = rng.choice(TEMPLATES)
            if template is not besides and (template, product) not in reserved:
                return template, sentence(template, filler_values(product))

    def chunk_text(product: str, template: Template, first: str) -> str:
        if rng.random() < SECOND_SENTENCE_SHARE:
            return f"{first} {filler_sentence(product, besides=template)[1]}"
        return first

    needle_chunks: list[tuple[Category, str, str, str]] = []  # category, heading, text, query
    # Mixed needles first: every sentence written after them must avoid what they reserve.
    for index in range(MIXED_NEEDLES):
        template = mixed_templates[index % len(mixed_templates)]
        product = rng.choice([p for p in products if (template, p) not in reserved])
        reserved.add((template, product))
        values = filler_values(product)
        text = chunk_text(product, template, sentence(template, values))
        query = template.mixed_query.format(**values)
        needle_chunks.append((Category.MIXED, product, text, query))
    for index in range(LEXICAL_NEEDLES):
        template = lexical_templates[index % len(lexical_templates)]
        product = rng.choice(products)
        values = slot_values(
            rng, product=product, numbers=[needle_numbers[index]], names=[needle_names[index]]
        )
        text = chunk_text(product, template, sentence(template, values))
        query = template.lexical_query.format(**values)
        needle_chunks.append((Category.LEXICAL, product, text, query))
    for passage, query in SEMANTIC_NEEDLES:
        needle_chunks.append((Category.SEMANTIC, SEMANTIC_HEADING, passage, query))

    # The needles go to random places among the filler.
    needle_at = dict(zip(rng.sample(range(size), len(needle_chunks)), needle_chunks, strict=True))
    headings, texts, needles = [], [], []
    for position in range(size):
        if position in needle_at:
            category, heading, text, query = needle_at[position]
            needles.append(Needle(category, position, query))
        else:
            heading = rng.choice(products)
            text = chunk_text(heading, *filler_sentence(heading))
        headings.append(heading)
        texts.append(text)

    query_templates = [t.lexical_query or t.mixed_query for t in TEMPLATES]
    unlabelled = [
        rng.choice([q for q in query_templates if q]).format(**filler_values(rng.choice(products)))
        for _ in range(RECALL_EXTRA_QUERIES)
    ]
    return Corpus(headings=headings, texts=texts, needles=needles, unlabelled_queries=unlabelled)


def passages_for_embedding(corpus: Corpus) -> list[str]:
    from flywheel.services.indexing import passage_for_embedding

    return [
        passage_for_embedding(title="", heading=heading, text=text)
        for heading, text in zip(corpus.headings, corpus.texts, strict=True)
    ]


@dataclass(frozen=True)
class EmbeddingRun:
    vectors: np.ndarray
    passages_embedded: int  # all of them, or a sample when the matrix came from the cache
    seconds: float
    from_cache: bool
    mean_tokens: float


def embeddings_compute_or_load(passages: list[str], *, cache_dir: Path) -> EmbeddingRun:
    """Embed through the product's embed_texts in batches, or load the matrix a previous run
    cached for exactly these passages and this model; then a sample is embedded all the
    same, so that every run reports the embedding throughput."""
    from flywheel.ml.loading import embed_texts, load_embedder
    from flywheel.services.indexing import embedding_model_name

    tokenizer = load_embedder().tokenizer
    sample = passages[:: max(1, len(passages) // EMBEDDING_BATCH)][:EMBEDDING_BATCH]
    mean_tokens = sum(map(len, tokenizer(sample)["input_ids"])) / len(sample)

    digest = hashlib.sha256("\0".join([embedding_model_name(), *passages]).encode()).hexdigest()
    path = cache_dir / f"chunk-embeddings-{len(passages)}-{digest[:16]}.npy"
    if path.exists():
        started = time.perf_counter()
        embed_texts(sample)
        return EmbeddingRun(
            vectors=np.load(path),
            passages_embedded=len(sample),
            seconds=time.perf_counter() - started,
            from_cache=True,
            mean_tokens=mean_tokens,
        )

    started = time.perf_counter()
    parts = []
    for start in range(0, len(passages), EMBEDDING_BATCH):
        parts.append(embed_texts(passages[start : start + EMBEDDING_BATCH]))
        done = start + len(parts[-1])
        rate = done / (time.perf_counter() - started)
        print(f"  embedded {done:,}/{len(passages):,} ({rate:.0f}/s)", file=sys.stderr)
    seconds = time.perf_counter() - started
    vectors = np.concatenate(parts).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return EmbeddingRun(
        vectors=vectors,
        passages_embedded=len(passages),
        seconds=seconds,
        from_cache=False,
        mean_tokens=mean_tokens,
    )


# The two indexes a bulk load is faster without: every row inserted into an HNSW graph is a
# graph search, while a build after the load sorts and links once (and in parallel).
BULK_LOAD_INDEXES = ["chunk_embedding_hnsw", "chunk_search_vector_gin"]


def indexes_drop(names: list[str]) -> dict[str, str]:
    """Drop the indexes; return their definitions as the migrations made them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'flywheel_chunk' AND indexname = ANY(%s)",
            [names],
        )
        definitions = dict(cursor.fetchall())
        for name in definitions:
            cursor.execute(f'DROP INDEX "{name}"')
    return definitions


def index_build(definition: str, *, maintenance_work_mem: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        # The HNSW graph of 100k vectors does not fit the default 64 MB; past it pgvector
        # goes on building much more slowly.
        cursor.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)", [maintenance_work_mem]
        )
        started = time.perf_counter()
        cursor.execute(definition)
        return time.perf_counter() - started


def chunks_copy(
    *,
    database_url: str,
    project_id: int,
    index_version_id: int,
    corpus: Corpus,
    passages: list[str],
    vectors: np.ndarray,
) -> float:
    """Binary COPY of every chunk with ids 1..N, so that a needle's id is its position + 1."""
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from flywheel.services.indexing import embedding_model_name, passage_hash

    model = embedding_model_name()
    created_at = datetime.now(UTC)
    columns = "id, project_id, index_version_id, kind, position, heading, text, metadata, "
    columns += "content_hash, embedding, created_at"
    types = [
        "bigint",
        "bigint",
        "bigint",
        "varchar",
        "integer",
        "text",
        "text",
        "jsonb",
        "varchar",
        "vector",
        "timestamptz",
    ]
    with psycopg.connect(database_url) as connection:
        register_vector(connection)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY flywheel_chunk ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for index, (heading, text, passage) in enumerate(
                    zip(corpus.headings, corpus.texts, passages, strict=True)
                ):
                    copy.write_row(
                        (
                            index + 1,
                            project_id,
                            index_version_id,
                            "document",
                            0,
                            heading,
                            text,
                            Jsonb({}),
                            passage_hash(passage=passage, embedding_model=model),
                            vectors[index],
                            created_at,
                        )
                    )
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('flywheel_chunk', 'id'), %s)",
                [len(passages)],
            )
        connection.commit()
        return time.perf_counter() - started


def chunk_id(position: int) -> int:
    return position + 1


def exact_ranking(*, index_version_id: int, embedding: np.ndarray, limit: int) -> list[int]:
    """The true nearest neighbours, by the same distance as vector_ranking."""
    from django.db import connection, transaction

    vector = "[" + ",".join(f"{value:.7f}" for value in embedding) + "]"
    with transaction.atomic(), connection.cursor() as cursor:
        # No index scan: PostgreSQL compares the query with every row and keeps the best.
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(
            "SELECT id FROM flywheel_chunk WHERE index_version_id = %s "
            "ORDER BY embedding <=> %s::vector LIMIT %s",
            [index_version_id, vector, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def vector_ranking_plan(*, index_version_id: int, embedding: np.ndarray) -> str:
    """The plan of the query vector_ranking sends, captured as it runs, to show that the
    figures are the HNSW index's and not a sequential scan's."""
    from django.db import connection

    from flywheel.selectors.retrieval import vector_ranking

    sent: list[tuple[str, list]] = []

    def capture(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("SELECT"):
            sent.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        vector_ranking(index_version_id=index_version_id, embedding=embedding, limit=10)
    sql, params = sent[-1]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return " / ".join(row[0].strip() for row in cursor.fetchall()[:2])


def milliseconds_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def timed_searches(search, query_vectors: np.ndarray) -> tuple[list[list[int]], list[float]]:
    """The ids each query finds, and milliseconds per query."""
    results, elapsed = [], []
    for vector in query_vectors:
        started = time.perf_counter()
        results.append(search(vector))
        elapsed.append(milliseconds_since(started))
    return results, elapsed


def exact_searches(
    *, index_version_id: int, query_vectors: np.ndarray
) -> tuple[list[list[int]], list[float]]:
    """The true top 10 of every query (after 20 to warm the caches), with its latency."""

    def exact(vector: np.ndarray) -> list[int]:
        return exact_ranking(index_version_id=index_version_id, embedding=vector, limit=10)

    for vector in query_vectors[:20]:
        exact(vector)
    return timed_searches(exact, query_vectors)


def hnsw_against_exact(
    *,
    index_version_id: int,
    query_vectors: np.ndarray,
    ef_search_values: list[int],
    truths: list[list[int]],
    build: str,
) -> list[list[str]]:
    """Recall@10 of vector_ranking (HNSW) against exact search, with the latency of each, for
    the product's ef_search and the others asked for, on the index as `build` made it."""
    from flywheel.selectors import retrieval

    def hnsw(vector: np.ndarray) -> list[int]:
        ranking = retrieval.vector_ranking(
            index_version_id=index_version_id, embedding=vector, limit=10
        )
        return [chunk for chunk, _ in ranking]

    for vector in query_vectors[:20]:  # warm the caches
        hnsw(vector)
    rows = []
    product_ef_search = retrieval.HNSW_EF_SEARCH
    for ef_search in ef_search_values:
        # vector_ranking reads the constant at every call: the same code runs with another
        # candidate list.
        retrieval.HNSW_EF_SEARCH = ef_search
        try:
            found, hnsw_ms = timed_searches(hnsw, query_vectors)
        finally:
            retrieval.HNSW_EF_SEARCH = product_ef_search
        recall = np.mean(
            [len(set(f) & set(t)) / len(t) for f, t in zip(found, truths, strict=True)]
        )
        name = f"ef_search {ef_search}"
        if ef_search == product_ef_search:
            name += " (the product's)"
        rows.append(
            [build, name, f"{recall:.3f}", *(f"{value:.1f}" for value in percentiles(hnsw_ms))]
        )
    return rows


def hnsw_definition(definition: str, *, ef_construction: int) -> str:
    """The HNSW index's definition with another ef_construction."""
    return re.sub(r"ef_construction='?\d+'?", f"ef_construction='{ef_construction}'", definition)


def hnsw_build_parameters(definition: str) -> str:
    m = re.search(r"\bm='?(\d+)", definition)
    ef_construction = re.search(r"ef_construction='?(\d+)", definition)
    return f"m {m.group(1) if m else '?'}, ef_construction " + (
        ef_construction.group(1) if ef_construction else "?"
    )


def keyword_any_term_every_match(
    *, index_version_id: int, query: str, limit: int, filters: dict | None = None
):
    """The keyword query the product had before, kept to measure against: every row matching
    any term (OR) is ranked and sorted."""
    from django.db import connection

    assert not filters, "the needle set asks without filters"
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', %s)::text, "
            "' & ', ' | '), '')::tsquery AS query) "
            "SELECT id, ts_rank_cd(search_vector, q.query, 32) AS score "
            "FROM flywheel_chunk, q "
            "WHERE index_version_id = %s AND search_vector @@ q.query "
            "ORDER BY score DESC, id LIMIT %s",
            [query, index_version_id, limit],
        )
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def keyword_any_term_first_matches(
    *, index_version_id: int, query: str, limit: int, filters: dict | None = None, rows: int
):
    """Any term (OR), but only the first `rows` matches the index hands back are ranked: a
    bounded cost, with candidates chosen by where rows lie on disk."""
    from django.db import connection

    assert not filters, "the needle set asks without filters"
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', %s)::text, "
            "' & ', ' | '), '')::tsquery AS query), "
            "candidate AS (SELECT id, search_vector FROM flywheel_chunk, q "
            "WHERE index_version_id = %s AND search_vector @@ q.query LIMIT %s) "
            "SELECT id, ts_rank_cd(search_vector, q.query, 32) AS score FROM candidate, q "
            "ORDER BY score DESC, id LIMIT %s",
            [query, index_version_id, rows, limit],
        )
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def keyword_alternatives() -> dict[str, Callable]:
    """The keyword queries measured side by side, by name; the product's is marked."""
    from flywheel.selectors import retrieval

    product_rows = retrieval.KEYWORD_RARE_TERM_ROWS
    alternatives: dict[str, Callable] = {
        "any term, every match ranked (before)": keyword_any_term_every_match,
        "any term, first 2,000 matches ranked": partial(keyword_any_term_first_matches, rows=2000),
    }
    product_may_lack = retrieval.KEYWORD_FALLBACK_MAY_LACK
    for rows in sorted({100, 500, 2000, product_rows}):
        for may_lack in sorted({0, 1, product_may_lack}):
            fallback = "AND fallback"
            if may_lack:
                fallback += f", then rows lacking {may_lack} common term"
            name = f"rare terms (≤ {rows:,} rows) + {fallback}"
            if (rows, may_lack) == (product_rows, product_may_lack):
                name += " (the product's)"
            alternatives[name] = partial(
                retrieval.keyword_ranking, rare_term_rows=rows, fallback_may_lack=may_lack
            )
    return alternatives


@dataclass
class ModeRun:
    ranks: list[int | None]  # per needle: its rank in the top HIT_TOP_K, or None
    embed_ms: list[float]
    retrieve_ms: list[float]

    def hit_rate(self, k: int, needle_indexes: list[int] | None = None) -> float:
        ranks = self.ranks if needle_indexes is None else [self.ranks[i] for i in needle_indexes]
        return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


@contextmanager
def keyword_query_swapped(keyword_query: Callable | None) -> Iterator[None]:
    """retrieve() with `keyword_query` in place of the product's keyword_ranking (retrieve
    looks the function up at every call); None keeps the product's."""
    from flywheel.selectors import retrieval

    product_keyword_ranking = retrieval.keyword_ranking
    retrieval.keyword_ranking = keyword_query or product_keyword_ranking
    try:
        yield
    finally:
        retrieval.keyword_ranking = product_keyword_ranking


def labelled_queries_run(
    *, project, index_version, needles: list[Needle], mode, keyword_query: Callable | None = None
) -> ModeRun:
    """Ask every labelled query through retrieve() in `mode`, with `keyword_query` as the
    keyword side if given; note where the needle ranks."""
    from flywheel.selectors.retrieval import RetrievalOptions, retrieve

    options = RetrievalOptions(top_k=HIT_TOP_K, mode=mode)
    with keyword_query_swapped(keyword_query):
        retrieve(
            project=project, query=needles[0].query, options=options, index_version=index_version
        )
        run = ModeRun(ranks=[], embed_ms=[], retrieve_ms=[])
        for needle in needles:
            result = retrieve(
                project=project, query=needle.query, options=options, index_version=index_version
            )
            found = [chunk.chunk_id for chunk in result.chunks]
            target = chunk_id(needle.chunk_index)
            run.ranks.append(found.index(target) + 1 if target in found else None)
            run.embed_ms.append(result.timings_ms["embed_ms"])
            run.retrieve_ms.append(result.timings_ms["retrieve_ms"])
    return run


def load_report(
    *,
    corpus,
    passages,
    embedding,
    generate_seconds,
    copy_seconds,
    build_seconds,
    maintenance_work_mem,
    hnsw_build: str,
) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_table_size('flywheel_chunk')), "
            "pg_size_pretty(pg_relation_size('chunk_embedding_hnsw')), "
            "pg_size_pretty(pg_relation_size('chunk_search_vector_gin')), "
            "pg_size_pretty(pg_total_relation_size('flywheel_chunkterm')), "
            "(SELECT count(*) FROM flywheel_chunkterm)"
        )
        table_size, hnsw_size, gin_size, terms_size, terms = cursor.fetchone()
    rate = embedding.passages_embedded / embedding.seconds
    if embedding.from_cache:
        embedding_figure = (
            f"{rate:.0f} passages/s on a sample of {embedding.passages_embedded:,} "
            "(the matrix came from var/bench-cache)"
        )
    else:
        embedding_figure = f"{rate:.0f} passages/s, {embedding.seconds:.0f} s in all"
    corpus_figure = (
        f"{len(passages):,} chunks, {len(corpus.needles)} needles, "
        f"{embedding.mean_tokens:.0f} tokens per passage, generated in {generate_seconds:.1f} s"
    )
    hnsw_step = f"HNSW build ({hnsw_build}, maintenance_work_mem {maintenance_work_mem})"
    rows = [
        ["corpus", corpus_figure],
        ["embedding (embed_texts, all-MiniLM-L6-v2)", embedding_figure],
        [
            "binary COPY into flywheel_chunk, no HNSW/GIN index (term counts kept by trigger)",
            f"{copy_seconds:.1f} s",
        ],
        [hnsw_step, f"{build_seconds['chunk_embedding_hnsw']:.1f} s"],
        ["GIN build (search_vector)", f"{build_seconds['chunk_search_vector_gin']:.1f} s"],
        ["sizes: table / HNSW / GIN", f"{table_size} / {hnsw_size} / {gin_size}"],
        ["term counts (flywheel_chunkterm)", f"{terms:,} lexemes, {terms_size}"],
    ]
    return table(["load step", "figure"], rows)


def hit_report(runs: dict, needles: list[Needle]) -> tuple[str, str]:
    """Hit rates and latency per mode, then hit rates per kind of query."""
    overall = []
    for name, run in runs.items():
        retrieve_p50, retrieve_p95 = percentiles(run.retrieve_ms)
        overall.append(
            [
                name,
                f"{run.hit_rate(1):.2f}",
                f"{run.hit_rate(HIT_TOP_K):.2f}",
                f"{retrieve_p50:.1f}",
                f"{retrieve_p95:.1f}",
                f"{percentiles(run.embed_ms)[0]:.1f}",
            ]
        )
    headers = [
        "retrieval (mode · keyword query)",
        "hit@1",
        f"hit@{HIT_TOP_K}",
        "retrieve p50 ms",
        "retrieve p95 ms",
        "embed p50 ms",
    ]

    by_category = {
        category: [i for i, needle in enumerate(needles) if needle.category == category]
        for category in Category
    }
    per_category = [
        [
            name,
            *(
                f"{run.hit_rate(1, indexes):.2f} / {run.hit_rate(HIT_TOP_K, indexes):.2f}"
                for indexes in by_category.values()
            ),
        ]
        for name, run in runs.items()
    ]
    category_headers = [f"{category} ({len(indexes)})" for category, indexes in by_category.items()]
    return table(headers, overall), table(["retrieval", *category_headers], per_category)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="corpus size")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--maintenance-work-mem", default="1GB", help="for the index builds after the load"
    )
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="+",
        default=[40, 100, 150, 200, 300, 400],
        help="HNSW candidate-list sizes to measure recall at",
    )
    parser.add_argument(
        "--ef-construction",
        type=int,
        nargs="*",
        default=[128],
        help="HNSW builds to measure the same curve on, after the product's",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPOSITORY_ROOT / "var" / "bench-cache",
        help="where embedding matrices are kept between runs",
    )
    args = parser.parse_args()
    run_started = time.perf_counter()

    # A database of its own, so that other benchmarks can run beside it.
    database_url = bench_django_setup("flywheel_bench_retrieval")
    print(machine_context())
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · retrieval over {args.chunks:,} chunks")

    from django.db import connection

    from flywheel.ml.loading import embed_texts
    from flywheel.models import Project
    from flywheel.selectors.retrieval import RetrievalMode
    from flywheel.services import index_version_ensure_active

    started = time.perf_counter()
    corpus = corpus_generate(size=args.chunks, seed=args.seed)
    passages = passages_for_embedding(corpus)
    generate_seconds = time.perf_counter() - started
    embedding = embeddings_compute_or_load(passages, cache_dir=args.cache_dir)

    project = Project.objects.create(slug="bench-retrieval", name="Bench: retrieval")
    index_version = index_version_ensure_active(project=project)
    definitions = indexes_drop(BULK_LOAD_INDEXES)
    copy_seconds = chunks_copy(
        database_url=database_url,
        project_id=project.pk,
        index_version_id=index_version.pk,
        corpus=corpus,
        passages=passages,
        vectors=embedding.vectors,
    )
    build_seconds = {
        name: index_build(definitions[name], maintenance_work_mem=args.maintenance_work_mem)
        for name in BULK_LOAD_INDEXES
    }
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE flywheel_chunk")
    print()
    print(
        load_report(
            corpus=corpus,
            passages=passages,
            embedding=embedding,
            generate_seconds=generate_seconds,
            copy_seconds=copy_seconds,
            build_seconds=build_seconds,
            maintenance_work_mem=args.maintenance_work_mem,
            hnsw_build=hnsw_build_parameters(definitions["chunk_embedding_hnsw"]),
        )
    )

    query_vectors = embed_texts([n.query for n in corpus.needles] + corpus.unlabelled_queries)
    plan = vector_ranking_plan(index_version_id=index_version.pk, embedding=query_vectors[0])
    print(f"\nplan of vector_ranking: {plan}")
    print(f"\nHNSW against exact search, {len(query_vectors)} queries, top 10:\n")
    truths, exact_ms = exact_searches(
        index_version_id=index_version.pk, query_vectors=query_vectors
    )
    product_build = hnsw_build_parameters(definitions["chunk_embedding_hnsw"])
    rows = hnsw_against_exact(
        index_version_id=index_version.pk,
        query_vectors=query_vectors,
        ef_search_values=args.ef_search,
        truths=truths,
        build=f"{product_build} (the product's)",
    )
    rows.append(
        ["exact (no index scan)", "", "1.000", *(f"{v:.1f}" for v in percentiles(exact_ms))]
    )
    curve_headers = ["HNSW build", "search", "recall@10", "p50 ms", "p95 ms"]
    print(table(curve_headers, rows))

    runs = {
        "vector": labelled_queries_run(
            project=project,
            index_version=index_version,
            needles=corpus.needles,
            mode=RetrievalMode.VECTOR,
        )
    }
    for mode in (RetrievalMode.KEYWORD, RetrievalMode.HYBRID):
        for name, keyword_query in keyword_alternatives().items():
            print(f"  {mode.value} · {name}", file=sys.stderr)
            runs[f"{mode.value} · {name}"] = labelled_queries_run(
                project=project,
                index_version=index_version,
                needles=corpus.needles,
                mode=mode,
                keyword_query=keyword_query,
            )
    # Hybrid with the product's keyword query at each ef_search of the curve.
    from flywheel.selectors import retrieval

    product_ef_search = retrieval.HNSW_EF_SEARCH
    for ef_search in args.ef_search:
        if ef_search == product_ef_search:
            continue
        retrieval.HNSW_EF_SEARCH = ef_search
        try:
            runs[f"hybrid · the product's keyword query · ef_search {ef_search}"] = (
                labelled_queries_run(
                    project=project,
                    index_version=index_version,
                    needles=corpus.needles,
                    mode=RetrievalMode.HYBRID,
                )
            )
        finally:
            retrieval.HNSW_EF_SEARCH = product_ef_search
    overall, per_category = hit_report(runs, corpus.needles)
    print(
        f"\n{len(corpus.needles)} labelled queries through retrieve() (ef_search "
        f"{product_ef_search} unless named): is the needle at rank 1, "
        f"in the top {HIT_TOP_K}? Latency of the search (retrieve_ms) and of the query "
        "embedding (embed_ms).\n"
    )
    print(overall)
    print(f"\nhit@1 / hit@{HIT_TOP_K} by kind of query:\n")
    print(per_category)
    other_builds = [
        value for value in args.ef_construction if f"ef_construction {value}" not in product_build
    ]
    if other_builds:
        print(
            "\nThe same curve on the HNSW index rebuilt with another ef_construction (candidate "
            "build parameters; the hit rates above are the product's build):\n"
        )
        rows = []
        for ef_construction in other_builds:
            definition = hnsw_definition(
                definitions["chunk_embedding_hnsw"], ef_construction=ef_construction
            )
            indexes_drop(["chunk_embedding_hnsw"])
            seconds = index_build(definition, maintenance_work_mem=args.maintenance_work_mem)
            rows += hnsw_against_exact(
                index_version_id=index_version.pk,
                query_vectors=query_vectors,
                ef_search_values=args.ef_search,
                truths=truths,
                build=f"{hnsw_build_parameters(definition)}, built in {seconds:.0f} s",
            )
        print(table(curve_headers, rows))
    elapsed = time.perf_counter() - run_started
    print(f"\ntotal run time: {elapsed:.0f} s, load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
