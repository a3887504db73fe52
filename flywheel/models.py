import hashlib
import secrets
import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIMENSIONS = 384


class BaseModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class GenerationBackend(models.TextChoices):
    LOCAL = "local", "Local (transformers)"
    OPENAI = "openai", "OpenAI-compatible HTTP server"


class Project(BaseModel):
    """A tenant: owns its documents, interactions, datasets and model versions."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    system_prompt = models.TextField(
        blank=True,
        help_text="Instructions given to the model before the retrieved context; "
        "empty uses the default.",
    )
    # Empty fields fall back to the FLYWHEEL_GENERATION_* settings.
    generation_backend = models.CharField(
        max_length=20, choices=GenerationBackend.choices, blank=True
    )
    remote_base_url = models.URLField(
        blank=True, help_text="OpenAI-compatible server, e.g. http://vllm:8000/v1"
    )
    remote_model = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return self.name


class ApiKeyScope(models.TextChoices):
    """What an API key may do; each endpoint needs one."""

    CHAT = "chat", "chat: ask questions (/v1/chat/completions)"
    LOG = "log", "log: log interactions, add documents"
    READ = "read", "read: read interactions, documents and version lists"
    RATE = "rate", "rate: submit ratings"
    DATASETS = "datasets", "datasets: snapshot, list and export dataset versions"
    JOBS = "jobs", "jobs: start, follow and cancel jobs"
    VERSIONS = "versions", "versions: promote, roll back and activate versions"


class ApiKey(BaseModel):
    """A key an app presents as a Bearer token. Only its SHA-256 is stored.

    Each endpoint needs one scope; a key carries the scopes it was created with. Public keys
    are for the rating widget: they carry `rate` alone and work only from their origins."""

    class Kind(models.TextChoices):
        SECRET = "secret", "Secret (server side, any scopes)"
        PUBLIC = "public", "Public (widget: rate only, from allowed origins)"

    Scope = ApiKeyScope
    PREFIXES = {Kind.SECRET: "fw_sk_", Kind.PUBLIC: "fw_pk_"}
    # What an app that serves and logs needs; the rest administers the project.
    DEFAULT_SECRET_SCOPES = (Scope.CHAT, Scope.LOG, Scope.READ, Scope.RATE)
    PUBLIC_SCOPES = (Scope.RATE,)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200)
    # The first characters of the key, enough to recognise it in a list.
    display_prefix = models.CharField(max_length=20)
    key_hash = models.CharField(max_length=64, unique=True)
    allowed_origins = models.JSONField(
        default=list, blank=True, help_text="Public keys: origins allowed to use the key."
    )
    scopes = ArrayField(
        models.CharField(max_length=20, choices=Scope.choices),
        default=list,
        help_text="What the key may do; each endpoint needs one scope.",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(scopes__contained_by=ApiKeyScope.values),
                name="api_key_known_scopes",
            ),
            models.CheckConstraint(
                condition=Q(kind="secret") | Q(scopes__contained_by=["rate"]),
                name="api_key_public_rates_only",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @staticmethod
    def hash_key(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @classmethod
    def generate_raw_key(cls, kind: str) -> str:
        return cls.PREFIXES[kind] + secrets.token_urlsafe(32)


class Document(BaseModel):
    """One source document of a project's knowledge base, as it was last added."""

    class ContentType(models.TextChoices):
        TEXT = "text", "Plain text"
        MARKDOWN = "markdown", "Markdown"
        HTML = "html", "HTML"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=500)
    source_uri = models.CharField(max_length=2000)
    content_type = models.CharField(max_length=20, choices=ContentType.choices)
    content = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 of the content type and content: re-adding an unchanged document is a no-op.
    content_hash = models.CharField(max_length=64)
    # The content_hash last indexed; differs from content_hash while indexing is pending.
    indexed_hash = models.CharField(max_length=64, blank=True)
    # Why the last indexing attempt failed (the task retries); empty once it succeeds.
    index_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "source_uri"], name="document_unique_source_per_project"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @staticmethod
    def hash_content(*, content_type: str, content: str) -> str:
        return hashlib.sha256(f"{content_type}\0{content}".encode()).hexdigest()


