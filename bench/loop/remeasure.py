"""Measure the project a loop benchmark left behind once more, under another serving policy.

The loop's stages measure each mechanism as it is switched on; this asks every probe again of
the project as it ended (its verified answers, retriever, index and model version) with the
answer mode and verified-answer mode given, without running another turn:

    .venv/bin/python -m bench.loop.remeasure --database flywheel_loop_bench \\
        --questions demo/manpages-bench/questions.jsonl --max-questions 60 --answer-mode quote
"""

import argparse

from bench._setup import bench_django_join


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="flywheel_loop_bench")
    parser.add_argument("--questions", required=True)
    parser.add_argument("--max-questions", type=int, default=None)
    parser.add_argument("--answer-mode", choices=["generate", "quote", "grounded"], default="quote")
    parser.add_argument(
        "--verified-answers", choices=["verbatim", "first_passage", "off"], default="verbatim"
    )
    parser.add_argument("--evidence-depth", type=int, default=None)
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="calibrate the match threshold again first, by the current rules",
    )
    parser.add_argument("--project", default="loop-bench")
    args = parser.parse_args()

    bench_django_join(args.database)
    import torch

    torch.set_num_threads(1)
    from django.contrib.auth import get_user_model

    from bench.loop.client import FlywheelApi
    from bench.loop.questions import question_set_load
    from bench.loop.simulation import LoopProject, LoopRun, LoopSettings
    from flywheel.models import ApiKey, Project
    from flywheel.services.api_keys import api_key_create
    from flywheel.services.verified_answers import verified_answers_calibrate

    project = Project.objects.get(slug=args.project)
    key = api_key_create(
        project=project, kind=ApiKey.Kind.SECRET, name="remeasure", scopes=ApiKey.Scope.values
    ).raw_key
    setup = LoopProject(
        project=project,
        api=FlywheelApi(secret_key=key),
        reviewer=get_user_model().objects.get(username=f"{args.project}-reviewer"),
        documents=dict(project.documents.values_list("source_uri", "pk")),
    )
    run = LoopRun(
        setup=setup,
        question_set=question_set_load(path=args.questions, max_questions=args.max_questions),
        settings=LoopSettings(),
    )
    policy = {"answer_mode": args.answer_mode, "verified_answers": args.verified_answers}
    if args.evidence_depth is not None:
        policy["verified_match_evidence_depth"] = args.evidence_depth
    run._serving_policy(**policy)
    if args.recalibrate:
        calibrated = verified_answers_calibrate(project=project)
        print(f"Calibrated: {calibrated.calibration}")
    run._stage(
        "remeasure",
        f"as the loop ended, {args.answer_mode} answers, verified answers {args.verified_answers}",
        turn=0,
        rag=True,
    )


if __name__ == "__main__":
    main()
