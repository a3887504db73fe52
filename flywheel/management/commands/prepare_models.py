from django.core.management.base import BaseCommand

from flywheel.ml.bundled import base_model_path, bundled_generator_prepare, embedding_model_path
from flywheel.ml.loading import EMBEDDING_DIMENSIONS, embed_texts, load_generator


class Command(BaseCommand):
    help = (
        "Convert the bundled SmolLM2 generator to safetensors under var/models (once), then "
        "check that the embedding and generator models load and produce output."
    )

    def handle(self, *args, **options) -> None:
        from django.conf import settings

        if settings.FLYWHEEL_BASE_MODEL:
            self.stdout.write(f"Generator: configured folder {base_model_path()}")
        else:
            result = bundled_generator_prepare()
            verb = "converted into" if result.converted else "already prepared in"
            self.stdout.write(f"Generator: bundled SmolLM2-135M-Instruct {verb} {result.path}")

        vectors = embed_texts(["Flywheel checks its embedding model."])
        if vectors.shape != (1, EMBEDDING_DIMENSIONS):
            raise SystemExit(
                f"The embedding model at {embedding_model_path()} gives vectors of shape "
                f"{vectors.shape}; the knowledge base stores {EMBEDDING_DIMENSIONS} dimensions"
            )
        self.stdout.write(f"Embeddings: {embedding_model_path()} ({vectors.shape[1]} dimensions)")

        answer = (
            load_generator()
            .chat([{"role": "user", "content": "Say hello in one word."}], max_new_tokens=8)
            .text
        )
        if not answer:
            raise SystemExit("The generator produced no text")
        self.stdout.write(self.style.SUCCESS(f"Models ready. The generator says: {answer!r}"))
