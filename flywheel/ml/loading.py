"""The one place models are loaded. Each process loads a model once and keeps it.

Every model is a local folder (bundled or configured); nothing is fetched from a hub.
"""

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flywheel.ml.bundled import ModelNotAvailable, base_model_path, embedding_model_path

_lock = threading.Lock()
_embedders: dict[Path, object] = {}
_generators: dict[Path, "Generator"] = {}

EMBEDDING_DIMENSIONS = 384


@dataclass
class Generator:
    """A causal language model with its tokenizer."""

    path: Path
    model: object
    tokenizer: object

    def chat(self, messages: list[dict], *, max_new_tokens: int = 128) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        new_tokens = output[0][inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def _require_folder(path: Path, *, what: str) -> None:
    if not (path / "config.json").exists():
        raise ModelNotAvailable(
            f"No {what} model at {path}: run `python manage.py prepare_models`, "
            "or point the setting at a local model folder"
        )


def load_embedder(path: Path | None = None):
    """A sentence-transformers model; `path` defaults to FLYWHEEL_EMBEDDING_MODEL."""
    path = (path or embedding_model_path()).resolve()
    with _lock:
        if path not in _embedders:
            _require_folder(path, what="embedding")
            from sentence_transformers import SentenceTransformer

            _embedders[path] = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return _embedders[path]


def embed_texts(texts: list[str], *, path: Path | None = None) -> np.ndarray:
    """Unit-length embeddings, one row per text (cosine similarity is then a dot product)."""
    embedder = load_embedder(path)
    return embedder.encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def load_generator(path: Path | None = None) -> Generator:
    """The base generator; `path` defaults to FLYWHEEL_BASE_MODEL."""
    path = (path or base_model_path()).resolve()
    with _lock:
        if path not in _generators:
            _require_folder(path, what="generator")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
            model.eval()
            _generators[path] = Generator(path=path, model=model, tokenizer=tokenizer)
        return _generators[path]
