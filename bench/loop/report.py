"""The benchmark's outputs: report.json (settings, machine, per-stage figures by probe group,
per-turn facts, the experiment's outcome when a turn ran as one), answers.jsonl (every answer
with its scores and citations), loop.png (the figures stage by stage) and a Markdown table for
the terminal and the README."""

import json
import os
import platform
import time
from datetime import datetime
from pathlib import Path

from bench.loop.questions import ProbeGroup, QuestionSet
from bench.loop.simulation import LoopResult, LoopSettings

REPORT_FILENAME = "report.json"
ANSWERS_FILENAME = "answers.jsonl"
PLOT_FILENAME = "loop.png"
PLOTTED_METRICS = {
    "hit_at_1": "retrieval hit@1",
    "hit_at_5": "retrieval hit@5",
    "token_f1": "answer token F1",
    "rouge_l": "answer ROUGE-L",
}
GROUP_LABELS = {
    ProbeGroup.TRAIN.value: "training questions (rated)",
    ProbeGroup.PARAPHRASE.value: "held-out paraphrases",
    ProbeGroup.UNSEEN.value: "unseen questions",
}


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_context() -> dict:
    """What the figures and timings depend on; other work on the machine slows every one."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": round(os.getloadavg()[0], 2),
    }


def report_build(
    *,
    result: LoopResult,
    settings: LoopSettings,
    question_set: QuestionSet,
    corpus_dir: Path,
    documents: int,
    started_at: datetime,
    machine: dict,
    wall_seconds: float,
    finished: bool,
) -> dict:
    probes = question_set.probes()
    return {
        "finished": finished,
        "started_at": started_at.isoformat(),
        "wall_seconds": round(wall_seconds, 1),
        # Unlike the wall time, hardly affected by what else the machine runs: the work of
        # this process (serving and measuring; the workers' jobs are in `turns`).
        "cpu_seconds": round(time.process_time(), 1),
        "machine_at_start": machine,
        "load_average_now": round(os.getloadavg()[0], 2),
        "corpus": {"folder": str(corpus_dir), "documents": documents},
        "questions": {
            "file": str(question_set.path),
            "training": len(question_set.train),
            "heldout": len(question_set.heldout),
            "probes": {group.value: sum(p.group == group for p in probes) for group in ProbeGroup},
        },
        "settings": {key: value for key, value in vars(settings).items()},
        "stages": [stage.as_dict() for stage in result.stages],
        "turns": result.turns,
        # The turn run as a canary experiment, when one was (also under its turn).
        "experiment": next(
            (turn["experiment"] for turn in result.turns if "experiment" in turn), None
        ),
    }


def report_write(*, report: dict, result: LoopResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILENAME
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    with (out_dir / ANSWERS_FILENAME).open("w") as answers:
        for stage in result.stages:
            for observation in stage.observations:
                answers.write(json.dumps(observation.as_dict()) + "\n")
    return path


def report_plot(*, report: dict, path: Path) -> Path:
    """One panel per metric, the stages along the x axis, one line per probe group."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    stages = report["stages"]
    labels = [stage["label"] for stage in stages]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for axis, (metric, title) in zip(axes.flat, PLOTTED_METRICS.items(), strict=True):
        for group, group_label in GROUP_LABELS.items():
            values = [stage["groups"].get(group, {}).get(metric) for stage in stages]
            if any(value is not None for value in values):
                points = [float("nan") if value is None else value for value in values]
                axis.plot(range(len(stages)), points, marker="o", label=group_label)
        axis.set_title(title)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        # Stage labels are long: slanted, they do not run into each other.
        axis.set_xticks(range(len(stages)), labels, fontsize=8, rotation=25, ha="right")
    axes.flat[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(
        f"Flywheel closed loop: {report['questions']['training']} training questions, "
        f"{report['questions']['heldout']} held out, {report['corpus']['documents']} documents"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _cell(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def report_table(report: dict) -> str:
    """A Markdown table: a row per stage and probe group."""
    header = "| stage | questions | n | hit@1 | hit@5 | source read | token F1 | ROUGE-L | right |"
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for stage in report["stages"]:
        for group, figures in stage["groups"].items():
            lines.append(
                f"| {stage['label']} | {GROUP_LABELS[group]} | {figures['questions']} | "
                f"{_cell(figures['hit_at_1'])} | {_cell(figures['hit_at_5'])} | "
                f"{_cell(figures['source_in_context'])} | {_cell(figures['token_f1'])} | "
                f"{_cell(figures['rouge_l'])} | {_cell(figures['correct'])} |"
            )
    return "\n".join(lines)


def report_experiment_summary(report: dict) -> str:
    """The experiment's outcome in a few lines ("" when no turn ran as one)."""
    experiment = report.get("experiment")
    if not experiment:
        return ""
    candidate = " + ".join(
        part
        for part in (
            experiment["candidate_model"] and f"model {experiment['candidate_model']}",
            experiment["candidate_index_version"]
            and f"index v{experiment['candidate_index_version']}",
        )
        if part
    )
    verdict = experiment["verdict"] or "undecided"
    needed = experiment["ratings_needed"]
    production = experiment["production_after"]
    lines = [
        f"Experiment #{experiment['id']}: {candidate} on {experiment['candidate_share']:.0%} "
        f"of {experiment['users']} users, at least {experiment['min_ratings_per_arm']} "
        "ratings per arm",
        f"  verdict: {verdict}"
        + (f" after {needed} ratings" if needed is not None else "")
        + f" ({experiment['ratings_submitted']} given in {experiment['rounds']} rounds; "
        f"{experiment['users_switching_arms']} users saw both arms)",
    ]
    for arm, figures in experiment["arms"].items():
        lines.append(
            f"  {arm}: {figures['ratings']} ratings, thumbs-up rate {_cell(figures['metric'])} "
            f"(95% {_cell(figures['interval'][0])}-{_cell(figures['interval'][1])}), "
            f"oracle right {_cell(figures['oracle_right'])}"
        )
    lines.append(
        f"  {'promoted' if experiment['promoted'] else 'not promoted'}: production is "
        f"{production['model_version']} with index v{production['index_version']}"
    )
    return "\n".join(lines)