class IndexVersion(BaseModel):
    """A retrieval index of a project: the chunks it holds and how they were made.

    Exactly one version per project is active; retrieval reads it. Activation switches that
    pointer in one transaction, and earlier versions stay for rollback.
    """

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="index_versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.BUILDING)
    embedding_model = models.CharField(max_length=500)
    # The fine-tuned retriever that embedded it; empty: the bundled (or configured) model.
    embedding_model_version = models.ForeignKey(
        "EmbeddingModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="index_versions",
    )
    chunking = models.JSONField(default=dict, help_text="Chunk size and overlap used.")
    description = models.TextField(blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # What went in: documents, correction FAQ entries, reused and new embeddings.
    stats = models.JSONField(default=dict, blank=True)
    # The retrain job that built it. An id, not a foreign key: the serving core sits below
    # the jobs that produce its versions and must not depend on them.
    built_by_job_id = models.BigIntegerField(null=True, blank=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "number"], name="index_version_unique_number"
            ),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status="active"),
                name="index_version_one_active_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} index v{self.number} ({self.status})"


class Chunk(models.Model):
    """A passage of a document inside one index version, embedded and full-text indexed."""

    class Kind(models.TextChoices):
        DOCUMENT = "document", "Document passage"
        FAQ = "faq", "Approved correction (question and ideal answer)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    index_version = models.ForeignKey(IndexVersion, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(
        Document, on_delete=models.CASCADE, related_name="chunks", null=True, blank=True
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.DOCUMENT)
    # For an FAQ chunk: the id of the reviewer's correction it was made from (feedback sits
    # above the serving core, so an id rather than a foreign key).
    review_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    position = models.PositiveIntegerField()
    heading = models.TextField(blank=True)
    text = models.TextField()
    # Copied from the document so that metadata filters need no join.
    metadata = models.JSONField(default=dict, blank=True)
    # Hash of what was embedded: a refresh reuses the vector of an unchanged passage.
    content_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    search_vector = models.GeneratedField(
        expression=SearchVector("heading", "text", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # ef_construction 128: recall@10 0.95 at ef_search 100 over 100k chunks, where 64
            # needed 300 (bench/retrieval.py; bench/README.md), for twice the build time.
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
            models.Index(fields=["index_version", "document"], name="chunk_version_document"),
        ]

    def __str__(self) -> str:
        return f"{self.heading or self.text[:40]}"


class ChunkTerm(models.Model):
    """How many chunks of an index version hold a full-text lexeme, so that keyword search
    knows a query's rare terms without counting rows. Kept by triggers on flywheel_chunk
    (migration 0009_keyword_search); never written from Python."""

    # An id, not a foreign key: the triggers write it, and an index version's chunks going
    # (deleted) take their counts with them.
    index_version_id = models.BigIntegerField()
    lexeme = models.TextField()
    chunks = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["index_version_id", "lexeme"], name="chunk_term_version_lexeme"
            )
        ]

    def __str__(self) -> str:
        return f"{self.lexeme}: {self.chunks}"


