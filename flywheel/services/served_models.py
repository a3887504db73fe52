"""The names under which a project's models answer OpenAI clients (`model` in a request,
`GET /v1/models`), and what each name serves.

Chat: `flywheel` is the production model version (it follows promotions and rollbacks),
`flywheel:candidate` the newest candidate while there is one, and every model version answers
to its own name. While a canary experiment runs, `flywheel` is split between its two arms
(flywheel.services.traffic_splits), which also answer to their own names,
`flywheel:arm:control` and `flywheel:arm:candidate`: naming an arm, like naming any other
model, bypasses the experiment's assignment and is not counted in it.

Embeddings: `flywheel:embedding` is the retriever of the active index version, which also
answers to its own name. A name the project does not serve is refused rather than
answered by another model, so that a client never mistakes one model's answers for another's.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flywheel.models import ExperimentArm, IndexVersion, ModelVersion, Project, TrafficSplit
from flywheel.selectors.retrieval import active_index_version
from flywheel.services.model_versions import model_version_production_ensure
from flywheel.services.traffic_splits import (
    ArmAssignment,
    arm_assign,
    arm_versions,
    traffic_split_open_for,
)
from flywheel.services.verified_answers import retriever_path

PRODUCTION_MODEL = "flywheel"
CANDIDATE_MODEL = "flywheel:candidate"
EMBEDDING_MODEL = "flywheel:embedding"
ARM_MODELS = {
    ExperimentArm.CONTROL.value: "flywheel:arm:control",
    ExperimentArm.CANDIDATE.value: "flywheel:arm:candidate",
}

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
    # While an experiment runs: its id on `flywheel` and on the arms; the arm a name serves,
    # the share of people it serves and the index version it retrieves from.
    experiment_id: int | None = None
    arm: str | None = None
    traffic_share: float | None = None
    index_version: IndexVersion | None = None


@dataclass(frozen=True)
class ChatRoute:
    """What answers a chat request: a model version, the index version it retrieves from
    (None: the active one) and, for a request the experiment assigned, the split and arm."""

    model_version: ModelVersion
    index_version: IndexVersion | None = None
    split: TrafficSplit | None = None
    assignment: ArmAssignment | None = None


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


def chat_route(
    *, project: Project, name: str, user: str = "", rater_id: str = "", session_id: str = ""
) -> ChatRoute:
    """What answers a chat request for the model `name` from the person these ids name.
    `flywheel` in an experiment: the arm the person is assigned; an arm's name: that arm,
    unassigned; any other name: its model version. ModelNotFound when the project serves
    nothing under `name`."""
    arm = next((arm for arm, arm_name in ARM_MODELS.items() if arm_name == name), None)
    if name != PRODUCTION_MODEL and arm is None:
        return ChatRoute(model_version=model_version_resolve(project=project, name=name))
    split = traffic_split_open_for(project=project)
    if split is None:
        if arm is not None:
            raise ModelNotFound(
                f"The model '{name}' is an experiment's arm, and no experiment runs in this "
                "project now; GET /v1/models lists the models it serves."
            )
        return ChatRoute(model_version=model_version_production_ensure(project=project))
    if arm is None:  # the production name: the arm this person is assigned
        assignment = arm_assign(split=split, user=user, rater_id=rater_id, session_id=session_id)
        versions = arm_versions(split=split, arm=assignment.arm)
        return ChatRoute(
            model_version=versions.model_version,
            index_version=versions.index_version,
            split=split,
            assignment=assignment,
        )
    versions = arm_versions(split=split, arm=arm)
    return ChatRoute(model_version=versions.model_version, index_version=versions.index_version)


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
    if name in {PRODUCTION_MODEL, CANDIDATE_MODEL, *ARM_MODELS.values()} or (
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
    split = traffic_split_open_for(project=project)
    served = [
        ServedModel(
            name=PRODUCTION_MODEL,
            endpoint=CHAT_ENDPOINT,
            created=production.created_at,
            resolves_to=production.name,
            model_version=production,
            experiment_id=split.experiment_id if split is not None else None,
        )
    ]
    if split is not None:
        served.extend(_arms_served(split=split))
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


def _arms_served(*, split: TrafficSplit) -> list[ServedModel]:
    active = active_index_version(project=split.project)
    shares = {
        ExperimentArm.CONTROL.value: 1 - split.candidate_share,
        ExperimentArm.CANDIDATE.value: split.candidate_share,
    }
    served = []
    for arm, name in ARM_MODELS.items():
        versions = arm_versions(split=split, arm=arm)
        served.append(
            ServedModel(
                name=name,
                endpoint=CHAT_ENDPOINT,
                created=split.opened_at,
                resolves_to=versions.model_version.name,
                model_version=versions.model_version,
                experiment_id=split.experiment_id,
                arm=arm,
                traffic_share=round(shares[arm], 6),
                index_version=versions.index_version or active,
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
