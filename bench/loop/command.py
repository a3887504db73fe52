import argparse
import shutil
import signal
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bench.loop.client import LoopBenchError
from bench.loop.questions import QUESTION_FILE_FORMAT, QuestionFileError, question_set_load
from bench.loop.report import report_experiment_summary, report_table
from bench.loop.runner import loop_benchmark_run
from bench.loop.simulation import LoopSettings
from bench.loop.stack import (
    BENCH_DATABASE_NAME,
    bench_database_use,
    bench_redis_use,
    bench_workers_start,
)
from config.workers import workers_stop

DEFAULTS = LoopSettings()


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # stop as Ctrl-C does: through the `finally` that stops workers


class Command(BaseCommand):
    help = (
        "Prove the loop: simulated users ask a question set over a corpus, an oracle rates the "
        "answers against the references, reviewers approve the corrections, and the workers "
        "curate, refresh the index and train a LoRA adapter, turn after turn; every stage is "
        "measured on the training questions, their held-out paraphrases and unseen questions. "
        f"Runs on a database of its own ({BENCH_DATABASE_NAME}, recreated each run), a Redis "
        "database of its own and Celery workers it starts and stops. Writes report.json, "
        "answers.jsonl and loop.png under --out."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = QUESTION_FILE_FORMAT
        return parser

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--corpus", type=Path, required=True, help="folder of .md, .txt and .html documents"
        )
        parser.add_argument("--questions", type=Path, required=True, help="JSONL question file")
        parser.add_argument("--turns", type=int, default=DEFAULTS.turns)
        parser.add_argument("--out", type=Path, default=Path(settings.VAR_DIR) / "flywheel-bench")
        parser.add_argument(
            "--train-steps",
            type=int,
            default=DEFAULTS.train_steps,
            help="LoRA steps per turn; 0 skips training",
        )
        parser.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate)
        parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
        parser.add_argument(
            "--max-length",
            type=int,
            default=DEFAULTS.max_length,
            help="training tokens per example (the prompt's start is cut)",
        )
        parser.add_argument(
            "--max-questions", type=int, default=None, help="use the file's first N questions"
        )
        parser.add_argument(
            "--max-tokens", type=int, default=DEFAULTS.max_tokens, help="answer length"
        )
        parser.add_argument(
            "--oracle-threshold",
            type=float,
            default=DEFAULTS.oracle_threshold,
            help="share of the reference's words not already in the question that a right "
            "answer holds (it also needs the reference's numbers)",
        )
        parser.add_argument(
            "--skip-no-rag",
            action="store_true",
            help="do not measure the base model without retrieval",
        )
        parser.add_argument(
            "--no-verified-answers",
            action="store_true",
            help="do not measure verified answers as a stage of their own",
        )
        parser.add_argument(
            "--no-retriever-training",
            action="store_true",
            help="do not fine-tune the retriever on the feedback",
        )
        parser.add_argument(
            "--answer-mode",
            choices=["generate", "quote", "grounded"],
            default=DEFAULTS.answer_mode,
            help="the answer mode of the last stage of a turn ('generate' skips that stage)",
        )
        parser.add_argument(
            "--one-stage-per-turn",
            action="store_true",
            help="measure each turn once with every mechanism on, not each mechanism apart "
            "(for runs of many turns)",
        )
        parser.add_argument(
            "--experiment",
            action="store_true",
            help="run the last turn as a canary experiment: what it builds (the refreshed "
            "index; the LoRA adapter when training) serves a share of the simulated users, "
            "whose oracle ratings decide, through POST /api/v1/experiments, whether it is "
            "promoted, instead of the offline gate",
        )
        parser.add_argument(
            "--experiment-share",
            type=float,
            default=DEFAULTS.experiment_candidate_share,
            help="the candidate's share of the users",
        )
        parser.add_argument(
            "--experiment-min-ratings",
            type=int,
            default=DEFAULTS.experiment_min_ratings_per_arm,
            help="ratings per arm the experiment needs before a verdict (at least 10)",
        )
        parser.add_argument(
            "--experiment-users",
            type=int,
            default=DEFAULTS.experiment_users,
            help="simulated users in the experiment, each asking one question per round",
        )
        parser.add_argument(
            "--experiment-max-ratings",
            type=int,
            default=DEFAULTS.experiment_max_ratings,
            help="ratings after which an undecided experiment is stopped",
        )
        parser.add_argument(
            "--database",
            default=BENCH_DATABASE_NAME,
            help="the database (recreated) to run on; give concurrent runs different ones",
        )
        parser.add_argument(
            "--redis-db",
            type=int,
            default=13,
            help="the Redis database (of REDIS_URL's server) to use and empty",
        )
        parser.add_argument(
            "--torch-threads",
            type=int,
            default=1,
            help="per process; more only helps on cores nothing else uses",
        )

    def handle(self, *args, **options) -> None:
        started = time.monotonic()
        try:
            question_set = question_set_load(
                path=options["questions"], max_questions=options["max_questions"]
            )
            loop_settings = LoopSettings(
                turns=options["turns"],
                max_tokens=options["max_tokens"],
                oracle_threshold=options["oracle_threshold"],
                measure_without_rag=not options["skip_no_rag"],
                train_steps=options["train_steps"],
                learning_rate=options["learning_rate"],
                batch_size=options["batch_size"],
                max_length=options["max_length"],
                verified_answers=not options["no_verified_answers"],
                retriever_training=not options["no_retriever_training"],
                answer_mode=options["answer_mode"],
                stage_per_mechanism=not options["one_stage_per_turn"],
                experiment=options["experiment"],
                experiment_candidate_share=options["experiment_share"],
                experiment_min_ratings_per_arm=options["experiment_min_ratings"],
                experiment_users=options["experiment_users"],
                experiment_max_ratings=options["experiment_max_ratings"],
            )
        except (OSError, QuestionFileError, ValueError) as error:
            raise CommandError(str(error)) from error
        if not options["corpus"].is_dir():
            raise CommandError(f"{options['corpus']} is not a folder")

        import torch

        torch.set_num_threads(options["torch_threads"])
        out_dir: Path = options["out"]
        artifacts_dir = out_dir / "artifacts"
        shutil.rmtree(artifacts_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)

        self.stdout.write(f"Creating the bench database {options['database']}")
        database_url = bench_database_use(name=options["database"])
        redis = bench_redis_use(database=options["redis_db"])
        workers = []
        try:
            self.stdout.write(f"Starting the workers (Redis {redis.url})")
            workers = bench_workers_start(
                database_url=database_url,
                redis_url=redis.url,
                log_dir=out_dir / "logs",
                artifacts_dir=artifacts_dir,
                torch_threads=options["torch_threads"],
            )
            outcome = loop_benchmark_run(
                corpus_dir=options["corpus"],
                question_set=question_set,
                settings=loop_settings,
                out_dir=out_dir,
                log=self._log,
                clock_started=started,
            )
        except LoopBenchError as error:
            raise CommandError(f"{error} (figures so far in {out_dir})") from error
        except KeyboardInterrupt:
            raise CommandError(f"Interrupted; figures so far in {out_dir}") from None
        finally:
            self.stdout.write("Stopping the workers")
            workers_stop(workers)
            redis.stop()
        self.stdout.write("\n" + report_table(outcome.report) + "\n")
        if experiment_summary := report_experiment_summary(outcome.report):
            self.stdout.write("\n" + experiment_summary + "\n")
        self.stdout.write(
            self.style.SUCCESS(
                f"Done in {(time.monotonic() - started) / 60:.1f} minutes: "
                f"{outcome.report_path}, {outcome.plot_path}"
            )
        )

    def _log(self, line: str) -> None:
        self.stdout.write(f"{time.strftime('%H:%M:%S')} {line}")
        self.stdout.flush()  # progress must show as it happens, also in a log file
