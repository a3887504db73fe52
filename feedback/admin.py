from django.contrib import admin

from feedback.models import (
    PairwiseJudgement,
    ProjectMembership,
    Rating,
    RatingSubmission,
    Review,
    ReviewRevision,
)


@admin.register(ProjectMembership)
class ProjectMembershipAdmin(admin.ModelAdmin):
    """Who may use a project's dashboard, and as what."""

    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["project", "role"]
    search_fields = ["user__username", "user__email"]
    autocomplete_fields = ["user"]


class RatingSubmissionInline(admin.TabularInline):
    model = RatingSubmission
    extra = 0
    can_delete = False
    readonly_fields = ["thumb", "score", "comment", "correction", "tags", "source", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ["interaction", "rater_id", "thumb", "score", "source", "updated_at"]
    list_filter = ["source", "thumb"]
    search_fields = ["rater_id", "comment", "correction"]
    readonly_fields = [
        "interaction",
        "rater_id",
        "thumb",
        "score",
        "comment",
        "correction",
        "tags",
        "source",
        "created_at",
        "updated_at",
    ]
    inlines = [RatingSubmissionInline]

    def has_add_permission(self, request):
        return False


class ReviewRevisionInline(admin.TabularInline):
    """The review's history; revising is done from the dashboard or the API, where the rules
    (who may revise, what follows) apply."""

    model = ReviewRevision
    extra = 0
    can_delete = False
    ordering = ["number"]
    readonly_fields = ["number", "decision", "ideal_answer", "note", "author", "created_at"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["interaction", "reviewer", "decision", "created_at", "updated_at"]
    list_filter = ["decision"]
    readonly_fields = [
        "interaction",
        "reviewer",
        "decision",
        "ideal_answer",
        "note",
        "created_at",
        "updated_at",
    ]
    inlines = [ReviewRevisionInline]

    def has_add_permission(self, request):
        return False


@admin.register(PairwiseJudgement)
class PairwiseJudgementAdmin(admin.ModelAdmin):
    """Side-by-side judgements, read-only: they are made in the review queue, where only a
    project's reviewers may judge."""

    list_display = ["interaction", "shadow_answer", "reviewer", "preferred", "updated_at"]
    list_filter = ["preferred"]
    readonly_fields = [
        "interaction",
        "shadow_answer",
        "reviewer",
        "preferred",
        "note",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False
