"""The bundled models: converted once, loaded from local folders, and producing output."""

import numpy as np

from flywheel.ml.bundled import PREPARED_MARKER, bundled_generator_prepare
from flywheel.ml.loading import EMBEDDING_DIMENSIONS, embed_texts, load_embedder, load_generator


def test_preparing_the_generator_twice_converts_only_once_and_it_answers(tmp_path):
    target = tmp_path / "generator"

    first = bundled_generator_prepare(target_dir=target)
    weights = target / "model.safetensors"
    converted_at = weights.stat().st_mtime_ns
    second = bundled_generator_prepare(target_dir=target)

    assert first.converted is True
    assert second.converted is False
    assert weights.stat().st_mtime_ns == converted_at
    assert (target / PREPARED_MARKER).exists()
    assert not list(tmp_path.glob(".converting-*"))

    answer = load_generator(target).chat(
        [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=16
    )
    assert "Paris" in answer.text
    assert answer.prompt_tokens > 5
    assert 0 < answer.completion_tokens <= 16


def test_the_loader_keeps_one_model_per_process():
    assert load_embedder() is load_embedder()
    assert load_generator() is load_generator()


def test_embeddings_are_unit_vectors_that_place_paraphrases_close():
    vectors = embed_texts(
        [
            "How do I get a refund for my invoice?",
            "Can I have my money back after being billed?",
            "The bin keeps deleted notes for thirty days.",
        ]
    )
    assert vectors.shape == (3, EMBEDDING_DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.2
