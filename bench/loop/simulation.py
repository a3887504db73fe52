"""The closed loop, turn by turn, on one project: simulated users ask, an oracle rates,
reviewers approve the corrections, the workers curate, and the jobs an admin would start
(dataset snapshot, index refresh, LoRA training with its evaluation) run on the workers; every
stage is measured on every question through the chat API.

The stages: the base model without retrieval and with it (the baseline), then per turn the
state after the index refresh and after LoRA training on top of it. Training runs on the
training worker while the refresh stage is measured, so its candidate is evaluated with
automatic promotion off and the loop applies the gate's verdict (the evaluation job's `gate`)
itself once that measurement is done: promotion when it passed, as automatic promotion would.
A candidate the gate refuses is still measured, by promoting it for the measurement and then
promoting back the version the gate kept, so that the report shows what training did either
way and the next turn starts from the gate's decision.

The users of a turn ask the training questions as production serves them at that moment; the
latest stage served by the current production model and active index already asked exactly
those questions through the same API (generation is greedy), so its answers are the ones
rated rather than asking everything twice.

With `experiment` on, the last turn is a canary experiment instead (`_experiment_turn`):
everything the turn builds — the refreshed index, left ready rather than activated, and the
LoRA adapter when training is on, not evaluated offline — becomes the candidate of an
experiment started through `POST /api/v1/experiments`, with automatic promotion on a win and
an early stop on a loss. A population of simulated users then asks the training questions in
rounds (each user a different question each round), every request served by the arm the
user's id is assigned to, and rates each answer with the oracle's thumb and score, until the
experiment reaches its verdict or the rating budget is spent (then it is stopped by hand). The
turn ends with a measurement of production as the verdict left it.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bench.loop.client import FlywheelApi, LoopBenchError, poll_until
from bench.loop.metrics import (
    RETRIEVAL_DEPTH,
    Observation,
    citation_is_source,
    figures_by_group,
)
from bench.loop.oracle import answer_judge, rating_payload
from bench.loop.questions import Probe, ProbeGroup, QuestionSet
from feedback.models import ProjectMembership, Review
from feedback.services.reviews import review_submit
from flywheel.ml.loading import load_generator
from flywheel.models import ApiKey, Interaction, Project, ServingPolicy, VerifiedAnswer
from flywheel.services import (
    api_key_create,
    document_index,
    documents_load_folder,
    project_get_or_create,
)
from flywheel.services.chat import context_block
from flywheel.services.verified_answers import match_threshold, serving_policy_get
from retrain.curation.pipeline import interactions_needing_curation
from retrain.models import Experiment, InstructionExample, Job

Log = Callable[[str], None]
PROGRESS_EVERY_ANSWERS = 10


@dataclass(frozen=True)
class LoopSettings:
    turns: int = 1
    max_tokens: int = 48
    # The oracle's bar: the share of the reference's answer-bearing words a right answer holds.
    oracle_threshold: float = 0.5
    measure_without_rag: bool = True
    # LoRA training per turn; 0 skips training (and the stage after it).
    train_steps: int = 10
    # From bench/lora_curve.py on the demo corpus: 10 steps at 3e-3 gave held-out F1 0.611
    # (base 0.394, 1e-3: 0.587); see bench/README.md.
    learning_rate: float = 3e-3
    batch_size: int = 4
    max_length: int = 384
    curation_deadline_seconds: float = 600
    job_deadline_seconds: float = 3600
    # Each mechanism of the loop is measured as a stage of its own, in this order: the index
    # refresh (approved corrections as FAQ passages), verified answers, the retriever trained
    # on feedback, the LoRA adapter, then the grounded answer mode (quote the passages when a
    # generated answer is not grounded in them).
    verified_answers: bool = True
    retriever_training: bool = True
    answer_mode: str = "grounded"
    # False: one stage per turn with every mechanism on (cheaper, for many turns).
    stage_per_mechanism: bool = True
    # The last turn as a canary experiment rather than an offline gate (see the module's
    # docstring): the candidate's share of the users, the ratings per arm the experiment
    # needs at least, how many simulated users ask (each keeps one arm), the most ratings
    # the benchmark gives before it stops an undecided experiment, and how long one round's
    # ratings may take to be evaluated on the workers.
    experiment: bool = False
    experiment_candidate_share: float = 0.5
    experiment_min_ratings_per_arm: int = 20
    experiment_users: int = 40
    experiment_max_ratings: int = 1000
    experiment_evaluation_deadline_seconds: float = 120

    def __post_init__(self) -> None:
        if self.turns < 1:
            raise ValueError("turns must be at least 1")
        if self.train_steps < 0:
            raise ValueError("train_steps must be 0 (no training) or more")
        if not 0 < self.oracle_threshold <= 1:
            raise ValueError("oracle_threshold must be more than 0 and at most 1")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.answer_mode not in ServingPolicy.AnswerMode.values:
            raise ValueError(f"answer_mode must be one of {ServingPolicy.AnswerMode.values}")
        if not 0 < self.experiment_candidate_share < 1:
            raise ValueError("experiment_candidate_share must be above 0 and below 1")
        if self.experiment_users < 2:
            raise ValueError("experiment_users must be at least 2: one per arm at the least")
        if self.experiment_max_ratings < 1:
            raise ValueError("experiment_max_ratings must be at least 1")

    def training_parameters(self, *, evaluate: bool = True) -> dict:
        """`evaluate=False` for an experiment's candidate: live ratings judge it instead."""
        return {
            "max_steps": self.train_steps,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "evaluate": evaluate,
            # The gate's verdict is applied by the loop once the refresh is measured: an
            # automatic promotion could land in the middle of that measurement.
            "auto_promote": False,
        }


