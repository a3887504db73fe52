from django.contrib import admin

from flywheel.models import Document, Project


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "project", "source_uri", "content_type", "updated_at"]
    list_filter = ["project", "content_type"]
    search_fields = ["title", "source_uri"]
    readonly_fields = ["content_hash", "created_at", "updated_at"]
