"""Evaluating canary experiments: after ratings arrive (queued by retrain.receivers) and once
a minute for every running one (config/periodic.py), so that deadlines and the safety check
do not wait for a rating."""

from celery import shared_task

from retrain.experiments.evaluation import experiment_evaluate, experiments_evaluate_running


@shared_task
def experiment_evaluate_task(experiment_id: int) -> str:
    experiment = experiment_evaluate(experiment_id=experiment_id)
    return experiment.status if experiment is not None else "unknown"


@shared_task
def experiments_evaluate_all() -> list[int]:
    return experiments_evaluate_running()
