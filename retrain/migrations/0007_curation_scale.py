"""Curation at scale: the near-duplicate search indexes one example per distinct question, and
examples lose an index that only cost their writes."""

import django.db.models.deletion
import pgvector.django
from django.db import migrations, models

FIRST_OF_EACH_QUESTION = """
UPDATE retrain_instructionexample SET first_of_question = true
WHERE id IN (
    SELECT DISTINCT ON (project_id, question_embedding) id
    FROM retrain_instructionexample
    ORDER BY project_id, question_embedding, id
)
"""


class Migration(migrations.Migration):
    dependencies = [("retrain", "0006_curation_policy_plural")]

    operations = [
        migrations.AddField(
            model_name="instructionexample",
            name="first_of_question",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RunSQL(FIRST_OF_EACH_QUESTION, reverse_sql=migrations.RunSQL.noop),
        migrations.RemoveIndex(model_name="instructionexample", name="example_question_hnsw"),
        migrations.AddIndex(
            model_name="instructionexample",
            index=pgvector.django.HnswIndex(
                condition=models.Q(("first_of_question", True)),
                ef_construction=64,
                fields=["question_embedding"],
                m=16,
                name="example_first_question_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
        migrations.AlterField(
            model_name="instructionexample",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="flywheel.project",
            ),
        ),
        migrations.AddConstraint(
            model_name="instructionexample",
            constraint=models.UniqueConstraint(
                condition=models.Q(("first_of_question", True)),
                fields=("project", "question_embedding"),
                name="example_one_first_of_question",
            ),
        ),
    ]
