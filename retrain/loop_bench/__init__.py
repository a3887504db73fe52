"""The closed-loop benchmark: does feedback make the answers better?

`loop_benchmark_run` ingests a corpus into a new project and runs the loop on it with
simulated users, an oracle and reviewers, measuring every stage; `flywheel_bench` (the
management command) runs it on a private database, Redis database and workers of its own,
and the test suite on its test database and worker.
"""

from retrain.loop_bench.client import LoopBenchError
from retrain.loop_bench.questions import (
    QUESTION_FILE_FORMAT,
    QuestionFileError,
    QuestionSet,
    question_set_load,
)
from retrain.loop_bench.report import report_table
from retrain.loop_bench.runner import LoopBenchmarkOutcome, loop_benchmark_run
from retrain.loop_bench.simulation import LoopSettings

__all__ = [
    "QUESTION_FILE_FORMAT",
    "LoopBenchError",
    "LoopBenchmarkOutcome",
    "LoopSettings",
    "QuestionFileError",
    "QuestionSet",
    "loop_benchmark_run",
    "question_set_load",
    "report_table",
]
