"""The one place models are loaded. Each process loads a model once and keeps it.

Every model is a local folder (bundled or configured); nothing is fetched from a hub. A
generator may carry LoRA adapters: they are loaded next to the base weights on first use and
switched per request, so promoting a new adapter needs no restart. Adapters and fine-tuned
embedding models named by an artifact reference are fetched from the artifact store into this
process's cache first (flywheel/artifacts.py).
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flywheel.artifacts import artifact_folder
from flywheel.ml.bundled import ModelNotAvailable, base_model_path, embedding_model_path

_registry_lock = threading.Lock()
_embedders: dict[Path, object] = {}
_generators: dict[Path, "Generator"] = {}

EMBEDDING_DIMENSIONS = 384

# Embeddings already computed, by model folder and the sha256 of the text: a question asked
# again (curation meets popular ones thousands of times, retrieval the same query) is embedded
# once per process. Least recently used first out; full, it holds about 30 MiB of vectors.
EMBEDDING_CACHE_MAX_TEXTS = 20_000
_embedding_cache: OrderedDict[tuple[Path, bytes], np.ndarray] = OrderedDict()
_embedding_cache_lock = threading.Lock()


@dataclass
class GeneratedText:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length", as in the OpenAI API


@dataclass
class Generator:
    """A causal language model with its tokenizer and the LoRA adapters loaded into it.

    One generation at a time per process: the active adapter is model-wide state, and on a
    CPU a second concurrent generation would only share the same cores.
    """

    path: Path
    model: object
    tokenizer: object
    adapters: dict[str, str] = field(default_factory=dict)  # adapter folder -> adapter name
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _encode(self, messages: list[dict]):
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return int(self._encode(messages)["input_ids"].shape[1])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @contextmanager
    def _adapter(self, adapter_path: str | None):
        """Activate `adapter_path` (or none) for the duration; the caller holds the lock."""
        from peft import PeftModel

        if adapter_path:
            adapter_path = str(artifact_folder(adapter_path).resolve())
            if adapter_path not in self.adapters:
                name = f"adapter_{len(self.adapters)}"
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(adapter_path, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(
                        self.model, adapter_path, adapter_name=name
                    )
                self.model.eval()
                self.adapters[adapter_path] = name
            self.model.set_adapter(self.adapters[adapter_path])
            yield
        elif isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield
        else:
            yield

    def _generate_kwargs(self, *, max_new_tokens: int, temperature: float, top_p: float | None):
        kwargs = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
            kwargs["top_p"] = top_p if top_p is not None else 1.0
        else:  # greedy: silence the sampling defaults of the model's generation config
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def chat(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float | None = None,
        adapter_path: str | None = None,
    ) -> GeneratedText:
        import torch

        inputs = self._encode(messages)
        prompt_tokens = inputs["input_ids"].shape[1]
        kwargs = self._generate_kwargs(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        )
        with self.lock, self._adapter(adapter_path), torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[0][prompt_tokens:]
        completion_tokens = int(new_tokens.shape[0])
        return GeneratedText(
            text=self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=completion_tokens,
            finish_reason="length" if completion_tokens >= max_new_tokens else "stop",
        )

    def chat_stream(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float | None = None,
        adapter_path: str | None = None,
    ) -> Iterator[str | GeneratedText]:
        """Yield text pieces as they are generated, then one GeneratedText with the totals.

        Closing the iterator early (a client that went away) stops the generation.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancelled = threading.Event()

        class _StopWhenCancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return cancelled.is_set()

        inputs = self._encode(messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300
        )
        kwargs = self._generate_kwargs(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        )
        produced: dict[str, object] = {}

        def _run() -> None:
            try:
                with torch.inference_mode():
                    produced["output"] = self.model.generate(
                        **inputs,
                        **kwargs,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopWhenCancelled()]),
                    )
            except BaseException as error:  # surfaced to the consumer below
                produced["error"] = error
                streamer.end()

        with self.lock, self._adapter(adapter_path):
            worker = threading.Thread(target=_run, name="generate", daemon=True)
            worker.start()
            try:
                pieces = []
                for piece in streamer:
                    if piece:
                        pieces.append(piece)
                        yield piece
            finally:
                cancelled.set()
                worker.join()
        if "error" in produced:
            raise produced["error"]
        completion_tokens = int(produced["output"].shape[1]) - prompt_tokens
        yield GeneratedText(
            text="".join(pieces).strip(),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason="length" if completion_tokens >= max_new_tokens else "stop",
        )


def torch_threads_limit() -> None:
    """Several model-running processes on one machine (web, workers) each take every core by
    default and then slow one another down many times over; FLYWHEEL_TORCH_THREADS caps it."""
    from django.conf import settings

    if settings.FLYWHEEL_TORCH_THREADS:
        import torch

        torch.set_num_threads(settings.FLYWHEEL_TORCH_THREADS)


def _require_folder(path: Path, *, what: str) -> None:
    if not (path / "config.json").exists():
        raise ModelNotAvailable(
            f"No {what} model at {path}: run `python manage.py prepare_models`, "
            "or point the setting at a local model folder"
        )


def _embedder_folder(path: Path | str | None) -> Path:
    return artifact_folder(path or embedding_model_path()).resolve()


def load_embedder(path: Path | str | None = None):
    """A sentence-transformers model; `path` (a folder or an artifact reference) defaults to
    FLYWHEEL_EMBEDDING_MODEL."""
    path = _embedder_folder(path)
    with _registry_lock:
        if path not in _embedders:
            _require_folder(path, what="embedding")
            torch_threads_limit()
            from sentence_transformers import SentenceTransformer

            _embedders[path] = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return _embedders[path]


def embed_texts(texts: list[str], *, path: Path | str | None = None) -> np.ndarray:
    """Unit-length embeddings, one row per text (cosine similarity is then a dot product).

    Each distinct text is embedded once: a text repeated in `texts`, or embedded earlier by
    this process with the same model, takes the vector already computed (the model gives a
    text the same vector whatever it is batched with, to float rounding)."""
    embedder = load_embedder(path)
    if not texts:
        return embedder.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    folder = _embedder_folder(path)
    keys = [(folder, hashlib.sha256(text.encode()).digest()) for text in texts]
    vectors: dict[tuple[Path, bytes], np.ndarray] = {}
    with _embedding_cache_lock:
        for key in keys:
            if key in _embedding_cache:
                _embedding_cache.move_to_end(key)
                vectors[key] = _embedding_cache[key]
    missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in vectors}
    if missing:
        computed = embedder.encode(
            list(missing.values()),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        with _embedding_cache_lock:
            for key, vector in zip(missing, computed, strict=True):
                vectors[key] = _embedding_cache[key] = vector.copy()
            while len(_embedding_cache) > EMBEDDING_CACHE_MAX_TEXTS:
                _embedding_cache.popitem(last=False)
    return np.array([vectors[key] for key in keys])


def load_generator(path: Path | str | None = None) -> Generator:
    """A generator; `path` defaults to FLYWHEEL_BASE_MODEL."""
    path = Path(path or base_model_path()).resolve()
    with _registry_lock:
        if path not in _generators:
            _require_folder(path, what="generator")
            torch_threads_limit()
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
            model.eval()
            _generators[path] = Generator(path=path, model=model, tokenizer=tokenizer)
        return _generators[path]