class ModelVersion(BaseModel):
    """A servable model: a base model plus, optionally, a LoRA adapter. Never edited after
    creation except for its status; one production version per project."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"
        REJECTED = "rejected", "Rejected"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=200)
    base_model = models.CharField(
        max_length=500, help_text="Local model folder; empty means FLYWHEEL_BASE_MODEL."
    )
    adapter_path = models.CharField(max_length=1000, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CANDIDATE)
    metrics = models.JSONField(default=dict, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Lineage: trained on this dataset version, by this job, starting from this version. Ids,
    # not foreign keys: datasets and jobs belong to the retrain layer above.
    dataset_version_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    training_job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="model_version_unique_name"),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status="production"),
                name="model_version_one_production_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name} ({self.status})"


class ExperimentArm(models.TextChoices):
    """The two arms of a canary experiment: production, and the candidate it is tested against."""

    CONTROL = "control", "Control (production)"
    CANDIDATE = "candidate", "Candidate"


class AssignmentUnit(models.TextChoices):
    """What a request's experiment arm was drawn by: a stable id of the person, so that they
    see one arm throughout, or chance when the request named nobody."""

    USER = "user", "The end user (`user`)"
    RATER = "rater", "The rater id (`flywheel.rater_id`)"
    SESSION = "session", "The session (`flywheel.session_id`)"
    RANDOM = "random", "Random: the request named nobody"


class Interaction(models.Model):
    """One question and its answer, logged in full: what was asked, what was retrieved (with
    scores, ranks and the index version), what answered, how long it took and how many tokens."""

    class Source(models.TextChoices):
        CHAT = "chat", "Served by Flywheel"
        LOG = "log", "Logged by the app"

    class AnsweredFrom(models.TextChoices):
        GENERATED = "generated", "Generated by the model"
        VERIFIED_ANSWER = "verified_answer", "A verified answer"
        QUOTE = "quote", "Quoted from the passages"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the indexes below lead with the project.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="interactions", db_index=False
    )
    source = models.CharField(max_length=10, choices=Source.choices)
    # The client's id for this interaction: sending it again is a no-op. NULL, not "", when
    # absent, so that the uniqueness constraint ignores interactions without one.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # A hash of what was sent with the idempotency key: a resend must match it (a different
    # body under the same key is refused). Empty where unknown (older rows, served answers).
    request_hash = models.CharField(max_length=64, blank=True)
    session_id = models.CharField(max_length=200, blank=True)
    end_user_id = models.CharField(max_length=200, blank=True)
    messages = models.JSONField(default=list)
    query_text = models.TextField(blank=True)
    query_embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    # [{chunk_id, document_id, title, source_uri, text, score, rank, index_version_id}, ...]
    retrieved = models.JSONField(default=list, blank=True)
    response = models.TextField(blank=True)
    # The versions and the verified answer are indexed only where set (Meta): an interaction
    # an app logged has none.
    model_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    model_name = models.CharField(max_length=300, blank=True)
    index_version = models.ForeignKey(
        IndexVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    # How the answer was made: generated, a verified answer served for the question, or a
    # quote of the passages (empty for interactions logged by an app).
    answered_from = models.CharField(max_length=20, choices=AnsweredFrom.choices, blank=True)
    verified_answer = models.ForeignKey(
        "VerifiedAnswer",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="served",
        db_index=False,
    )
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The canary experiment that served it (an id: experiments belong to the retrain layer),
    # the arm it was assigned and by what; empty outside experiments and for logged ones.
    experiment_id = models.BigIntegerField(null=True, blank=True)
    experiment_arm = models.CharField(max_length=10, choices=ExperimentArm.choices, blank=True)
    assignment_unit = models.CharField(max_length=10, choices=AssignmentUnit.choices, blank=True)
    created_at = models.DateTimeField()
    # For the dashboard's full-text search over questions and answers.
    search_vector = models.GeneratedField(
        expression=SearchVector("query_text", "response", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        indexes = [
            GinIndex(fields=["search_vector"], name="interaction_search_gin"),
            models.Index(fields=["project", "created_at"], name="interaction_project_time"),
            models.Index(
                fields=["project", "model_version", "created_at"],
                name="interaction_model_time",
            ),
            # The list filtered by index version, newest first: without it, a page of an
            # old version walks past every newer interaction. Partial: the filter always names
            # a version, and interactions logged without one cost it nothing to write.
            models.Index(
                fields=["project", "index_version", "created_at"],
                condition=Q(index_version__isnull=False),
                name="interaction_index_time",
            ),
            # What a version's deletion (PROTECT) or a verified answer's (SET_NULL) looks up:
            # partial, so that the interactions apps log, which have neither, cost them
            # nothing to write.
            models.Index(
                fields=["model_version"],
                condition=Q(model_version__isnull=False),
                name="interaction_model_version",
            ),
            models.Index(
                fields=["index_version"],
                condition=Q(index_version__isnull=False),
                name="interaction_index_version",
            ),
            models.Index(
                fields=["verified_answer"],
                condition=Q(verified_answer__isnull=False),
                name="interaction_verified_answer",
            ),
            # An experiment's figures per arm; partial, as only served interactions in an
            # experiment have one.
            models.Index(
                fields=["experiment_id", "experiment_arm"],
                condition=Q(experiment_id__isnull=False),
                name="interaction_experiment_arm",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="interaction_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.query_text[:60]}"


class ServingPolicy(BaseModel):
    """How a project answers: whether approved corrections are served as verified answers,
    how sure a match must be, and whether answers are generated, quoted from the passages, or
    generated with a quote in their place when they are not grounded in the passages."""

    class VerifiedAnswersMode(models.TextChoices):
        VERBATIM = "verbatim", "Serve the verified answer as it was approved"
        FIRST_PASSAGE = "first_passage", "Give it to the generator as the first passage"
        OFF = "off", "Off"

    class AnswerMode(models.TextChoices):
        GENERATE = "generate", "Generate from the passages"
        QUOTE = "quote", "Quote the passage sentences that best answer the question"
        GROUNDED = "grounded", "Generate; quote instead when the answer is not grounded"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="serving_policy")
    verified_answers = models.CharField(
        max_length=20, choices=VerifiedAnswersMode.choices, default=VerifiedAnswersMode.VERBATIM
    )
    # A question matches a verified one when their similarity reaches this threshold and the
    # verified answer's evidence is among the question's own top passages. Empty: the
    # threshold calibrated on the project's verified questions (see verified_answers).
    verified_match_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Cosine similarity a question needs to match a verified question; "
        "empty uses the calibrated value.",
    )
    # 1 by measurement (bench/verified_match.py): on the demo corpus, requiring the evidence
    # at rank 1 rather than within 5 kept 0.81 of the paraphrases' matches at 0.55 and cut
    # the unseen questions' false matches from 0.50 to 0.20.
    verified_match_evidence_depth = models.PositiveSmallIntegerField(
        default=1,
        help_text="The verified answer's passage must be among this many top passages of the "
        "new question; 0 skips the check.",
    )
    # The calibration: the lowest threshold at which at most `calibration_false_match_rate`
    # of pairs of distinct verified questions would match each other.
    calibration_false_match_rate = models.FloatField(default=0.02)
    calibrated_threshold = models.FloatField(null=True, blank=True)
    calibration = models.JSONField(default=dict, blank=True)
    answer_mode = models.CharField(
        max_length=20, choices=AnswerMode.choices, default=AnswerMode.GENERATE
    )
    groundedness_threshold = models.FloatField(
        default=0.6,
        help_text="Share of an answer's content words found in its passages below which a "
        "grounded-mode answer is replaced by a quote.",
    )

    class Meta:
        verbose_name_plural = "serving policies"

    def __str__(self) -> str:
        return f"Serving policy of {self.project}"


class VerifiedAnswer(BaseModel):
    """An approved correction, served for its question and for questions that ask the same.

    Made when a reviewer approves (or writes) an answer; withdrawn when the review is revised
    or rejected; stale when a document it rests on changes after approval, until reviewed
    again. Never edited otherwise: a revision makes a new one.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        STALE = "stale", "Stale: a source document changed"
        WITHDRAWN = "withdrawn", "Withdrawn"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="verified_answers")
    # The interaction whose question was corrected, and (as an id: feedback sits above the
    # serving core) the review that approved the answer.
    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="+")
    review_id = models.BigIntegerField(db_index=True)
    question = models.TextField()
    answer = models.TextField()
    # The passages the answer rests on, as retrieval log entries (document id, title, text…).
    evidence = models.JSONField(default=list, blank=True)
    # {document id: content hash at approval}: a changed hash makes the answer stale.
    source_documents = models.JSONField(default=dict, blank=True)
    question_embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    embedding_model = models.CharField(max_length=500)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.CharField(max_length=300, blank=True)
    approved_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["project", "status"], name="verified_answer_project_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["interaction"],
                condition=Q(status="active"),
                name="verified_answer_one_active_per_interaction",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.question[:60]} ({self.status})"


