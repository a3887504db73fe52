from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from pgvector.django import HnswIndex, VectorField

from feedback.models import Rating, Review
from flywheel.models import EMBEDDING_DIMENSIONS, BaseModel, Interaction, Project
from retrain.curation.pii import pii_entities_default, pii_entities_normalise


def validate_pii_entities(value: object) -> None:
    try:
        pii_entities_normalise(value)
    except ValueError as error:
        raise ValidationError(f"PII kinds per source: {error}") from error


class CurationPolicy(BaseModel):
    """Which feedback makes a training example, per project (admins edit it)."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, related_name="curation_policy"
    )
    include_reviewer_approved = models.BooleanField(
        default=True, help_text="A reviewer's approval makes the model's answer an example."
    )
    include_thumbs_up = models.BooleanField(
        default=True, help_text="More thumbs up than down makes the answer an example."
    )
    min_score = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        default=4,
        help_text="An average score of at least this makes the answer an example; "
        "empty: scores alone never do.",
    )
    prefer_corrections = models.BooleanField(
        default=True,
        help_text="A correction (reviewer's or end user's) replaces the model's answer; the "
        "model's answer then becomes the rejected side of a preference pair.",
    )
    exclude_thumbs_down_without_correction = models.BooleanField(default=True)
    min_answer_chars = models.PositiveIntegerField(default=2)
    max_answer_chars = models.PositiveIntegerField(default=4000)
    max_question_chars = models.PositiveIntegerField(default=4000)
    near_duplicate_threshold = models.FloatField(
        default=0.8, help_text="Questions at least this similar (cosine) are one cluster."
    )
    eval_fraction = models.FloatField(
        default=0.1, help_text="Share of clusters held out for evaluation."
    )
    scrub_pii = models.BooleanField(default=True)
    pii_entities = models.JSONField(
        default=pii_entities_default,
        validators=[validate_pii_entities],
        help_text="The kinds of PII scrubbed per source: user_messages, model_answers, "
        "corrections, each a list of EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SECRET.",
    )
    scrub_private_ips = models.BooleanField(
        default=False,
        help_text="Scrub private-range IP addresses too (RFC 1918, loopback, link-local), "
        "wherever IP addresses are scrubbed.",
    )
    # Retraining (see the training jobs): how much new data justifies a new adapter.
    min_new_examples_to_retrain = models.PositiveIntegerField(default=50)
    # Promotion gate (retrain.evaluation.gate): a candidate replaces production automatically
    # only if, on the same questions, the 95 % interval of its mean difference on this
    # per-example metric lies above the margin; otherwise it waits for an admin.
    promotion_metric = models.CharField(
        max_length=20,
        choices=[("token_f1", "Token F1"), ("rouge_l", "ROUGE-L"), ("judge", "LLM judge score")],
        default="token_f1",
    )
    promotion_margin = models.FloatField(
        default=0.01,
        help_text="Absolute difference on the metric (a score from 0 to 1) the candidate must "
        "be shown to beat production by, e.g. 0.01 = one point of token F1.",
    )
    min_eval_examples = models.PositiveIntegerField(
        default=30,
        help_text="Fewest paired evaluation examples a gate decision may rest on; below it the "
        "decision is 'insufficient evidence'.",
    )

    class Meta:
        verbose_name_plural = "curation policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(near_duplicate_threshold__gt=0, near_duplicate_threshold__lte=1),
                name="policy_threshold_range",
            ),
            models.CheckConstraint(
                condition=Q(eval_fraction__gte=0, eval_fraction__lte=0.5),
                name="policy_eval_fraction_range",
            ),
            models.CheckConstraint(
                condition=Q(min_score__isnull=True) | Q(min_score__gte=1, min_score__lte=5),
                name="policy_min_score_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Curation policy of {self.project}"


class InstructionExample(models.Model):
    """What curation made of one rated or reviewed interaction. Re-curating updates it in
    place; dataset versions freeze copies, so this row is the working state, not history."""

    class Status(models.TextChoices):
        INCLUDED = "included", "Included"
        DUPLICATE = "duplicate", "Duplicate of a better example in its cluster"
        EXCLUDED = "excluded", "Excluded by the policy"

    class Signal(models.TextChoices):
        REVIEWER_CORRECTION = "reviewer_correction", "Reviewer's ideal answer"
        REVIEWER_APPROVED = "reviewer_approved", "Approved by a reviewer"
        USER_CORRECTION = "user_correction", "End user's correction"
        THUMBS_UP = "thumbs_up", "Thumbs up"
        HIGH_SCORE = "high_score", "High score"
        NEGATIVE = "negative", "Thumbs down or low score"
        NONE = "none", "No qualifying signal"

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVAL = "eval", "Eval"

    # No index of its own: (project, status) leads with it, and curation writes every example.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    interaction = models.OneToOneField(
        Interaction, on_delete=models.CASCADE, related_name="instruction_example"
    )
    status = models.CharField(max_length=20, choices=Status.choices)
    signal = models.CharField(max_length=30, choices=Signal.choices)
    exclusion_reason = models.CharField(max_length=200, blank=True)
    # Chat format: system (with the retrieved context as served), user/assistant turns, then
    # the target assistant answer last.
    messages = models.JSONField()
    # The answer the target replaced (the model's), for preference pairs; "" when none.
    rejected_answer = models.TextField(blank=True)
    # How many findings of each PII kind scrubbing replaced in this example's texts.
    pii_scrubbed = models.JSONField(default=dict, blank=True)
    # Provenance.
    rating = models.ForeignKey(Rating, null=True, blank=True, on_delete=models.SET_NULL)
    review = models.ForeignKey(Review, null=True, blank=True, on_delete=models.SET_NULL)
    # sha256 of the normalised question turns and target: exact duplicates share it.
    content_hash = models.CharField(max_length=64, db_index=True)
    question_embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    # The first example of the project with this very question embedding: the near-duplicate
    # search looks only at these, one per distinct question, however often it was asked.
    # Curation hands the mark on when it removes the example that holds it.
    first_of_question = models.BooleanField(default=False, db_default=False)
    # The founding example's id of the near-duplicate cluster; never changes once set.
    cluster = models.BigIntegerField(db_index=True)
    split = models.CharField(max_length=10, choices=Split.choices)
    # Higher is better; decides the cluster's representative.
    quality = models.SmallIntegerField()
    curated_at = models.DateTimeField()

    class Meta:
        indexes = [
            HnswIndex(
                name="example_first_question_hnsw",
                fields=["question_embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
                condition=models.Q(first_of_question=True),
            ),
            models.Index(fields=["project", "status"], name="example_project_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "question_embedding"],
                condition=models.Q(first_of_question=True),
                name="example_one_first_of_question",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} {self.signal} example of {self.interaction_id}"


class DatasetVersion(models.Model):
    """An immutable snapshot of a project's curated examples, identified by content hash."""

    class Trigger(models.TextChoices):
        DASHBOARD = "dashboard", "Dashboard"
        API = "api", "API"
        COMMAND = "command", "Management command"
        SCHEDULE = "schedule", "Schedule"
        JOB = "job", "Job"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_versions")
    number = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    policy = models.JSONField(help_text="The curation policy as it was.")
    counts = models.JSONField()
    stats = models.JSONField()
    diff = models.JSONField(help_text="Against the previous version.")
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT)
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="dataset_unique_number"),
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="dataset_unique_content"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} dataset v{self.number}"


