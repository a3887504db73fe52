"""Curation and experiments listen to feedback: each rating or review queues its
interaction's curation, and a rating in a running experiment its evaluation, through the
outbox, in the transaction that stores the feedback."""

from django.dispatch import receiver

from feedback.signals import feedback_recorded


@receiver(feedback_recorded)
def curate_after_feedback(sender, interaction_id, kind, **kwargs) -> None:
    from retrain.tasks.curation import interaction_curate

    interaction_curate.delay_on_commit(str(interaction_id))


@receiver(feedback_recorded)
def evaluate_experiment_after_rating(sender, interaction_id, kind, **kwargs) -> None:
    """A rating of an interaction served in a running experiment queues the experiment's
    evaluation — once: while one is pending in the outbox, it will see this rating too (the
    periodic evaluation catches the rare rating that commits after it ran)."""
    if kind != "rating":
        return
    from django.db.models import Subquery

    from flywheel.models import Interaction, OutboxMessage
    from retrain.models import Experiment
    from retrain.tasks.experiments import experiment_evaluate_task

    # One query for every rating: the running experiment that served the interaction, if any.
    served_by = Interaction.objects.filter(pk=interaction_id).values("experiment_id")[:1]
    experiment_id = (
        Experiment.objects.filter(pk=Subquery(served_by), status=Experiment.Status.RUNNING)
        .values_list("pk", flat=True)
        .first()
    )
    if experiment_id is None:
        return
    already_pending = OutboxMessage.objects.filter(
        task_name=experiment_evaluate_task.name,
        args=[experiment_id],
        published_at__isnull=True,
    ).exists()
    if not already_pending:
        experiment_evaluate_task.delay_on_commit(experiment_id)