@dataclass
class LoopProject:
    project: Project
    api: FlywheelApi
    reviewer: AbstractBaseUser
    documents: dict[str, int]  # source_uri -> document id


@dataclass
class StageResult:
    name: str
    label: str
    turn: int
    rag: bool
    observations: list[Observation]
    wall_seconds: float
    note: str = ""

    @property
    def served_by(self) -> set[tuple[str, int | None]]:
        return {(o.model_version, o.index_version) for o in self.observations}

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "turn": self.turn,
            "rag": self.rag,
            "served_by": [
                {"model_version": model, "index_version": index}
                for model, index in sorted(self.served_by, key=str)
            ],
            "wall_seconds": round(self.wall_seconds, 1),
            "seconds_per_answer": round(self.wall_seconds / max(len(self.observations), 1), 2),
            "note": self.note,
            "groups": figures_by_group(self.observations),
        }


@dataclass
class LoopResult:
    stages: list[StageResult] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)


def loop_project_create(*, corpus_dir: Path, slug: str = "loop-bench") -> LoopProject:
    """A project with the corpus indexed (inline, as `bootstrap_demo` does), a secret key for
    the simulated app, and a reviewer."""
    project, _ = project_get_or_create(
        slug=slug, name="Loop benchmark", description=f"flywheel_bench on {corpus_dir}"
    )
    loaded = documents_load_folder(project=project, folder=Path(corpus_dir))
    if not loaded:
        raise LoopBenchError(f"{corpus_dir} holds no .md, .txt or .html documents")
    for result in loaded:
        document_index(document_id=result.document.pk)
    key = api_key_create(
        project=project, kind=ApiKey.Kind.SECRET, name="loop-bench", scopes=ApiKey.Scope.values
    ).raw_key
    reviewer = get_user_model().objects.create_user(username=f"{slug}-reviewer")
    ProjectMembership.objects.create(
        user=reviewer, project=project, role=ProjectMembership.Role.REVIEWER
    )
    return LoopProject(
        project=project,
        api=FlywheelApi(secret_key=key),
        reviewer=reviewer,
        documents={r.document.source_uri: r.document.pk for r in loaded},
    )


def question_sources_check(*, question_set: QuestionSet, documents: dict[str, int]) -> None:
    known = set(documents) | {str(pk) for pk in documents.values()}
    unknown = sorted(question_set.sources() - known)
    if unknown:
        raise LoopBenchError(
            f"sources not in the corpus: {', '.join(unknown[:10])} (a source is a path "
            "relative to the corpus folder, or a document id)"
        )


def passages_read_count(passages: list[dict]) -> int:
    """How many of the retrieved passages the model read: the chat service's context block
    takes them in rank order until its character budget is spent."""
    whole = context_block(passages)
    return next(n for n in range(len(passages) + 1) if context_block(passages[:n]) == whole)


