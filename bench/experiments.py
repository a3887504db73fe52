"""Canary experiments' sequential test, by simulation: how often it declares a winner between
two identical arms (A/A) although it is looked at after every rating, and how many ratings it
needs to find a real difference.

Each simulated experiment is a stream of thumbs: a rating lands in the candidate arm with the
candidate's share of the traffic, and is a thumbs up with its arm's probability. After every
rating the experiment's own test (retrain.experiments.statistics.compare, as the evaluation
runs it) is asked for a verdict, and the first verdict ends the run, as it ends an
experiment; a run that reaches the horizon undecided ends with none (not enough data). Beside
it, the same stream judged by a fixed-sample two-proportion z-test at 95 %, looked at just as
often: the false-positive rate that peeking gives a test that is not sequential.

Run from the repository root: .venv/bin/python bench/experiments.py [--runs 1000]
"""

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import _cpu_model, _memory_gib, table
from retrain.experiments.statistics import ALPHA, THUMBS, ArmSample, Verdict, compare

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Run:
    verdict: Verdict
    ratings: int  # ratings seen when the verdict came (the horizon when none did)
    peeking_false_positive: bool


def _run(
    rng: np.random.Generator,
    *,
    control_up: float,
    candidate_up: float,
    share: float,
    horizon: int,
    min_per_arm: int,
    margin: float,
) -> Run:
    in_candidate = rng.random(horizon) < share
    up = rng.random(horizon) < np.where(in_candidate, candidate_up, control_up)
    candidate_count = np.cumsum(in_candidate)
    candidate_ups = np.cumsum(up & in_candidate)
    control_count = np.arange(1, horizon + 1) - candidate_count
    control_ups = np.cumsum(up & ~in_candidate)
    peeked = False
    for index in range(horizon):
        n_control, n_candidate = int(control_count[index]), int(candidate_count[index])
        if min(n_control, n_candidate) < min_per_arm:
            continue
        k_control, k_candidate = int(control_ups[index]), int(candidate_ups[index])
        if not peeked:
            peeked = _z_test_rejects(k_control, n_control, k_candidate, n_candidate)
        verdict = compare(
            control=ArmSample(n_control, k_control, k_control),
            candidate=ArmSample(n_candidate, k_candidate, k_candidate),
            scale=THUMBS,
            min_per_arm=min_per_arm,
            margin=margin,
            deadline_passed=False,
        ).verdict
        if verdict != Verdict.UNDECIDED:
            return Run(verdict, index + 1, peeked)
    return Run(Verdict.NOT_ENOUGH_DATA, horizon, peeked)


def _z_test_rejects(k_control: int, n_control: int, k_candidate: int, n_candidate: int) -> bool:
    pooled = (k_control + k_candidate) / (n_control + n_candidate)
    variance = pooled * (1 - pooled) * (1 / n_control + 1 / n_candidate)
    if variance == 0:
        return False
    difference = k_candidate / n_candidate - k_control / n_control
    return abs(difference) / math.sqrt(variance) > Z_95


def _runs(rng, count: int, **settings) -> list[Run]:
    return [_run(rng, **settings) for _ in range(count)]


def _share(runs: list[Run], verdict: Verdict) -> float:
    return sum(run.verdict == verdict for run in runs) / len(runs)


def _interval(successes: int, trials: int) -> str:
    """A Wilson 95 % interval of a rate, for the reader to judge how sharp a figure is."""
    if trials == 0:
        return "-"
    rate = successes / trials
    denominator = 1 + Z_95**2 / trials
    centre = (rate + Z_95**2 / (2 * trials)) / denominator
    half = Z_95 * math.sqrt(rate * (1 - rate) / trials + Z_95**2 / (4 * trials**2)) / denominator
    return f"{max(0.0, centre - half):.3f}-{min(1.0, centre + half):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="A/A runs per traffic share")
    parser.add_argument("--power-runs", type=int, default=200, help="runs per true difference")
    parser.add_argument("--horizon", type=int, default=5000, help="ratings per run at most")
    parser.add_argument("--min-per-arm", type=int, default=100)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--base-rate", type=float, default=0.6, help="control's thumbs-up rate")
    parser.add_argument("--seed", type=int, default=17)
    arguments = parser.parse_args()
    rng = np.random.default_rng(arguments.seed)
    settings = {
        "horizon": arguments.horizon,
        "min_per_arm": arguments.min_per_arm,
        "margin": arguments.margin,
    }
    print(
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB RAM, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"alpha {ALPHA}, at least {arguments.min_per_arm} ratings per arm, no-difference "
        f"margin ±{arguments.margin}, at most {arguments.horizon} ratings per run, control's "
        f"thumbs-up rate {arguments.base_rate}, a look after every rating\n"
    )

    started = time.perf_counter()
    rows = []
    for share in (0.5, 0.1):
        runs = _runs(
            rng,
            arguments.runs,
            control_up=arguments.base_rate,
            candidate_up=arguments.base_rate,
            share=share,
            **settings,
        )
        wrong = sum(run.verdict in (Verdict.CANDIDATE_WINS, Verdict.CONTROL_WINS) for run in runs)
        peeking = sum(run.peeking_false_positive for run in runs)
        rows.append(
            [
                f"{share:.0%}",
                len(runs),
                f"{wrong / len(runs):.3f}",
                _interval(wrong, len(runs)),
                f"{_share(runs, Verdict.NO_DIFFERENCE):.3f}",
                f"{_share(runs, Verdict.NOT_ENOUGH_DATA):.3f}",
                f"{peeking / len(runs):.3f}",
            ]
        )
    print("A/A: both arms equal")
    print(
        table(
            [
                "candidate share",
                "runs",
                "false positives",
                "95 % interval",
                "no difference",
                "not enough data",
                "peeking z-test false positives",
            ],
            rows,
        )
    )

    rows = []
    for share in (0.5, 0.1):
        for lift in (0.05, 0.1, 0.2):
            runs = _runs(
                rng,
                arguments.power_runs,
                control_up=arguments.base_rate - lift / 2,
                candidate_up=arguments.base_rate + lift / 2,
                share=share,
                **settings,
            )
            wins = [run.ratings for run in runs if run.verdict == Verdict.CANDIDATE_WINS]
            rows.append(
                [
                    f"{share:.0%}",
                    f"+{lift:.2f}",
                    len(runs),
                    f"{len(wins) / len(runs):.3f}",
                    f"{_share(runs, Verdict.CONTROL_WINS):.3f}",
                    f"{np.median(wins):.0f}" if wins else "-",
                    f"{np.percentile(wins, 90):.0f}" if wins else "-",
                ]
            )
    print("\nPower: the candidate better by a true difference in thumbs-up rate")
    print(
        table(
            [
                "candidate share",
                "true difference",
                "runs",
                "candidate wins",
                "control wins",
                "ratings needed, median",
                "p90",
            ],
            rows,
        )
    )
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
