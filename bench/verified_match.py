"""How well does a question find the verified answer that answers it, and only that one?

Run after a closed-loop benchmark (`python -m bench.loop …`), on the database it left behind:
every probe of the question file (training questions, their unrated paraphrases, unseen
questions and theirs) is matched against the project's active verified answers the way serving
matches, and each candidate rule — a similarity threshold and the depth at which the verified
answer's evidence must be among the question's own passages — is scored:

- recall: paraphrases of a corrected training question that get that question's verified
  answer (and the training questions themselves);
- false matches: unseen questions (and their paraphrases) that get any verified answer, and
  paraphrases that get another question's.

    .venv/bin/python bench/verified_match.py --database flywheel_loop_bench \\
        --questions demo/manpages-bench/questions.jsonl [--max-questions 60]
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import bench_django_join, machine_context, table

THRESHOLDS = (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90)
DEPTHS = (1, 2, 3, 5)


@dataclass(frozen=True)
class Probe:
    group: str  # train, paraphrase, unseen
    text: str
    original: str  # the training question it stands for ("" for unseen)


@dataclass(frozen=True)
class Candidate:
    similarity: float
    evidence_rank: int | None  # None: the evidence is not among the top DEPTHS[-1]
    right: bool  # the verified answer of the probe's own question


def _probes(question_set) -> list[Probe]:
    probes = []
    for question in question_set.train:
        probes.append(Probe("train", question.question, question.question))
        probes += [Probe("paraphrase", text, question.question) for text in question.paraphrases]
    for question in question_set.heldout:
        probes += [Probe("unseen", text, "") for text in [question.question, *question.paraphrases]]
    return probes


def _candidates(project, probe: Probe, verified_answers) -> list[Candidate]:
    """Every active verified answer as serving would weigh it for `probe`: similarity by the
    active index's retriever and the rank of its evidence among the probe's passages."""
    import numpy as np

    from flywheel.selectors.retrieval import RetrievalOptions, retrieve
    from flywheel.services.verified_answers import _evidence_rank

    retrieval = retrieve(project=project, query=probe.text, options=RetrievalOptions(top_k=5))
    query = np.asarray(retrieval.query_embedding, dtype=np.float32)
    candidates = []
    for verified in verified_answers:
        similarity = float(np.asarray(verified.question_embedding, dtype=np.float32) @ query)
        rank = _evidence_rank(verified, retrieval.chunks, depth=DEPTHS[-1])
        if not verified.evidence:
            rank = 1  # nothing to check: serving skips the evidence check
        candidates.append(Candidate(similarity, rank, verified.question == probe.original))
    return sorted(candidates, key=lambda candidate: -candidate.similarity)


def _served(candidates: list[Candidate], *, threshold: float, depth: int) -> Candidate | None:
    """What serving picks: the most similar candidate above the threshold whose evidence is
    within `depth`."""
    for candidate in candidates:
        if candidate.similarity < threshold:
            return None
        if candidate.evidence_rank is not None and candidate.evidence_rank <= depth:
            return candidate
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="flywheel_loop_bench")
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--max-questions", type=int, default=None)
    parser.add_argument("--project", default="loop-bench")
    args = parser.parse_args()

    bench_django_join(args.database)
    import torch

    torch.set_num_threads(1)
    from bench.loop.questions import question_set_load
    from flywheel.models import Project, VerifiedAnswer
    from flywheel.services.verified_answers import match_threshold, serving_policy_get

    project = Project.objects.get(slug=args.project)
    policy = serving_policy_get(project=project)
    verified_answers = list(
        VerifiedAnswer.objects.filter(project=project, status=VerifiedAnswer.Status.ACTIVE)
    )
    corrected = {verified.question for verified in verified_answers}
    question_set = question_set_load(path=args.questions, max_questions=args.max_questions)
    probes = [
        probe
        for probe in _probes(question_set)
        if probe.group == "unseen" or probe.original in corrected
    ]
    print(machine_context())
    print(
        f"{len(verified_answers)} verified answers; {len(probes)} probes (training questions "
        f"that were corrected, their paraphrases, unseen questions and theirs); in use: "
        f"threshold {match_threshold(policy):.3f}, evidence depth "
        f"{policy.verified_match_evidence_depth}"
    )
    weighed = [(probe, _candidates(project, probe, verified_answers)) for probe in probes]

    rows = []
    for depth in DEPTHS:
        for threshold in THRESHOLDS:
            counts = {"train": [0, 0, 0], "paraphrase": [0, 0, 0], "unseen": [0, 0, 0]}
            for probe, candidates in weighed:
                served = _served(candidates, threshold=threshold, depth=depth)
                tally = counts[probe.group]
                tally[0] += 1
                if served is not None and served.right:
                    tally[1] += 1
                elif served is not None:
                    tally[2] += 1
            rows.append(
                [
                    depth,
                    f"{threshold:.2f}",
                    *(
                        f"{counts[g][1] / max(counts[g][0], 1):.2f}"
                        for g in ("train", "paraphrase")
                    ),
                    *(
                        f"{counts[g][2] / max(counts[g][0], 1):.2f}"
                        for g in ("paraphrase", "unseen")
                    ),
                ]
            )
    print(
        table(
            [
                "evidence depth",
                "threshold",
                "train: right match",
                "paraphrase: right match",
                "paraphrase: wrong match",
                "unseen: any match",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