class DatasetRecord(models.Model):
    """One frozen row of a dataset version: an SFT example or a preference pair."""

    class Kind(models.TextChoices):
        SFT = "sft", "Instruction example"
        PREFERENCE = "preference", "Preference pair"

    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.CASCADE, related_name="records"
    )
    example = models.ForeignKey(
        InstructionExample, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    split = models.CharField(max_length=10, choices=InstructionExample.Split.choices)
    # The prompt messages (system + conversation), without the answer.
    prompt = models.JSONField()
    chosen = models.TextField()
    rejected = models.TextField(blank=True)
    signal = models.CharField(max_length=30)
    content_hash = models.CharField(max_length=64)
    # The interaction's source: a logged one's prompt is the app's own, not our template.
    source = models.CharField(max_length=20, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["dataset_version", "kind", "split"], name="record_version_kind")
        ]

    def __str__(self) -> str:
        return f"{self.kind}/{self.split} record of {self.dataset_version}"


class Job(models.Model):
    """Every long task: its state, progress, parameters, results and who started it.

    The worker running a job beats a heartbeat; a running job whose heartbeat goes stale had
    its worker die, and the reaper retries it (training resumes from its checkpoint) or
    fails it — a job is never left "running" forever.
    """

    class Kind(models.TextChoices):
        INDEX_REFRESH = "index_refresh", "Index refresh"
        LORA_TRAINING = "lora_training", "LoRA training"
        EVALUATION = "evaluation", "Evaluation"
        DATASET_SNAPSHOT = "dataset_snapshot", "Dataset snapshot"
        RETRIEVER_TRAINING = "retriever_training", "Retriever training"
        RECURATION = "recuration", "Re-curation"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    class Trigger(models.TextChoices):
        DASHBOARD = "dashboard", "Dashboard"
        ADMIN = "admin", "Django admin"
        API = "api", "API"
        COMMAND = "command", "Management command"
        SCHEDULE = "schedule", "Schedule"
        JOB = "job", "Another job"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=300, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # What the job produced.
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_version = models.ForeignKey(
        "flywheel.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    index_version = models.ForeignKey(
        "flywheel.IndexVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        indexes = [models.Index(fields=["project", "-created_at"], name="job_project_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="job_progress_max_100")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES


