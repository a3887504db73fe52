from django.apps import AppConfig


class RetrainConfig(AppConfig):
    name = "retrain"
    verbose_name = "Curation and retraining"
