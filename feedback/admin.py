from django.contrib import admin

from feedback.models import Interaction


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "project", "source", "query_text", "model_name", "latency_ms"]
    list_filter = ["project", "source"]
    search_fields = ["query_text", "response", "idempotency_key", "end_user_id"]
    date_hierarchy = "created_at"
    exclude = ["query_embedding"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Interaction._meta.fields if field.name != "query_embedding"]

    def has_add_permission(self, request):
        return False
