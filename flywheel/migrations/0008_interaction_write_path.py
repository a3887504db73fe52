"""Interaction indexes reconsidered for write cost (bench/ingestion.py): the project's own
index goes (every other index leads with the project), and the indexes of the model version,
the index version and the verified answer only hold the rows that have one, so that an
interaction an app logs, which has none, is not written to them."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0007_document_index_error")]

    operations = [
        migrations.AlterField(
            model_name="interaction",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="interactions",
                to="flywheel.project",
            ),
        ),
        migrations.AlterField(
            model_name="interaction",
            name="model_version",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="flywheel.modelversion",
            ),
        ),
        migrations.AlterField(
            model_name="interaction",
            name="index_version",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="flywheel.indexversion",
            ),
        ),
        migrations.AlterField(
            model_name="interaction",
            name="verified_answer",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="served",
                to="flywheel.verifiedanswer",
            ),
        ),
        migrations.AddIndex(
            model_name="interaction",
            index=models.Index(
                condition=models.Q(("model_version__isnull", False)),
                fields=["model_version"],
                name="interaction_model_version",
            ),
        ),
        migrations.AddIndex(
            model_name="interaction",
            index=models.Index(
                condition=models.Q(("index_version__isnull", False)),
                fields=["index_version"],
                name="interaction_index_version",
            ),
        ),
        migrations.AddIndex(
            model_name="interaction",
            index=models.Index(
                condition=models.Q(("verified_answer__isnull", False)),
                fields=["verified_answer"],
                name="interaction_verified_answer",
            ),
        ),
    ]
