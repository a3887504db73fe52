from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList

from flywheel.models import (
    ApiKey,
    Chunk,
    Document,
    IndexVersion,
    Interaction,
    ModelVersion,
    Project,
)
from flywheel.services import api_key_create, api_key_revoke
from flywheel.services.api_keys import ApiKeyInvalid, api_key_check
from flywheel.tasks.indexing import document_index


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "generation_backend", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]


class ApiKeyCreateForm(forms.ModelForm):
    """Creation only: the rules are api_key_check's, and its refusal lands on its field."""

    allowed_origins_text = forms.CharField(
        label="Allowed origins",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Public keys: one origin per line, e.g. https://app.example.com",
    )
    scope_choices = forms.MultipleChoiceField(
        label="Scopes",
        choices=ApiKey.Scope.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: a secret key gets chat, log, read and rate; a public key rate.",
    )

    class Meta:
        model = ApiKey
        fields = ["project", "kind", "name"]

    FIELD_OF = {"allowed_origins": "allowed_origins_text", "scopes": "scope_choices"}

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            cleaned["spec"] = api_key_check(
                kind=cleaned["kind"],
                name=cleaned["name"],
                allowed_origins=cleaned.get("allowed_origins_text", "").splitlines(),
                scopes=cleaned.get("scope_choices") or None,
            )
        except ApiKeyInvalid as invalid:
            self.add_error(self.FIELD_OF.get(invalid.field, invalid.field), invalid.message)
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "project",
        "kind",
        "scope_list",
        "display_prefix",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = ["project", "kind"]
    search_fields = ["name", "display_prefix"]
    readonly_fields = [
        "scopes",
        "display_prefix",
        "key_hash",
        "revoked_at",
        "last_used_at",
        "created_at",
    ]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["project", "kind", "name", "scope_choices", "allowed_origins_text"]
        return ["project", "kind", "name", "allowed_origins", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        # A key's kind, scopes and origins are what it was created with; to change them,
        # create another key and revoke this one.
        if obj is None:
            return []
        return ["project", "kind", "allowed_origins", *self.readonly_fields]

    @admin.display(description="Scopes")
    def scope_list(self, api_key: ApiKey) -> str:
        return " ".join(api_key.scopes)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        spec = form.cleaned_data["spec"]
        created = api_key_create(
            project=form.cleaned_data["project"],
            kind=spec.kind,
            name=spec.name,
            allowed_origins=spec.allowed_origins,
            scopes=spec.scopes,
        )
        obj.pk = created.api_key.pk
        obj.refresh_from_db()
        messages.warning(request, f"Copy the new key now, it is not shown again: {created.raw_key}")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "source_uri", "content_type", "updated_at"]
    list_filter = ["project", "content_type"]
    search_fields = ["title", "source_uri"]
    readonly_fields = ["content_hash", "indexed_hash", "created_at", "updated_at"]
    actions = ["reindex"]

    @admin.action(description="Queue the selected documents for indexing")
    def reindex(self, request, queryset):
        queryset.update(indexed_hash="")
        for document_id in queryset.values_list("pk", flat=True):
            document_index.delay_on_commit(document_id)
        messages.success(request, f"Queued {queryset.count()} document(s).")