class EmbeddingModelVersion(BaseModel):
    """A retriever: the bundled embedding model or one fine-tuned on feedback. Never edited
    after creation except for its status; an index version records which one built it."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"
        REJECTED = "rejected", "Rejected"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="embedding_model_versions"
    )
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000, help_text="A local sentence-transformers folder.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CANDIDATE)
    metrics = models.JSONField(default=dict, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    # Lineage (ids: jobs belong to the retrain layer above).
    training_job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="embedding_model_version_unique_name"
            ),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status="production"),
                name="embedding_model_version_one_production_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name} ({self.status})"


class IdempotencyRecord(models.Model):
    """A request made under an idempotency key (`Idempotency-Key` header): a hash of what it
    sent and what it stored, so that a retry gets the same result and nothing new, and a
    different request under the same key is refused."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    # The endpoint the key belongs to: the same key may be used once per endpoint.
    scope = models.CharField(max_length=50)
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    # What the first request stored (ids), to answer its retries; null until it committed.
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "scope", "key"], name="idempotency_record_unique_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"


class OutboxMessage(models.Model):
    """A Celery task to send, committed in the same transaction as the rows whose follow-up
    it is: neither is stored without the other, and no request waits on the broker. Published
    right after the commit when the broker answers, else by the relay (services/outbox.py)."""

    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(published_at__isnull=True),
                name="outbox_message_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.task_name}{tuple(self.args)} ({'sent' if self.published_at else 'pending'})"


