"""Job kinds: what each runs and which parameters it takes. Registered at app start."""

from retrain.datasets import job as snapshot
from retrain.evaluation import job as evaluation
from retrain.index_refresh import job as index_refresh
from retrain.jobs import recuration
from retrain.jobs.lifecycle import register_job_kind
from retrain.models import Job
from retrain.tasks import curation as curation_tasks
from retrain.tasks import indexing as indexing_tasks
from retrain.tasks import training as training_tasks
from retrain.training import job as training
from retrain.training import retriever_job


def register_all() -> None:
    register_job_kind(
        Job.Kind.RECURATION,
        task=curation_tasks.run_recuration,
        validate=recuration.validate_parameters,
        one_at_a_time=True,
    )
    register_job_kind(
        Job.Kind.DATASET_SNAPSHOT,
        task=curation_tasks.run_dataset_snapshot,
        validate=snapshot.validate_parameters,
    )
    register_job_kind(
        Job.Kind.INDEX_REFRESH,
        task=indexing_tasks.run_index_refresh,
        validate=index_refresh.validate_parameters,
    )
    register_job_kind(
        Job.Kind.LORA_TRAINING,
        task=training_tasks.run_lora_training,
        validate=training.validate_parameters,
        check_for_project=training.check_parameters_for_project,
    )
    register_job_kind(
        Job.Kind.EVALUATION,
        task=training_tasks.run_evaluation,
        validate=evaluation.validate_parameters,
    )
    register_job_kind(
        Job.Kind.RETRIEVER_TRAINING,
        task=training_tasks.run_retriever_training,
        validate=retriever_job.validate_parameters,
    )