class Experiment(models.Model):
    """A canary experiment: a share of a project's traffic is served by a candidate (a model
    version, an index version, or both) while the rest stays on production, until the live
    ratings decide between them (retrain.experiments). One runs per project at a time."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        FINISHED = "finished", "Finished"

    class Metric(models.TextChoices):
        THUMBS_UP_RATE = "thumbs_up_rate", "Thumbs-up rate (thumbs up among thumbs)"
        MEAN_SCORE = "mean_score", "Mean score (1-5)"

    class Verdict(models.TextChoices):
        CANDIDATE_WINS = "candidate_wins", "Candidate wins"
        CONTROL_WINS = "control_wins", "Control wins"
        NO_DIFFERENCE = "no_difference", "No difference"
        NOT_ENOUGH_DATA = "not_enough_data", "Not enough data at the deadline"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="experiments")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    candidate_model_version = models.ForeignKey(
        "flywheel.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="experiments",
    )
    candidate_index_version = models.ForeignKey(
        "flywheel.IndexVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="experiments",
    )
    # What control was when the experiment started: production and the active index.
    control_model_version = models.ForeignKey(
        "flywheel.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    control_index_version = models.ForeignKey(
        "flywheel.IndexVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    candidate_share = models.FloatField(help_text="Share of the traffic the candidate serves.")
    shadow_share = models.FloatField(
        default=0.0, help_text="Share of control's traffic the candidate also answers, unseen."
    )
    metric = models.CharField(max_length=20, choices=Metric.choices)
    min_ratings_per_arm = models.PositiveIntegerField()
    no_difference_margin = models.FloatField(
        help_text="A difference smaller than this either way counts as none."
    )
    ends_at = models.DateTimeField(help_text="The deadline: undecided then, not enough data.")
    auto_promote = models.BooleanField(default=False)
    stop_on_loss = models.BooleanField(default=True)
    error_rate_factor = models.FloatField(default=2.0)
    latency_p95_factor = models.FloatField(default=2.0)
    safety_min_requests = models.PositiveIntegerField(default=20)
    verdict = models.CharField(max_length=20, choices=Verdict.choices, blank=True)
    # The figures the verdict rests on, and what followed from it (promotion, its refusal).
    evidence = models.JSONField(default=dict, blank=True)
    # The confidence sequence of the difference as it narrowed: one point per evaluation
    # that saw new ratings, thinned to a bounded length.
    history = models.JSONField(default=list, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who started it and who stopped it, as shown: a user, an API key, the experiment itself.
    started_by_name = models.CharField(max_length=300, blank=True)
    stopped_by_name = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status="running"),
                name="experiment_one_running_per_project",
            ),
            models.CheckConstraint(
                condition=Q(candidate_share__gt=0, candidate_share__lt=1),
                name="experiment_candidate_share_range",
            ),
            models.CheckConstraint(
                condition=Q(shadow_share__gte=0, shadow_share__lte=1),
                name="experiment_shadow_share_range",
            ),
            models.CheckConstraint(
                condition=Q(candidate_model_version__isnull=False)
                | Q(candidate_index_version__isnull=False),
                name="experiment_has_a_candidate",
            ),
        ]
        indexes = [models.Index(fields=["project", "-started_at"], name="experiment_recent")]

    def __str__(self) -> str:
        return f"Experiment #{self.pk} on {self.project} ({self.status})"
