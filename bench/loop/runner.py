"""One benchmark run, end to end, on whatever database and workers the caller provides: the
management command brings its own (see `stack`), the test suite its test database and worker."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.loop.questions import QuestionSet
from bench.loop.report import (
    PLOT_FILENAME,
    machine_context,
    report_build,
    report_plot,
    report_write,
)
from bench.loop.simulation import (
    Log,
    LoopProject,
    LoopResult,
    LoopRun,
    LoopSettings,
    loop_project_create,
)


@dataclass
class LoopBenchmarkOutcome:
    report: dict
    result: LoopResult
    setup: LoopProject
    report_path: Path
    plot_path: Path


def loop_benchmark_run(
    *,
    corpus_dir: Path,
    question_set: QuestionSet,
    settings: LoopSettings,
    out_dir: Path,
    log: Log = print,
    clock_started: float | None = None,
) -> LoopBenchmarkOutcome:
    """Ingest the corpus into a new project and run the loop on it. report.json and
    answers.jsonl are written after every stage, so a run cut short leaves its figures so
    far; the plot at the end. The report's wall time counts from `clock_started` (a
    time.monotonic() value; by default, now)."""
    started_at = datetime.now(UTC)
    clock_started = time.monotonic() if clock_started is None else clock_started
    machine = machine_context()
    log(f"Indexing {corpus_dir}")
    setup = loop_project_create(corpus_dir=corpus_dir)
    log(f"{len(setup.documents)} documents indexed")

    def report_now(result: LoopResult, *, finished: bool) -> tuple[dict, Path]:
        report = report_build(
            result=result,
            settings=settings,
            question_set=question_set,
            corpus_dir=corpus_dir,
            documents=len(setup.documents),
            started_at=started_at,
            machine=machine,
            wall_seconds=time.monotonic() - clock_started,
            finished=finished,
        )
        return report, report_write(report=report, result=result, out_dir=out_dir)

    result = LoopRun(
        setup=setup,
        question_set=question_set,
        settings=settings,
        log=log,
        on_progress=lambda result: report_now(result, finished=False),
    ).run()
    report, report_path = report_now(result, finished=True)
    plot_path = report_plot(report=report, path=out_dir / PLOT_FILENAME)
    return LoopBenchmarkOutcome(
        report=report, result=result, setup=setup, report_path=report_path, plot_path=plot_path
    )
