from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _sync_periodic_tasks(sender, **kwargs) -> None:
    from config.periodic import periodic_tasks_sync

    periodic_tasks_sync()


class FlywheelConfig(AppConfig):
    name = "flywheel"
    verbose_name = "Serving"

    def ready(self) -> None:
        post_migrate.connect(_sync_periodic_tasks, sender=self)
        from flywheel.validation import read_stored_values_renderably

        connection_created.connect(read_stored_values_renderably)