class TrafficSplit(BaseModel):
    """How a project's production traffic is split while a canary experiment runs: the share
    of people served by the candidate arm (a candidate model version and/or index version),
    and the share of control answers the candidate also answers in the background (shadow
    mode). Open while the experiment runs; closing it returns every request to production.
    At most one is open per project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="traffic_splits")
    # The retrain layer's Experiment (an id: the serving core sits below it).
    experiment_id = models.BigIntegerField(unique=True)
    candidate_model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    candidate_index_version = models.ForeignKey(
        IndexVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    candidate_share = models.FloatField(help_text="Share of people served by the candidate arm.")
    shadow_share = models.FloatField(
        default=0.0, help_text="Share of control answers the candidate also answers; 0 is off."
    )
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(closed_at__isnull=True),
                name="traffic_split_one_open_per_project",
            ),
            models.CheckConstraint(
                condition=Q(candidate_share__gt=0) & Q(candidate_share__lt=1),
                name="traffic_split_candidate_share_range",
            ),
            models.CheckConstraint(
                condition=Q(shadow_share__gte=0) & Q(shadow_share__lte=1),
                name="traffic_split_shadow_share_range",
            ),
            models.CheckConstraint(
                condition=Q(candidate_model_version__isnull=False)
                | Q(candidate_index_version__isnull=False),
                name="traffic_split_has_a_candidate",
            ),
        ]

    def __str__(self) -> str:
        state = "closed" if self.closed_at else "open"
        return f"{self.project.slug} experiment {self.experiment_id} ({state})"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class ServingFailure(models.Model):
    """A chat request that failed inside an experiment arm (the model failed or timed out):
    no interaction records it, so the experiment's safety check counts these beside the
    interactions to compare the arms' error rates."""

    class Kind(models.TextChoices):
        GENERATION_ERROR = "generation_error", "The model failed"
        TIMEOUT = "timeout", "The model timed out"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    experiment_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    experiment_arm = models.CharField(max_length=10, choices=ExperimentArm.choices, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} in experiment {self.experiment_id} ({self.experiment_arm})"


class ShadowAnswer(models.Model):
    """The candidate's answer to a question the control arm served, made in the background
    (shadow mode) and kept beside the served answer for comparison; never shown to the user."""

    interaction = models.ForeignKey(
        Interaction, on_delete=models.CASCADE, related_name="shadow_answers"
    )
    experiment_id = models.BigIntegerField(db_index=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    index_version = models.ForeignKey(
        IndexVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    response = models.TextField(blank=True)
    answered_from = models.CharField(
        max_length=20, choices=Interaction.AnsweredFrom.choices, blank=True
    )
    # Retrieval log entries, as Interaction.retrieved.
    retrieved = models.JSONField(default=list, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Why the candidate could not answer; empty when it did.
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["interaction", "experiment_id"],
                name="shadow_answer_one_per_interaction_and_experiment",
            ),
        ]

    def __str__(self) -> str:
        return f"Shadow answer to {self.interaction_id} in experiment {self.experiment_id}"