class LoopRun:
    def __init__(
        self,
        *,
        setup: LoopProject,
        question_set: QuestionSet,
        settings: LoopSettings,
        log: Log = print,
        on_progress: Callable[[LoopResult], None] | None = None,
    ):
        question_sources_check(question_set=question_set, documents=setup.documents)
        self.setup = setup
        self.api = setup.api
        self.question_set = question_set
        self.settings = settings
        self.log = log
        self.on_progress = on_progress or (lambda result: None)
        self.probes = question_set.probes()
        self.result = LoopResult()
        # "faq:<review id>" -> the source of the question whose correction made the entry
        self.faq_sources: dict[str, str] = {}

    def run(self) -> LoopResult:
        self.log("Loading the generator")
        load_generator()
        if self.settings.measure_without_rag:
            self._stage("base_no_rag", "base model, no RAG", turn=0, rag=False)
        self._stage("base_rag", "base model + RAG", turn=0, rag=True)
        for turn in range(1, self.settings.turns + 1):
            self._turn(turn)
        return self.result

    # --- measuring -----------------------------------------------------------------------------

    def _ask(self, probe: Probe, *, stage: str, rag: bool) -> Observation:
        question = probe.question
        response = self.api.chat(
            question=probe.text,
            rag=rag,
            max_tokens=self.settings.max_tokens,
            top_k=RETRIEVAL_DEPTH,
            user=f"loop-bench-user-{probe.key}",
            metadata={"loop_bench_stage": stage, "loop_bench_probe": probe.key},
        )
        extension = response["flywheel"]
        citations = extension["citations"]
        source_ranks = ()
        if question.source is not None:
            source_ranks = tuple(
                citation["rank"]
                for citation in citations
                if citation_is_source(
                    citation, source=question.source, faq_sources=self.faq_sources
                )
            )
        passages = self.api.interaction(extension["interaction_id"])["retrieved"] if rag else []
        answer = response["choices"][0]["message"]["content"]
        index_version = extension["index_version"]
        return Observation(
            stage=stage,
            probe=probe,
            interaction_id=extension["interaction_id"],
            answer=answer,
            retrieval=rag,
            citations=[
                {"source_uri": c["source_uri"], "document_id": c["document_id"]} for c in citations
            ],
            source_ranks=source_ranks,
            passages_read=passages_read_count(passages),
            verdict=answer_judge(
                answer=answer,
                reference=question.answer,
                question=probe.text,
                threshold=self.settings.oracle_threshold,
            ),
            model_version=extension["model_version"]["name"],
            index_version=index_version["number"] if index_version else None,
            answered_from=extension.get("answered_from") or "generated",
        )

    def _ask_all(self, probes: list[Probe], *, stage: str, rag: bool) -> list[Observation]:
        observations, started = [], time.monotonic()
        for number, probe in enumerate(probes, start=1):
            observations.append(self._ask(probe, stage=stage, rag=rag))
            if number % PROGRESS_EVERY_ANSWERS == 0 and number < len(probes):
                pace = (time.monotonic() - started) / number
                self.log(f"  {stage}: {number}/{len(probes)} answers, {pace:.1f}s each")
        return observations

    def _stage(self, name: str, label: str, *, turn: int, rag: bool, note: str = "") -> StageResult:
        self.log(f"Measuring {label}: {len(self.probes)} questions")
        started = time.monotonic()
        observations = self._ask_all(self.probes, stage=name, rag=rag)
        stage = StageResult(
            name=name,
            label=label,
            turn=turn,
            rag=rag,
            note=note,
            observations=observations,
            wall_seconds=time.monotonic() - started,
        )
        self.result.stages.append(stage)
        self.log(_stage_summary_line(stage))
        self.on_progress(self.result)
        return stage

    # --- one turn of the loop --------------------------------------------------------------------

    def _turn(self, turn: int) -> None:
        started = time.monotonic()
        record: dict = {"turn": turn}
        self.result.turns.append(record)
        asked = self._users_ask(turn)
        record.update(self._rate(asked, turn=turn))
        record["corrected"] = self._approve_corrections(asked)
        record["curation"] = self._wait_for_curation()
        if self.settings.experiment and turn == self.settings.turns:
            self._experiment_turn(turn, record)
            record["wall_seconds"] = round(time.monotonic() - started, 1)
            self.on_progress(self.result)
            return
        record.update(self._snapshot_and_refresh())
        if not self.settings.stage_per_mechanism:
            self._turn_all_mechanisms(turn, record)
            return
        training_job_id = None
        if self.settings.train_steps:
            # The training worker trains while this process measures the refresh: two cores,
            # one busy process each.
            self.log(f"Turn {turn}: LoRA training, {self.settings.train_steps} steps")
            training_job_id = self._training_start(dataset_version=record["dataset_version"])
        # Each mechanism on its own first: the refresh without verified answers.
        self._serving_policy(
            verified_answers=ServingPolicy.VerifiedAnswersMode.OFF,
            answer_mode=ServingPolicy.AnswerMode.GENERATE,
        )
        self._stage(f"turn{turn}_refresh", f"turn {turn}: index refresh", turn=turn, rag=True)
        if self.settings.verified_answers:
            self._serving_policy(verified_answers=ServingPolicy.VerifiedAnswersMode.VERBATIM)
            record["verified_answers"] = self._verified_answers_state()
            self._stage(
                f"turn{turn}_verified", f"turn {turn}: + verified answers", turn=turn, rag=True
            )
        if training_job_id is not None:
            record["training"] = self._training_finish_and_measure(
                turn, training_job_id=training_job_id
            )
        if self.settings.retriever_training:
            record["retriever"] = self._retriever_train_and_measure(turn)
        if self.settings.answer_mode != ServingPolicy.AnswerMode.GENERATE:
            self._serving_policy(answer_mode=self.settings.answer_mode)
            self._stage(
                f"turn{turn}_{self.settings.answer_mode}",
                f"turn {turn}: + {self.settings.answer_mode} answers",
                turn=turn,
                rag=True,
            )
        record["wall_seconds"] = round(time.monotonic() - started, 1)
        self.on_progress(self.result)

    def _turn_all_mechanisms(self, turn: int, record: dict) -> None:
        """The rest of a turn measured once, with every mechanism the settings enable on."""
        started = time.monotonic()
        self._serving_policy(
            verified_answers=ServingPolicy.VerifiedAnswersMode.VERBATIM
            if self.settings.verified_answers
            else ServingPolicy.VerifiedAnswersMode.OFF,
            answer_mode=self.settings.answer_mode,
        )
        if self.settings.retriever_training:
            record["retriever"] = self._retriever_train_and_measure(turn, measure=False)
        if self.settings.verified_answers:
            record["verified_answers"] = self._verified_answers_state()
        if self.settings.train_steps:
            self.log(f"Turn {turn}: LoRA training, {self.settings.train_steps} steps")
            training_job_id = self._training_start(dataset_version=record["dataset_version"])
            record["training"] = self._training_finish_and_measure(
                turn, training_job_id=training_job_id
            )
        else:
            self._stage(f"turn{turn}_loop", f"turn {turn}: the whole loop", turn=turn, rag=True)
        record["wall_seconds"] = round(time.monotonic() - started, 1)
        self.on_progress(self.result)

    def _serving_policy(self, **fields) -> None:
        """What an admin sets on the project's serving policy (dashboard or admin)."""
        ServingPolicy.objects.update_or_create(project=self.setup.project, defaults=fields)

    def _verified_answers_state(self) -> dict:
        policy = serving_policy_get(project=self.setup.project)
        active = VerifiedAnswer.objects.filter(
            project=self.setup.project, status=VerifiedAnswer.Status.ACTIVE
        ).count()
        self.log(
            f"{active} verified answers; match threshold {match_threshold(policy):.3f} "
            f"({'calibrated' if policy.calibrated_threshold is not None else 'default'})"
        )
        return {
            "active": active,
            "threshold": round(match_threshold(policy), 4),
            "calibration": policy.calibration,
        }

    def _retriever_train_and_measure(self, turn: int, *, measure: bool = True) -> dict:
        """Fine-tune the retriever on the feedback so far; when its held-out hits beat the
        current one's it is promoted and the index rebuilt with it, then measured."""
        deadline = self.settings.job_deadline_seconds
        self.log(f"Turn {turn}: retriever training")
        job = self.api.job_start(Job.Kind.RETRIEVER_TRAINING, {})
        job = self.api.job_wait(job["id"], deadline_seconds=deadline)
        summary = {"state": job["state"], "metrics": job["metrics"], "error": job.get("error")}
        if job["state"] != Job.State.SUCCEEDED:
            self.log(f"Retriever training {job['state']}: {job.get('error', '')}")
            return summary
        refresh = Job.objects.filter(parent_id=job["id"], kind=Job.Kind.INDEX_REFRESH).first()
        if refresh is None:
            self.log("The retriever candidate was not promoted; nothing to measure")
            return summary
        refresh_job = self.api.job_wait(refresh.pk, deadline_seconds=deadline)
        summary["index_refresh"] = refresh_job["metrics"]
        if self.settings.verified_answers:
            summary["verified_answers"] = self._verified_answers_state()
        if not measure:
            return summary
        self._stage(
            f"turn{turn}_retriever",
            f"turn {turn}: + retriever trained on feedback",
            turn=turn,
            rag=True,
        )
        return summary

    def _serving_now(self) -> tuple[str, int | None]:
        production = next(
            v["name"] for v in self.api.model_versions() if v["status"] == "production"
        )
        active = next(
            (v["number"] for v in self.api.index_versions() if v["status"] == "active"), None
        )
        return production, active

    def _users_ask(self, turn: int) -> list[Observation]:
        """The training questions as production serves them now: the latest stage that
        production's model version and active index served. There is always one, since a
        candidate measured without the gate's blessing is demoted again at once."""
        serving = self._serving_now()
        stage = next(
            (s for s in reversed(self.result.stages) if s.rag and s.served_by == {serving}), None
        )
        if stage is None:
            raise LoopBenchError(f"production ({serving}) changed outside the benchmark")
        self.log(f"Turn {turn}: the users' answers are those of '{stage.label}'")
        return [o for o in stage.observations if o.probe.group == ProbeGroup.TRAIN]

    def _rate(self, asked: list[Observation], *, turn: int) -> dict:
        ratings = [
            rating_payload(
                interaction_id=o.interaction_id,
                rater_id=f"loop-bench-user-{o.probe.key}",
                verdict=o.verdict,
                reference=o.probe.question.answer,
            )
            for o in asked
        ]
        self.api.ratings_submit(ratings)
        up = sum(rating["thumb"] == "up" for rating in ratings)
        self.log(f"Turn {turn}: rated {up} answers right and {len(ratings) - up} wrong")
        return {"rated_right": up, "rated_wrong": len(ratings) - up}

    def _approve_corrections(self, asked: list[Observation]) -> dict[str, str]:
        """The reviewers' verdict on each corrected answer: the user's correction (the
        reference) becomes the ideal answer, which the index refresh turns into an FAQ entry.
        Returns the FAQ entry to be, `faq:<review id>`, of each corrected question."""
        corrected = {}
        for observation in (o for o in asked if not o.verdict.correct):
            review = review_submit(
                interaction=Interaction.objects.get(pk=observation.interaction_id),
                reviewer=self.setup.reviewer,
                decision=Review.Decision.CORRECTED,
                ideal_answer=observation.probe.question.answer,
                note="Simulated reviewer: the user's correction matches the reference.",
            )
            corrected[observation.probe.key] = f"faq:{review.pk}"
            if observation.probe.question.source is not None:
                self.faq_sources[f"faq:{review.pk}"] = observation.probe.question.source
        return corrected

    def _wait_for_curation(self) -> dict:
        project = self.setup.project
        started = time.monotonic()
        poll_until(
            lambda: not interactions_needing_curation().get(project.pk),
            what="curation of the rated interactions on the workers",
            deadline_seconds=self.settings.curation_deadline_seconds,
        )
        examples = InstructionExample.objects.filter(project=project)
        counts = {
            status: examples.filter(status=status).count()
            for status in InstructionExample.Status.values
        }
        self.log(f"Curated in {time.monotonic() - started:.0f}s: {counts}")
        return counts

    def _snapshot_and_refresh(self, *, activate: bool = True) -> dict:
        """A dataset snapshot and an index refresh; `activate=False` leaves the new index
        version ready, for an experiment to judge."""
        deadline = self.settings.job_deadline_seconds
        snapshot = self.api.job_start(Job.Kind.DATASET_SNAPSHOT)
        refresh = self.api.job_start(Job.Kind.INDEX_REFRESH, {"activate": activate})
        snapshot = self.api.job_wait(snapshot["id"], deadline_seconds=deadline)
        refresh = self.api.job_wait(refresh["id"], deadline_seconds=deadline)
        metrics = refresh["metrics"]
        dataset = {
            "dataset_version": snapshot["metrics"]["dataset_version"],
            "dataset_counts": {
                key: value
                for key, value in snapshot["metrics"].items()
                if key not in {"dataset_version", "created"}
            },
            "index_version": metrics["index_version"],
        }
        if metrics.get("unchanged"):
            self.log(
                f"Dataset v{dataset['dataset_version']}; nothing new for the index: "
                f"v{metrics['index_version']} stays"
            )
            return {**dataset, "index_unchanged": True}
        self.log(
            f"Dataset v{dataset['dataset_version']}; index v{metrics['index_version']} "
            f"{'active' if activate else 'ready'} with {metrics['stats']['corrections']} "
            "FAQ entries"
        )
        return {
            **dataset,
            "index_stats": metrics["stats"],
            "index_refresh_evaluation": metrics["corrections"],
        }

    def _training_start(self, *, dataset_version: int, evaluate: bool = True) -> int:
        """Start LoRA training on the turn's dataset version; the job's id."""
        parameters = {
            "dataset_version": dataset_version,
            **self.settings.training_parameters(evaluate=evaluate),
        }
        return self.api.job_start(Job.Kind.LORA_TRAINING, parameters)["id"]

    def _training_finish_and_measure(self, turn: int, *, training_job_id: int) -> dict:
        """Wait for the training and the evaluation it queued, apply the gate's verdict and
        measure the candidate (see the module's docstring for a refused one)."""
        deadline = self.settings.job_deadline_seconds
        training = self.api.job_wait(training_job_id, deadline_seconds=deadline)
        candidate_id = training["model_version_id"]
        evaluation = poll_until(
            lambda: next(
                (
                    job
                    for job in self.api.jobs()
                    if job["kind"] == Job.Kind.EVALUATION
                    and job["parameters"].get("model_version") == candidate_id
                ),
                None,
            ),
            what="the evaluation job of the candidate",
            deadline_seconds=60,
        )
        evaluation = self.api.job_wait(evaluation["id"], deadline_seconds=deadline)
        gate = evaluation["metrics"].get("gate", {})
        versions = self.api.model_versions()
        candidate = next(v for v in versions if v["id"] == candidate_id)
        production = next(v for v in versions if v["status"] == "production")
        self.log(f"Candidate {candidate['name']}: {gate.get('reason', 'no gate decision')}")
        summary = {
            "candidate": candidate["name"],
            "steps": training["metrics"].get("steps"),
            "train_loss": training["metrics"].get("train_loss"),
            "tokens_per_second": training["metrics"].get("tokens_per_second"),
            "training_seconds": _job_seconds(training),
            "evaluation_seconds": _job_seconds(evaluation),
            "gate": gate,
            "promoted_by_gate": gate.get("decision") == "promote",
        }
        name, label = f"turn{turn}_lora", f"turn {turn}: LoRA + refresh"
        if candidate["status"] != "production":  # the gate may have promoted it already
            self.api.model_version_promote(candidate_id, reason="measured by the loop benchmark")
        if gate.get("decision") == "promote":
            self._stage(name, label, turn=turn, rag=True)
        else:
            try:
                self._stage(
                    name,
                    f"{label} (not promoted)",
                    turn=turn,
                    rag=True,
                    note=f"{candidate['name']} was promoted for this measurement only; "
                    f"the gate kept {production['name']}",
                )
            finally:
                self.api.model_version_promote(
                    production["id"], reason="back to production after the measurement"
                )
        return summary

    # --- a turn as a canary experiment -----------------------------------------------------------

    def _experiment_turn(self, turn: int, record: dict) -> None:
        """The rest of the turn as an experiment (see the module's docstring)."""
        record.update(self._snapshot_and_refresh(activate=False))
        candidate_index = None if record.get("index_unchanged") else record["index_version"]
        candidate_model = None
        if self.settings.train_steps:
            self.log(f"Turn {turn}: LoRA training, {self.settings.train_steps} steps")
            training_job_id = self._training_start(
                dataset_version=record["dataset_version"], evaluate=False
            )
            training = self.api.job_wait(
                training_job_id, deadline_seconds=self.settings.job_deadline_seconds
            )
            candidate_model = next(
                v["name"]
                for v in self.api.model_versions()
                if v["id"] == training["model_version_id"]
            )
            record["training"] = {
                "candidate": candidate_model,
                "steps": training["metrics"].get("steps"),
                "train_loss": training["metrics"].get("train_loss"),
                "tokens_per_second": training["metrics"].get("tokens_per_second"),
                "training_seconds": _job_seconds(training),
            }
        if candidate_model is None and candidate_index is None:
            raise LoopBenchError(
                f"turn {turn} built no candidate for the experiment: no correction made a new "
                "index version, and training is off"
            )
        # Both arms generate their answers: verified answers would answer either arm alike.
        self._serving_policy(
            verified_answers=ServingPolicy.VerifiedAnswersMode.OFF,
            answer_mode=ServingPolicy.AnswerMode.GENERATE,
        )
        record["experiment"] = self._experiment_run(
            turn, candidate_model=candidate_model, candidate_index=candidate_index
        )
        self._stage(
            f"turn{turn}_experiment",
            f"turn {turn}: after the experiment",
            turn=turn,
            rag=True,
            note=_experiment_outcome_line(record["experiment"]),
        )

    def _experiment_run(
        self, turn: int, *, candidate_model: str | None, candidate_index: int | None
    ) -> dict:
        """Start the experiment, serve and rate rounds of the users' questions until it
        decides or the rating budget is spent, and say what came of it."""
        settings = self.settings
        started = time.monotonic()
        experiment = self.api.experiment_start(
            {
                "candidate_model": candidate_model,
                "candidate_index_version": candidate_index,
                "candidate_share": settings.experiment_candidate_share,
                "metric": Experiment.Metric.THUMBS_UP_RATE,
                "min_ratings_per_arm": settings.experiment_min_ratings_per_arm,
                "max_duration_hours": 24,
                "auto_promote": True,
                "stop_on_loss": True,
            }
        )
        described = " and ".join(
            part
            for part in (
                candidate_model and f"model {candidate_model}",
                candidate_index and f"index v{candidate_index}",
            )
            if part
        )
        self.log(
            f"Turn {turn}: experiment #{experiment['id']} started: {described} on "
            f"{settings.experiment_candidate_share:.0%} of {settings.experiment_users} users"
        )
        questions = [probe for probe in self.probes if probe.group == ProbeGroup.TRAIN]
        users = [f"loop-bench-canary-user-{number}" for number in range(settings.experiment_users)]
        arms_by_user: dict[str, set[str]] = {}
        answered: dict[str, list[bool]] = {}  # the oracle's verdicts per arm
        submitted = rounds = 0
        while experiment["status"] == Experiment.Status.RUNNING:
            if submitted >= settings.experiment_max_ratings:
                experiment = self.api.experiment_stop(
                    experiment["id"],
                    reason=f"The benchmark's budget of {settings.experiment_max_ratings} "
                    "ratings is spent.",
                )
                break
            ratings = []
            for position, user in enumerate(users[: settings.experiment_max_ratings - submitted]):
                probe = questions[(position + rounds) % len(questions)]
                arm, rating = self._experiment_ask(probe, user=user, turn=turn)
                arms_by_user.setdefault(user, set()).add(arm)
                answered.setdefault(arm, []).append(rating["thumb"] == "up")
                ratings.append(rating)
            # Before the ratings land: the evaluation they queue runs after this moment.
            submitted_at = timezone.now()
            self.api.ratings_submit(ratings)
            submitted += len(ratings)
            rounds += 1
            experiment = self._experiment_evaluated(experiment["id"], since=submitted_at)
            arms = experiment["arms"]
            self.log(
                f"  experiment: {submitted} ratings; thumbs-up control "
                f"{_percent(arms['control']['metric'])} of {arms['control']['ratings']}, "
                f"candidate {_percent(arms['candidate']['metric'])} of "
                f"{arms['candidate']['ratings']}; {experiment['verdict'] or 'undecided'}"
            )
        summary = _experiment_summary(
            experiment,
            ratings_submitted=submitted,
            rounds=rounds,
            users=len(users),
            users_switching_arms=sum(len(arms) > 1 for arms in arms_by_user.values()),
            oracle_right={arm: sum(right) / len(right) for arm, right in answered.items()},
            production_after=self._serving_now(),
            wall_seconds=time.monotonic() - started,
        )
        self.log(f"Turn {turn}: {_experiment_outcome_line(summary)}")
        return summary

    def _experiment_ask(self, probe: Probe, *, user: str, turn: int) -> tuple[str, dict]:
        """One user's question as the experiment serves it: the arm that answered, and the
        user's rating of the answer (the oracle's thumb and score)."""
        response = self.api.chat(
            question=probe.text,
            rag=True,
            max_tokens=self.settings.max_tokens,
            top_k=RETRIEVAL_DEPTH,
            user=user,
            metadata={"loop_bench_stage": f"turn{turn}_experiment", "loop_bench_probe": probe.key},
        )
        extension = response["flywheel"]
        if not extension.get("experiment"):
            raise LoopBenchError(f"{user} was served outside the experiment: {extension}")
        verdict = answer_judge(
            answer=response["choices"][0]["message"]["content"],
            reference=probe.question.answer,
            question=probe.text,
            threshold=self.settings.oracle_threshold,
        )
        rating = rating_payload(
            interaction_id=extension["interaction_id"],
            rater_id=user,
            verdict=verdict,
            reference=probe.question.answer,
        )
        thumbs = {key: rating[key] for key in ("interaction_id", "rater_id", "thumb", "score")}
        return extension["experiment"]["arm"], thumbs

    def _experiment_evaluated(self, experiment_id: int, *, since) -> dict:
        """The experiment once the workers have evaluated it after `since` (or it ended)."""

        def evaluated() -> dict | None:
            experiment = self.api.experiment(experiment_id)
            evaluated_at = experiment["evaluated_at"] and parse_datetime(experiment["evaluated_at"])
            if experiment["status"] != Experiment.Status.RUNNING or (
                evaluated_at and evaluated_at >= since
            ):
                return experiment
            return None

        return poll_until(
            evaluated,
            what=f"experiment #{experiment_id} evaluated after its latest ratings",
            deadline_seconds=self.settings.experiment_evaluation_deadline_seconds,
        )


