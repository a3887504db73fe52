"""The names under which a project's models answer OpenAI clients (`model` in a request,
`GET /v1/models`), and what each name serves.

Chat: `flywheel` is the production model version (it follows promotions and rollbacks),
`flywheel:candidate` the newest candidate while there is one, and every model version answers
to its own name. Embeddings: `flywheel:embedding` is the retriever of the active index version,
which also answers to its own name. A name the project does not serve is refused rather than
answered by another model, so that a client never mistakes one model's answers for another's.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flywheel.models import IndexVersion, ModelVersion, Project
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.model_versions import model_version_production_ensure
from flywheel.services.verified_answers import retriever_path

PRODUCTION_MODEL = "flywheel"
CANDIDATE_MODEL = "flywheel:candidate"
EMBEDDING_MODEL = "flywheel:embedding"

CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"


class ModelNotFound(LookupError):
    """The project serves no model under the requested name (or not on this endpoint)."""


@dataclass(frozen=True)
class ServedModel:
    """One name a client may send as `model`, and what it stands for."""

    name: str
    endpoint: str
    created: datetime
    # The model that answers under this name: a model version's name, or the retriever's.
    resolves_to: str
    # The model version behind a chat name; None for the embedding model.
    model_version: ModelVersion | None = None


@dataclass(frozen=True)
class Retriever:
    """The embedding model that embedded the active index version: queries, and clients of
    `/v1/embeddings`, must use the same one for their vectors to compare with the index's."""

    name: str
    path: str
    created: datetime


def _newest_candidate(*, project: Project) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(project=project, status=ModelVersion.Status.CANDIDATE)
        .order_by("-created_at", "-pk")
        .first()
    )


def model_version_resolve(*, project: Project, name: str) -> ModelVersion:
    """The model version that answers a chat request for `name`; ModelNotFound when the
    project serves none under it."""
    if name == PRODUCTION_MODEL:
        return model_version_production_ensure(project=project)
    if name == CANDIDATE_MODEL:
        candidate = _newest_candidate(project=project)
        if candidate is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist: this project has no candidate model "
                "version now."
            )
        return candidate
    version = ModelVersion.objects.filter(project=project, name=name).first()
    if version is None:
        if name in {EMBEDDING_MODEL, retriever_for(project=project).name}:
            raise ModelNotFound(
                f"The model '{name}' is an embedding model: use it with {EMBEDDINGS_ENDPOINT}."
            )
        raise ModelNotFound(
            f"The model '{name}' does not exist in this project; GET /v1/models lists the "
            "models it serves."
        )
    return version


def retriever_for(*, project: Project) -> Retriever:
    """The retriever of the project's active index version (the bundled embedding model
    before any index exists)."""
    index_version: IndexVersion | None = active_index_version(project=project)
    path = retriever_path(index_version=index_version)
    trained = index_version.embedding_model_version if index_version is not None else None
    if trained is not None:
        return Retriever(name=trained.name, path=path, created=trained.created_at)
    return Retriever(name=_folder_name(path), path=path, created=project.created_at)


def _folder_name(path: str) -> str:
    """The bundled (or configured) model is named by its folder, or the folder above one
    named just `model`, as the index versions name it: responses never show where the server
    keeps its files."""
    names = [part for part in Path(path).parts if part not in {"model", "/"}]
    return names[-1] if names else "embedding-model"


def retriever_resolve(*, project: Project, name: str) -> Retriever:
    """The retriever that answers an embeddings request for `name`; ModelNotFound for any
    other name, a chat model's included."""
    retriever = retriever_for(project=project)
    if name in {EMBEDDING_MODEL, retriever.name}:
        return retriever
    if name in {PRODUCTION_MODEL, CANDIDATE_MODEL} or (
        ModelVersion.objects.filter(project=project, name=name).exists()
    ):
        raise ModelNotFound(
            f"The model '{name}' is a chat model: embed with '{EMBEDDING_MODEL}' or "
            f"'{retriever.name}'."
        )
    raise ModelNotFound(
        f"The model '{name}' does not exist in this project; its embedding model is "
        f"'{EMBEDDING_MODEL}' (now '{retriever.name}')."
    )


def served_models_list(*, project: Project) -> list[ServedModel]:
    """Every name the project answers to now: the aliases first, then the model versions
    (newest first), then the retriever under its own name."""
    production = model_version_production_ensure(project=project)
    served = [
        ServedModel(
            name=PRODUCTION_MODEL,
            endpoint=CHAT_ENDPOINT,
            created=production.created_at,
            resolves_to=production.name,
            model_version=production,
        )
    ]
    candidate = _newest_candidate(project=project)
    if candidate is not None:
        served.append(
            ServedModel(
                name=CANDIDATE_MODEL,
                endpoint=CHAT_ENDPOINT,
                created=candidate.created_at,
                resolves_to=candidate.name,
                model_version=candidate,
            )
        )
    retriever = retriever_for(project=project)
    served.append(
        ServedModel(
            name=EMBEDDING_MODEL,
            endpoint=EMBEDDINGS_ENDPOINT,
            created=retriever.created,
            resolves_to=retriever.name,
        )
    )
    for version in ModelVersion.objects.filter(project=project).order_by("-created_at", "-pk"):
        served.append(
            ServedModel(
                name=version.name,
                endpoint=CHAT_ENDPOINT,
                created=version.created_at,
                resolves_to=version.name,
                model_version=version,
            )
        )
    served.append(
        ServedModel(
            name=retriever.name,
            endpoint=EMBEDDINGS_ENDPOINT,
            created=retriever.created,
            resolves_to=retriever.name,
        )
    )
    return served


def served_model_get(*, project: Project, name: str) -> ServedModel:
    for model in served_models_list(project=project):
        if model.name == name:
            return model
    raise ModelNotFound(
        f"The model '{name}' does not exist in this project; GET /v1/models lists the models "
        "it serves."
    )
