"""The filtered interactions list as CSV (for spreadsheets) or JSON Lines (in full), streamed
row by row so that a large export neither waits nor fills the web server's memory."""

import csv
import json
from collections.abc import Iterable, Iterator

from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from dashboard.selectors.interactions import interactions_for_export
from dashboard.views.access import project_view
from dashboard.views.interactions import InteractionFilterForm
from flywheel.models import Interaction

EXPORT_CHUNK_SIZE = 500
CSV_COLUMNS = [
    "id",
    "created_at",
    "source",
    "model_version",
    "model_name",
    "index_version",
    "query",
    "response",
    "thumbs_up",
    "thumbs_down",
    "mean_score",
    "rating_corrections",
    "latest_review",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "session_id",
    "end_user_id",
]
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(cell: str) -> str:
    return f"'{cell}" if cell.startswith(FORMULA_TRIGGERS) else cell


def _csv_row(interaction: Interaction) -> list:
    return [
        interaction.id,
        interaction.created_at.isoformat(),
        interaction.source,
        interaction.model_version.name if interaction.model_version else "",
        interaction.model_name,
        interaction.index_version.number if interaction.index_version else "",
        interaction.query_text,
        interaction.response,
        interaction.thumbs_up,
        interaction.thumbs_down,
        "" if interaction.mean_score is None else round(interaction.mean_score, 2),
        interaction.rating_corrections,
        interaction.latest_review_decision,
        interaction.latency_ms,
        interaction.prompt_tokens,
        interaction.completion_tokens,
        interaction.session_id,
        interaction.end_user_id,
    ]


def _jsonl_record(interaction: Interaction) -> dict:
    return {
        "id": str(interaction.id),
        "created_at": interaction.created_at.isoformat(),
        "source": interaction.source,
        "session_id": interaction.session_id,
        "end_user_id": interaction.end_user_id,
        "messages": interaction.messages,
        "query": interaction.query_text,
        "response": interaction.response,
        "retrieved": interaction.retrieved,
        "model_version": interaction.model_version.name if interaction.model_version else None,
        "model_name": interaction.model_name,
        "index_version": interaction.index_version.number if interaction.index_version else None,
        "latency_ms": interaction.latency_ms,
        "prompt_tokens": interaction.prompt_tokens,
        "completion_tokens": interaction.completion_tokens,
        "metadata": interaction.metadata,
        "ratings": [
            {
                "rater_id": rating.rater_id,
                "thumb": rating.thumb or None,
                "score": rating.score,
                "comment": rating.comment,
                "correction": rating.correction,
                "tags": rating.tags,
                "source": rating.source,
                "updated_at": rating.updated_at.isoformat(),
            }
            for rating in interaction.ratings.all()
        ],
        "reviews": [
            {
                "decision": review.decision,
                "ideal_answer": review.ideal_answer,
                "note": review.note,
                "reviewer": review.reviewer.get_username(),
                "created_at": review.created_at.isoformat(),
            }
            for review in interaction.reviews.all()
        ],
    }


class _LineBuffer:
    """csv.writer writes each row here and gets the line back to yield it."""

    def write(self, line: str) -> str:
        return line


def _csv_lines(interactions: Iterable[Interaction]) -> Iterator[str]:
    writer = csv.writer(_LineBuffer())
    yield writer.writerow(CSV_COLUMNS)
    for interaction in interactions:
        cells = ("" if value is None else str(value) for value in _csv_row(interaction))
        yield writer.writerow([neutralise_formula(cell) for cell in cells])


def _jsonl_lines(interactions: Iterable[Interaction]) -> Iterator[str]:
    for interaction in interactions:
        yield json.dumps(_jsonl_record(interaction), ensure_ascii=False) + "\n"


def _export(request, project, *, extension: str, content_type: str, lines):
    form = InteractionFilterForm(request.GET, project=project)
    if not form.is_valid():
        problems = "; ".join(message for errors in form.errors.values() for message in errors)
        return HttpResponseBadRequest(
            f"Invalid filters: {problems}", content_type="text/plain; charset=utf-8"
        )
    interactions = interactions_for_export(project=project, filters=form.filters())
    response = StreamingHttpResponse(
        lines(interactions.iterator(chunk_size=EXPORT_CHUNK_SIZE)), content_type=content_type
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = (
        f'attachment; filename="{project.slug}-interactions-{stamp}.{extension}"'
    )
    return response


@project_view("viewer")
@require_safe
def interactions_export_csv(request, project):
    return _export(
        request, project, extension="csv", content_type="text/csv; charset=utf-8", lines=_csv_lines
    )


@project_view("viewer")
@require_safe
def interactions_export_jsonl(request, project):
    return _export(
        request,
        project,
        extension="jsonl",
        content_type="application/x-ndjson; charset=utf-8",
        lines=_jsonl_lines,
    )
