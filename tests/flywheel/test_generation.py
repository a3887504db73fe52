"""Generation backends: the local backend serves the production version's LoRA adapter and
switches when production changes, without a restart."""

import json

import pytest
import torch
from django.db import transaction

from flywheel.ml.bundled import base_model_path
from flywheel.models import ModelVersion
from flywheel.services.model_versions import model_version_production_ensure
from tests.conftest import bearer

PROMPT = {
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 12,
    "flywheel": {"rag": False},
}


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory):
    """A LoRA adapter with random weights: it changes what the model says, which is all this
    test needs. Built on a fresh copy of the base model, never the one the server holds."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(base_model_path()))
    config = LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    folder = tmp_path_factory.mktemp("adapter") / "random"
    get_peft_model(base, config).save_pretrained(folder)
    return folder


def _production(project, version: ModelVersion) -> None:
    with transaction.atomic():
        ModelVersion.objects.filter(project=project, status="production").update(status="retired")
        ModelVersion.objects.filter(pk=version.pk).update(status="production")


def _ask(client, key) -> dict:
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps(PROMPT),
        content_type="application/json",
        **bearer(key),
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db
def test_promoting_an_adapter_changes_the_next_answer_and_rolling_back_restores_it(
    client, project, secret_key, random_adapter
):
    base_version = model_version_production_ensure(project=project)
    before = _ask(client, secret_key)
    adapted = ModelVersion.objects.create(
        project=project, name="lora-1", base_model="", adapter_path=str(random_adapter)
    )

    _production(project, adapted)
    with_adapter = _ask(client, secret_key)
    _production(project, base_version)
    after_rollback = _ask(client, secret_key)

    assert with_adapter["flywheel"]["model_version"]["name"] == "lora-1"
    assert with_adapter["model"] == "lora-1"
    assert (
        with_adapter["choices"][0]["message"]["content"]
        != (before["choices"][0]["message"]["content"])
    )
    assert after_rollback["flywheel"]["model_version"]["name"] == "base"
    assert (
        after_rollback["choices"][0]["message"]["content"]
        == (before["choices"][0]["message"]["content"])
    )
