"""Job kinds: what each runs and which parameters it takes. Registered at app start."""


def register_all() -> None:
    from retrain.jobs import evaluation, index_refresh, snapshot, training
    from retrain.models import Job
    from retrain.services.jobs import register_job_kind
    from retrain.tasks import curation as curation_tasks
    from retrain.tasks import indexing as indexing_tasks
    from retrain.tasks import training as training_tasks

    register_job_kind(Job.Kind.DATASET_SNAPSHOT, task=curation_tasks.run_dataset_snapshot,
                      validate=snapshot.validate_parameters)  # fmt: skip
    register_job_kind(Job.Kind.INDEX_REFRESH, task=indexing_tasks.run_index_refresh,
                      validate=index_refresh.validate_parameters)  # fmt: skip
    register_job_kind(Job.Kind.LORA_TRAINING, task=training_tasks.run_lora_training,
                      validate=training.validate_parameters)  # fmt: skip
    register_job_kind(Job.Kind.EVALUATION, task=training_tasks.run_evaluation,
                      validate=evaluation.validate_parameters)  # fmt: skip
