"""Dataset versions in the dashboard: the list (with what curation holds now), one version in
full, its downloads, and the snapshot button for admins. Versions are immutable, so every
page here only reads; the one write is `dataset_snapshot`."""

from dataclasses import dataclass

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST, require_safe

from dashboard.views.access import project_view
from dashboard.views.policy import POLICY_SECTIONS, CurationPolicyForm
from feedback.models import Thumb
from flywheel.models import Interaction
from retrain.curation.pii import PII_KIND_LABELS
from retrain.curation.policy import curation_policy_get
from retrain.datasets.exports import (
    EXPORT_FORMATS,
    FILE_TYPES,
    SPLITS,
    EmptyExport,
    dataset_export_file,
    dataset_export_rows,
)
from retrain.datasets.snapshot import dataset_snapshot, dataset_version_eval_shortfall
from retrain.models import DatasetVersion
from retrain.selectors import (
    RECORD_SIGNAL_LABELS,
    curation_working_state,
    dataset_diff_examples,
    dataset_samples,
    dataset_version_get,
    dataset_versions_for_project,
)

VERSIONS_PER_PAGE = 50
EXPORT_DESCRIPTIONS = {
    "chat": (
        "Chat (TRL)",
        'TRL SFTTrainer: {"messages": [system, user, …, assistant]}',
    ),
    "prompt_completion": (
        "Prompt/completion (TRL)",
        "TRL SFTTrainer: prompt messages and the [assistant] completion; "
        "the loss covers the completion only",
    ),
    "dpo": (
        "DPO (TRL)",
        "TRL DPOTrainer: prompt messages, chosen and rejected [assistant] answers",
    ),
    "alpaca": (
        "Alpaca (not a TRL format)",
        "instruction, input (context), output, system: for tools that read Alpaca",
    ),
}


@dataclass(frozen=True)
class VersionBar:
    """One version in the size chart; the parts' counts set their share of the bar."""

    number: int
    train: int
    eval: int
    preference: int
    height_percent: int


def _size_chart(versions: list[DatasetVersion]) -> list[VersionBar]:
    """Oldest first, each bar as tall as its version is large next to the largest one."""
    sizes = [
        (version, version.counts["train"], version.counts["eval"], _preference_pairs(version))
        for version in reversed(versions)
    ]
    largest = max((sum(parts) for _, *parts in sizes), default=0) or 1
    return [
        VersionBar(
            number=version.number,
            train=train,
            eval=held_out,
            preference=pairs,
            height_percent=round(100 * (train + held_out + pairs) / largest),
        )
        for version, train, held_out, pairs in sizes
    ]


def _preference_pairs(version: DatasetVersion) -> int:
    return version.counts["preference_train"] + version.counts["preference_eval"]


@project_view("viewer")
@require_safe
def datasets(request, project):
    page = Paginator(dataset_versions_for_project(project=project), VERSIONS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "dashboard/datasets.html",
        {
            "project": project,
            "role": request.role,
            "section": "datasets",
            "page": page,
            "chart": _size_chart(list(page.object_list)),
            "working_state": curation_working_state(project=project),
            "min_eval_examples": curation_policy_get(project=project).min_eval_examples,
        },
    )


@project_view("admin")
@require_POST
def dataset_snapshot_create(request, project):
    version, created = dataset_snapshot(
        project=project, trigger=DatasetVersion.Trigger.DASHBOARD, created_by=request.user
    )
    link = format_html(
        '<a href="{}">dataset v{}</a>',
        reverse("dashboard:dataset_detail", args=[project.slug, version.number]),
        version.number,
    )
    if created:
        messages.success(
            request,
            format_html(
                "Created {}: {} train and {} eval examples, {} preference pairs.",
                link,
                version.counts["train"],
                version.counts["eval"],
                _preference_pairs(version),
            ),
        )
    else:
        messages.info(
            request,
            format_html(
                "Nothing changed: {} already holds exactly the current examples, so no new "
                "version was made.",
                link,
            ),
        )
    shortfall = dataset_version_eval_shortfall(
        version=version, min_eval_examples=curation_policy_get(project=project).min_eval_examples
    )
    if shortfall:
        messages.warning(request, format_html("{}: {}", link, shortfall))
    return redirect("dashboard:datasets", project_slug=project.slug)


def _version_or_404(project, number: int) -> DatasetVersion:
    version = dataset_version_get(project=project, number=number)
    if version is None:
        raise Http404("No such dataset version in this project")
    return version