@admin.register(IndexVersion)
class IndexVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "status", "embedding_model", "activated_at"]
    list_filter = ["project", "status"]
    readonly_fields = [field.name for field in IndexVersion._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ["id", "index_version", "document", "kind", "position", "heading"]
    list_filter = ["project", "kind"]
    search_fields = ["heading", "text"]
    exclude = ["embedding"]
    readonly_fields = [
        "project",
        "index_version",
        "document",
        "kind",
        "position",
        "heading",
        "text",
        "metadata",
        "content_hash",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "base_model", "adapter_path", "promoted_at"]
    list_filter = ["project", "status"]
    readonly_fields = ["status", "metrics", "promoted_at", "created_by", "created_at"]


class OutOfRangeDatesChangeList(ChangeList):
    """The date hierarchy's last year, 9999, has no next year for Python to bound it with:
    such a link is treated as a bad filter (a notice) rather than a 500."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            raise IncorrectLookupParameters(error) from error


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "project", "source", "query_text", "model_name", "latency_ms"]
    list_filter = ["project", "source"]
    search_fields = ["query_text", "response", "idempotency_key", "end_user_id"]
    date_hierarchy = "created_at"
    exclude = ["query_embedding"]

    def get_changelist(self, request, **kwargs):
        return OutOfRangeDatesChangeList

    def get_readonly_fields(self, request, obj=None):
        return [
            field.name
            for field in Interaction._meta.fields
            if field.name not in {"query_embedding", "search_vector"}
        ]

    def has_add_permission(self, request):
        return False


# ---------------------------------------------------------------------------------------------
# Verified answers, the serving policy and retrievers. Imported here, at the end, so that this
# part stays apart from the rest of the module.

from flywheel.models import EmbeddingModelVersion, ServingPolicy, VerifiedAnswer  # noqa: E402
from flywheel.services.verified_answers import (  # noqa: E402
    SERVING_POLICY_EDITABLE_FIELDS,
    serving_policy_errors,
    serving_policy_update,
    verified_answers_calibrate,
)


class ServingPolicyAdminForm(forms.ModelForm):
    class Meta:
        model = ServingPolicy
        fields = list(SERVING_POLICY_EDITABLE_FIELDS)

    def clean(self):
        cleaned = super().clean()
        values = {name: cleaned[name] for name in SERVING_POLICY_EDITABLE_FIELDS if name in cleaned}
        for name, error in serving_policy_errors(**values).items():
            self.add_error(name, error)
        return cleaned


@admin.register(ServingPolicy)
class ServingPolicyAdmin(admin.ModelAdmin):
    form = ServingPolicyAdminForm
    list_display = [
        "project",
        "verified_answers",
        "verified_match_threshold",
        "calibrated_threshold",
        "answer_mode",
        "updated_at",
    ]
    list_filter = ["verified_answers", "answer_mode"]
    fields = [
        "project",
        *SERVING_POLICY_EDITABLE_FIELDS,
        "calibrated_threshold",
        "calibration",
        "updated_at",
    ]
    readonly_fields = ["project", "calibrated_threshold", "calibration", "updated_at"]
    actions = ["calibrate"]

    def has_add_permission(self, request):
        return False  # made with its defaults when a project first answers

    def save_model(self, request, obj, form, change):
        serving_policy_update(
            project=obj.project,
            **{name: form.cleaned_data[name] for name in SERVING_POLICY_EDITABLE_FIELDS},
        )

    @admin.action(description="Calibrate the match threshold of the selected projects")
    def calibrate(self, request, queryset):
        for policy in queryset.select_related("project"):
            verified_answers_calibrate(project=policy.project)
        messages.success(request, f"Calibrated {queryset.count()} serving policies.")


@admin.register(VerifiedAnswer)
class VerifiedAnswerAdmin(admin.ModelAdmin):
    list_display = ["question", "project", "status", "approved_at", "review_id"]
    list_filter = ["project", "status"]
    search_fields = ["question", "answer", "status_reason"]
    date_hierarchy = "approved_at"
    exclude = ["question_embedding"]

    def get_readonly_fields(self, request, obj=None):
        return [
            field.name
            for field in VerifiedAnswer._meta.fields
            if field.name != "question_embedding"
        ]

    def has_add_permission(self, request):
        return False  # made by approving an answer in the review queue


@admin.register(EmbeddingModelVersion)
class EmbeddingModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "path", "promoted_at"]
    list_filter = ["project", "status"]
    readonly_fields = [field.name for field in EmbeddingModelVersion._meta.fields]

    def has_add_permission(self, request):
        return False


# ---------------------------------------------------------------------------------------------
# Canary experiments' serving side: read only, since experiments open and close their splits
# (retrain's experiment services) and serving writes the rest.

from flywheel.models import ServingFailure, ShadowAnswer, TrafficSplit  # noqa: E402


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TrafficSplit)
class TrafficSplitAdmin(ReadOnlyAdmin):
    list_display = [
        "experiment_id",
        "project",
        "candidate_model_version",
        "candidate_index_version",
        "candidate_share",
        "shadow_share",
        "opened_at",
        "closed_at",
    ]
    list_filter = ["project"]


@admin.register(ServingFailure)
class ServingFailureAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "project", "experiment_id", "experiment_arm", "kind"]
    list_filter = ["project", "experiment_arm", "kind"]
    search_fields = ["detail"]


@admin.register(ShadowAnswer)
class ShadowAnswerAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "experiment_id",
        "interaction",
        "model_version",
        "index_version",
        "latency_ms",
    ]
    list_filter = ["experiment_id"]
    search_fields = ["response", "error"]
    raw_id_fields = ["interaction"]
