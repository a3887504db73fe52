from django.apps import AppConfig


class RetrainConfig(AppConfig):
    name = "retrain"
    verbose_name = "Curation and retraining"

    def ready(self) -> None:
        from retrain import receivers  # noqa: F401 - connects the feedback receiver
        from retrain.jobs.kinds import register_all

        register_all()