def _labelled_counts(counts: dict, labels: dict) -> list[tuple[str, int]]:
    """(label, count), most frequent first; a key without a label shows as itself."""
    return sorted(
        ((labels.get(key, key), count) for key, count in counts.items()),
        key=lambda item: (-item[1], item[0]),
    )


def _policy_sections(policy: dict) -> list[tuple[str, list[tuple[str, object]]]]:
    """The frozen policy laid out as the policy page lays it out. Stored as jsonb, it keeps
    no order of its own; a setting the page does not have (added or dropped since) goes
    under "Other settings" with its stored name."""
    labels = {name: field.label for name, field in CurationPolicyForm.base_fields.items()}
    policy = _with_pii_kinds_per_source(policy)
    sections = [
        (
            section.title,
            [(labels[name], policy[name]) for name in section.field_names if name in policy],
        )
        for section in POLICY_SECTIONS
    ]
    others = sorted(set(policy) - set(labels))
    sections.append(("Other settings", [(name, policy[name]) for name in others]))
    return [(title, rows) for title, rows in sections if rows]


def _with_pii_kinds_per_source(policy: dict) -> dict:
    """The frozen `pii_entities` (source -> kinds) as the policy page's one field per source."""
    kinds_by_source = policy.get("pii_entities")
    if not isinstance(kinds_by_source, dict):
        return policy
    flattened = {key: value for key, value in policy.items() if key != "pii_entities"}
    for source, kinds in kinds_by_source.items():
        flattened[f"pii_{source}"] = ", ".join(kinds) if kinds else "none"
    return flattened


@dataclass(frozen=True)
class DownloadLink:
    split: str
    rows: int
    # (file type, url) per file type; none for a split without rows, which has no export.
    files: list[tuple[str, str]]


def _downloads(project, version: DatasetVersion) -> list[tuple[str, str, list[DownloadLink]]]:
    """Per format: its label, what it holds, and per split its row count and one link per
    file type."""
    downloads = []
    for export_format in EXPORT_FORMATS:
        label, description = EXPORT_DESCRIPTIONS[export_format]
        links = []
        for split in SPLITS:
            rows = dataset_export_rows(version=version, export_format=export_format, split=split)
            url = reverse(
                "dashboard:dataset_download",
                args=[project.slug, version.number, export_format, split],
            )
            files = [
                (file_type, url if file_type == "jsonl" else f"{url}?file={file_type}")
                for file_type in FILE_TYPES
            ]
            links.append(DownloadLink(split=split, rows=rows, files=files if rows else []))
        downloads.append((label, description, links))
    return downloads


@project_view("viewer")
@require_safe
def dataset_detail(request, project, number: int):
    version = _version_or_404(project, number)
    stats = version.stats
    min_eval_examples = curation_policy_get(project=project).min_eval_examples
    return render(
        request,
        "dashboard/dataset_detail.html",
        {
            "project": project,
            "role": request.role,
            "section": "datasets",
            "version": version,
            "preference_pairs": _preference_pairs(version),
            "eval_warning": dataset_version_eval_shortfall(
                version=version, min_eval_examples=min_eval_examples
            ),
            "pii_scrubbed": _labelled_counts(stats.get("pii_scrubbed", {}), PII_KIND_LABELS),
            "identical_pairs_dropped": stats.get("identical_pairs_dropped"),
            "signals": _labelled_counts(stats.get("signals", {}), RECORD_SIGNAL_LABELS),
            "sources": _labelled_counts(stats.get("sources", {}), dict(Interaction.Source.choices)),
            "thumbs": _labelled_counts(
                stats.get("ratings", {}).get("thumbs", {}), dict(Thumb.choices)
            ),
            "policy_sections": _policy_sections(version.policy),
            "diff_examples": dataset_diff_examples(version=version),
            "samples": dataset_samples(version=version),
            "downloads": _downloads(project, version),
        },
    )


@project_view("viewer")
@require_safe
def dataset_download(request, project, number: int, export_format: str, split: str):
    """One version as JSON lines or Parquet (`?file=parquet`), streamed so that a large
    dataset never sits in memory."""
    file_type = request.GET.get("file", "jsonl")
    if export_format not in EXPORT_FORMATS or split not in SPLITS or file_type not in FILE_TYPES:
        raise Http404("No such format, split or file type")
    version = _version_or_404(project, number)
    try:
        export = dataset_export_file(
            version=version, export_format=export_format, split=split, file_type=file_type
        )
    except EmptyExport as error:
        raise Http404(str(error)) from error
    response = StreamingHttpResponse(export.content, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    return response
