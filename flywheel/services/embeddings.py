"""Embeddings for clients (`POST /v1/embeddings`): texts embedded by the retriever of the
project's active index version, so that a client's vectors compare with the index's."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flywheel.ml.loading import embed_texts, load_embedder
from flywheel.models import Project
from flywheel.services.served_models import retriever_resolve


@dataclass(frozen=True)
class Embeddings:
    model: str
    # One unit-length row per text, in the order given.
    vectors: np.ndarray
    # The tokens the model read: a text longer than its window is cut to the window.
    prompt_tokens: int


def embeddings_create(*, project: Project, model: str, texts: list[str]) -> Embeddings:
    """Raises ModelNotFound when the project serves no embedding model named `model`."""
    retriever = retriever_resolve(project=project, name=model)
    path = Path(retriever.path)
    embedder = load_embedder(path)
    read = embedder.tokenizer(texts, truncation=True, max_length=embedder.max_seq_length)
    return Embeddings(
        model=retriever.name,
        vectors=embed_texts(texts, path=path),
        prompt_tokens=sum(len(ids) for ids in read["input_ids"]),
    )
