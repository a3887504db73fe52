import hashlib
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from flywheel.ml.bundled import base_model_path, bundled_generator_prepare, embedding_model_path
from flywheel.ml.loading import EMBEDDING_DIMENSIONS, embed_texts, load_generator

# Under the models folder: the fingerprint of the model files that last passed the check.
CHECKED_MARKER = "flywheel-checked.json"


def model_files_fingerprint(folders: list[Path]) -> str:
    """A hash of every file's path, size and modification time under `folders`: it changes
    when a model is replaced, converted again or configured elsewhere, without reading the
    weights themselves."""
    digest = hashlib.sha256(str(EMBEDDING_DIMENSIONS).encode())
    for folder in folders:
        digest.update(f"\0{folder.resolve()}".encode())
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                status = path.stat()
                relative = path.relative_to(folder).as_posix()
                digest.update(f"\0{relative}\0{status.st_size}\0{status.st_mtime_ns}".encode())
    return digest.hexdigest()


def checked_marker_path() -> Path:
    return Path(settings.MODELS_DIR) / CHECKED_MARKER


def recorded_fingerprint() -> str:
    try:
        return json.loads(checked_marker_path().read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return ""


def fingerprint_record(fingerprint: str) -> None:
    marker = checked_marker_path()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}, indent=2))


class Command(BaseCommand):
    help = (
        "Convert the bundled SmolLM2 generator to safetensors under var/models (once), then "
        "check that the embedding and generator models load and produce output. The check "
        "is skipped while the model files are the ones that last passed it."
    )
    # It runs before every start and needs no URLs, API or database: checking those is the
    # server's business, and would only slow a start down.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="check the models even if nothing changed"
        )

    def handle(self, *args, force: bool = False, **options) -> None:
        if settings.FLYWHEEL_BASE_MODEL:
            self.stdout.write(f"Generator: configured folder {base_model_path()}")
        else:
            result = bundled_generator_prepare()
            verb = "converted into" if result.converted else "already prepared in"
            self.stdout.write(f"Generator: bundled SmolLM2-135M-Instruct {verb} {result.path}")

        fingerprint = model_files_fingerprint([embedding_model_path(), base_model_path()])
        if not force and fingerprint == recorded_fingerprint():
            self.stdout.write(
                self.style.SUCCESS("Models ready: unchanged since they last passed the check.")
            )
            return

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
        fingerprint_record(fingerprint)
        self.stdout.write(self.style.SUCCESS(f"Models ready. The generator says: {answer!r}"))
