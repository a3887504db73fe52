"""Pairwise judgements of shadow answers: a reviewer's served / shadow / tie verdict."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("feedback", "0003_daily_rollups"), ("flywheel", "0011_traffic_splits")]

    operations = [
        migrations.CreateModel(
            name="PairwiseJudgement",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "preferred",
                    models.CharField(
                        choices=[
                            ("served", "The served answer is better"),
                            ("shadow", "The candidate's shadow answer is better"),
                            ("tie", "Neither is better"),
                        ],
                        max_length=10,
                    ),
                ),
                ("note", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "interaction",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pairwise_judgements",
                        to="flywheel.interaction",
                    ),
                ),
                (
                    "reviewer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="pairwise_judgements",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "shadow_answer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pairwise_judgements",
                        to="flywheel.shadowanswer",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("shadow_answer", "reviewer"),
                        name="pairwise_judgement_one_per_reviewer",
                    )
                ],
            },
        ),
    ]