def _experiment_summary(
    experiment: dict,
    *,
    ratings_submitted: int,
    rounds: int,
    users: int,
    users_switching_arms: int,
    oracle_right: dict[str, float],
    production_after: tuple[str, int | None],
    wall_seconds: float,
) -> dict:
    """What the report keeps of an experiment. `ratings_needed`: the ratings its verdict
    rested on (None without a verdict)."""
    evidence = experiment["evidence"]
    verdict_arms = evidence.get("arms") if experiment["verdict"] else None
    promotion = evidence.get("promotion") or {}
    model_promoted = "promoted" in promotion.get("model_version", {})
    index_activated = "activated" in promotion.get("index_version", {})
    return {
        "id": experiment["id"],
        "candidate_model": experiment["candidate_model"],
        "candidate_index_version": experiment["candidate_index_version"],
        "candidate_share": experiment["candidate_share"],
        "min_ratings_per_arm": experiment["min_ratings_per_arm"],
        "status": experiment["status"],
        "verdict": experiment["verdict"] or None,
        "stop_reason": experiment["stop_reason"],
        "ratings_needed": (
            sum(arm["ratings"] for arm in verdict_arms.values()) if verdict_arms else None
        ),
        "ratings_submitted": ratings_submitted,
        "rounds": rounds,
        "users": users,
        "users_switching_arms": users_switching_arms,
        "arms": {
            name: {
                key: arm[key]
                for key in ("interactions", "ratings", "thumbs_up", "metric", "interval")
            }
            | {"oracle_right": oracle_right.get(name)}
            for name, arm in experiment["arms"].items()
        },
        "difference": experiment["difference"],
        "probability_candidate_better": experiment["probability_candidate_better"],
        "promoted": model_promoted or index_activated,
        "promotion": promotion,
        "production_after": {
            "model_version": production_after[0],
            "index_version": production_after[1],
        },
        "wall_seconds": round(wall_seconds, 1),
    }


