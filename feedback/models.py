from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from flywheel.models import ApiKey, IndexVersion, Interaction, ModelVersion, Project


class ProjectMembership(models.Model):
    """A dashboard user's role in a project. Superusers act as admins of every project."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer (read only)"
        REVIEWER = "reviewer", "Reviewer (works the annotation queue)"
        ADMIN = "admin", "Admin (keys, jobs, everything)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"


class Thumb(models.TextChoices):
    UP = "up", "Thumbs up"
    DOWN = "down", "Thumbs down"


# A score of this or less (out of 5) counts as a complaint: queued for review first, and a
# negative signal for curation.
LOW_SCORE_MAX = 2


class RatingSource(models.TextChoices):
    WIDGET = "widget", "Widget"
    API = "api", "API"
    REVIEWER = "reviewer", "Reviewer"


class RatingFields(models.Model):
    thumb = models.CharField(max_length=4, choices=Thumb.choices, blank=True)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    correction = models.TextField(blank=True, help_text="The answer the rater would have liked")
    tags = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=RatingSource.choices)

    class Meta:
        abstract = True


class Rating(RatingFields):
    """The current rating of one rater on one interaction. A new rating by the same rater
    replaces it; every submission is kept in RatingSubmission."""

    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="ratings")
    rater_id = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["interaction", "rater_id"], name="rating_one_per_rater"
            ),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__gte=1, score__lte=5),
                name="rating_score_1_to_5",
            ),
        ]
        indexes = [
            # The interaction list's "with a correction" filter: the few ratings that have one,
            # found without reading every rating.
            models.Index(
                fields=["interaction"],
                condition=Q(correction__gt=""),
                name="rating_with_correction",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rater_id} on {self.interaction_id}: {self.thumb or self.score}"


class RatingSubmission(RatingFields):
    """Every rating as it was submitted, oldest first: the history behind Rating."""

    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="submissions")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"submission {self.pk} of rating {self.rating_id}"


class Review(models.Model):
    """A reviewer's verdict on an interaction, as last revised; the latest submitted review of
    an interaction counts. Every state it has had is kept in ReviewRevision."""

    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved: the answer is good"
        REJECTED = "rejected", "Rejected: keep it out of training data"
        CORRECTED = "corrected", "Corrected: the ideal answer is written"

    interaction = models.ForeignKey(Interaction, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    decision = models.CharField(max_length=20, choices=Decision.choices)
    ideal_answer = models.TextField(blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # When it was submitted or last revised: curation's sweep compares it with curated_at.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(decision="corrected") | ~Q(ideal_answer=""),
                name="review_correction_has_answer",
            ),
        ]
        indexes = [models.Index(fields=["interaction", "-created_at"], name="review_latest")]

    def __str__(self) -> str:
        return f"{self.decision} by {self.reviewer_id} on {self.interaction_id}"


class ReviewRevision(models.Model):
    """One state of a review, numbered from 1 (as submitted) in the order it was revised,
    with who made it: a dashboard user, or an API key (keys belong to a project, not to a
    person). `author` keeps the name shown, should the user or key be deleted."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    decision = models.CharField(max_length=20, choices=Review.Decision.choices)
    ideal_answer = models.TextField(blank=True)
    note = models.TextField(blank=True)
    revised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_revisions",
    )
    revised_by_api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="review_revisions"
    )
    author = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["review", "number"], name="review_revision_number"),
            models.CheckConstraint(
                condition=Q(revised_by__isnull=True) | Q(revised_by_api_key__isnull=True),
                name="review_revision_one_author",
            ),
            models.CheckConstraint(
                condition=~Q(decision="corrected") | ~Q(ideal_answer=""),
                name="review_revision_correction_has_answer",
            ),
        ]

    def __str__(self) -> str:
        return f"revision {self.number} of review {self.review_id}: {self.decision}"


class ReviewLease(models.Model):
    """An interaction handed to a reviewer by the queue; nobody else gets it until the lease
    expires, so two reviewers never work the same item at once."""

    interaction = models.OneToOneField(
        Interaction, on_delete=models.CASCADE, related_name="lease", primary_key=True
    )
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.interaction_id} leased to {self.reviewer_id} until {self.expires_at}"


class DailyRollup(models.Model):
    """A project's feedback figures for one day of interactions' creation (in the settings'
    time zone) and one combination of model version, app-named model and index version: what
    the overview reads instead of the interactions. Rebuilt bucket by bucket from the
    interactions, their current ratings and their latest review by feedback.services.rollups;
    never edited by hand."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    model_name = models.CharField(max_length=300, blank=True)
    index_version = models.ForeignKey(
        IndexVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    interactions = models.IntegerField()
    # Over the interactions' current ratings (one per rater).
    thumbs_up = models.IntegerField()
    thumbs_down = models.IntegerField()
    score_sum = models.BigIntegerField()
    score_count = models.IntegerField()
    rating_corrections = models.IntegerField()
    # Interactions with a review, and those whose latest review wrote the ideal answer.
    reviewed = models.IntegerField()
    review_corrections = models.IntegerField()
    refreshed_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Its index also serves the overview's (project, day range) reads.
            models.UniqueConstraint(
                fields=["project", "day", "model_version", "model_name", "index_version"],
                nulls_distinct=False,
                name="daily_rollup_one_per_bucket",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} on {self.day}: {self.interactions} interactions"


class RollupChange(models.Model):
    """A project and UTC day whose interactions, ratings or reviews changed after the rollups
    last caught up with them. Written by database triggers in the transaction of the change
    (see migration 0003_daily_rollups), taken and deleted by rollups_refresh. A plain project
    id, not a foreign key: a project being deleted marks its days too, after its own marks
    were gone."""

    # Indexed by rollup_change_project below, which leads with it.
    project = models.ForeignKey(
        Project,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    utc_day = models.DateField()
    marked_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["project", "marked_at"], name="rollup_change_project")]

    def __str__(self) -> str:
        return f"{self.project_id} on {self.utc_day} (UTC) changed at {self.marked_at}"


class PairwiseJudgement(models.Model):
    """A reviewer's side-by-side verdict on an interaction's served answer and the answer a
    candidate gave the same prompt in shadow mode: which is better, or a tie. One per reviewer
    and shadow answer; judging again replaces it. Judgements become preference pairs for DPO
    (retrain.curation.pairwise)."""

    class Preferred(models.TextChoices):
        SERVED = "served", "The served answer is better"
        SHADOW = "shadow", "The candidate's shadow answer is better"
        TIE = "tie", "Neither is better"

    interaction = models.ForeignKey(
        Interaction, on_delete=models.CASCADE, related_name="pairwise_judgements"
    )
    shadow_answer = models.ForeignKey(
        "flywheel.ShadowAnswer", on_delete=models.CASCADE, related_name="pairwise_judgements"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pairwise_judgements"
    )
    preferred = models.CharField(max_length=10, choices=Preferred.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shadow_answer", "reviewer"], name="pairwise_judgement_one_per_reviewer"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.preferred} by {self.reviewer_id} on {self.interaction_id}"
