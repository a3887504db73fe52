"""`manage.py prepare_models` before every start: the models are loaded and run only when
their files changed since they last passed the check."""

import os

from django.core.management import call_command

from flywheel.management.commands.prepare_models import model_files_fingerprint
from flywheel.ml.bundled import default_base_model_dir

SKIPPED = "Models ready: unchanged since they last passed the check."


def test_a_second_start_skips_the_check_until_forced(settings, tmp_path, capsys, one_torch_thread):
    settings.FLYWHEEL_BASE_MODEL = str(default_base_model_dir())  # prepared by `make models`
    settings.MODELS_DIR = tmp_path  # where this test's record of the check goes

    call_command("prepare_models")
    first = capsys.readouterr().out
    call_command("prepare_models")
    second = capsys.readouterr().out
    call_command("prepare_models", "--force")
    forced = capsys.readouterr().out

    assert "The generator says:" in first and SKIPPED not in first
    assert second.splitlines()[-1] == SKIPPED and "Embeddings:" not in second
    assert "The generator says:" in forced


def test_the_fingerprint_changes_with_any_model_file(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    before = model_files_fingerprint([model])

    assert model_files_fingerprint([model]) == before
    os.utime(weights, ns=(1, 1))
    touched = model_files_fingerprint([model])
    (model / "tokenizer.json").write_text("{}")
    added = model_files_fingerprint([model])

    assert len({before, touched, added}) == 3
