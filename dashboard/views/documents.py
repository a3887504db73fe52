"""The knowledge base: every document with its index state; admins upload and delete files.
Writes go through flywheel.services.documents."""

from django import forms
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dashboard.selectors.documents import document_get, documents_with_index_state
from dashboard.views.access import project_view
from feedback.selectors import role_allows
from flywheel.document_files import (
    ACCEPTED_SUFFIXES,
    DOCUMENT_FILE_MAX_BYTES,
    DocumentNotReadable,
)
from flywheel.services import document_delete, document_ingest_file

UPLOAD_OUTCOME = {
    "created": "Added “{title}”; it is being indexed.",
    "updated": "Replaced “{title}” with the new file; it is being indexed again.",
    "unchanged": "“{title}” is already in the knowledge base, unchanged.",
}


class DocumentUploadForm(forms.Form):
    file = forms.FileField(
        label="File",
        help_text=(
            f"{', '.join(ACCEPTED_SUFFIXES)}; up to {DOCUMENT_FILE_MAX_BYTES // (1024 * 1024)} "
            "MiB. A file with the name of a document already here replaces it."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ",".join(ACCEPTED_SUFFIXES)}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        # Refused before it is read: the size alone decides.
        if upload.size > DOCUMENT_FILE_MAX_BYTES:
            raise forms.ValidationError(
                "The file is larger than %(limit)s MiB.",
                params={"limit": DOCUMENT_FILE_MAX_BYTES // (1024 * 1024)},
            )
        return upload


def _documents_page(request, project, form: DocumentUploadForm, status: int = 200):
    return render(
        request,
        "dashboard/documents.html",
        {
            "project": project,
            "role": request.role,
            "section": "documents",
            "documents": documents_with_index_state(project=project),
            "can_edit": role_allows(request.role, "admin"),
            "form": form,
        },
        status=status,
    )


@project_view("viewer")
@require_http_methods(["GET", "HEAD"])
def documents(request, project):
    return _documents_page(request, project, DocumentUploadForm())


@project_view("admin")
@require_http_methods(["POST"])
def document_upload(request, project):
    form = DocumentUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _documents_page(request, project, form, status=400)
    upload = form.cleaned_data["file"]
    try:
        result = document_ingest_file(project=project, name=upload.name, data=upload.read())
    except DocumentNotReadable as error:
        form.add_error("file", f"{upload.name} cannot be added: {error}.")
        return _documents_page(request, project, form, status=400)
    messages.success(request, UPLOAD_OUTCOME[result.outcome].format(title=result.document.title))
    return redirect("dashboard:documents", project_slug=project.slug)


@project_view("admin")
@require_http_methods(["GET", "HEAD", "POST"])
def document_delete_confirm(request, project, document_id: int):
    """GET asks for confirmation; POST deletes."""
    document = document_get(project=project, document_id=document_id)
    if document is None:
        raise Http404("No such document in this project")
    if request.method == "POST":
        title = document.title
        document_delete(document=document)
        messages.success(request, f"Deleted “{title}” and its passages from the index.")
        return redirect("dashboard:documents", project_slug=project.slug)
    return render(
        request,
        "dashboard/document_delete.html",
        {"project": project, "role": request.role, "section": "documents", "document": document},
    )
