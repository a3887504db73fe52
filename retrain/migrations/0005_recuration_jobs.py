"""Re-curating a project's feedback under its current policy is a job."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("retrain", "0004_curation_pii_sources")]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[
                    ("index_refresh", "Index refresh"),
                    ("lora_training", "LoRA training"),
                    ("evaluation", "Evaluation"),
                    ("dataset_snapshot", "Dataset snapshot"),
                    ("retriever_training", "Retriever training"),
                    ("recuration", "Re-curation"),
                ],
                max_length=30,
            ),
        ),
    ]