def _experiment_outcome_line(summary: dict) -> str:
    verdict = summary["verdict"]
    if verdict is None:
        outcome = (
            f"undecided after {summary['ratings_submitted']} ratings ({summary['stop_reason']})"
        )
    else:
        outcome = (
            f"{Experiment.Verdict(verdict).label.lower()} after {summary['ratings_needed']} ratings"
        )
    production = summary["production_after"]
    promoted = "promoted" if summary["promoted"] else "not promoted"
    return (
        f"experiment #{summary['id']}: {outcome}; candidate {promoted}, production is "
        f"{production['model_version']} with index v{production['index_version']}"
    )


def _job_seconds(job: dict) -> float | None:
    if not (job.get("started_at") and job.get("finished_at")):
        return None
    started, finished = parse_datetime(job["started_at"]), parse_datetime(job["finished_at"])
    return round((finished - started).total_seconds(), 1)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _stage_summary_line(stage: StageResult) -> str:
    parts = []
    for group, figures in figures_by_group(stage.observations).items():
        parts.append(
            f"{group}: hit@1 {_percent(figures['hit_at_1'])} hit@5 {_percent(figures['hit_at_5'])}"
            f" F1 {figures['token_f1']:.2f} right {_percent(figures['correct'])}"
        )
    pace = stage.wall_seconds / max(len(stage.observations), 1)
    return f"  {stage.label} ({stage.wall_seconds:.0f}s, {pace:.1f}s/answer): " + "; ".join(parts)
