"""Canary experiments: the Experiment model."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retrain", "0007_curation_scale"),
        ("flywheel", "0011_traffic_splits"),
        ("feedback", "0003_daily_rollups"),
    ]

    operations = [
        migrations.CreateModel(
            name="Experiment",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("running", "Running"),
                            ("stopped", "Stopped"),
                            ("finished", "Finished"),
                        ],
                        default="running",
                        max_length=10,
                    ),
                ),
                (
                    "candidate_share",
                    models.FloatField(help_text="Share of the traffic the candidate serves."),
                ),
                (
                    "shadow_share",
                    models.FloatField(
                        default=0.0,
                        help_text="Share of control's traffic the candidate also answers, unseen.",
                    ),
                ),
                (
                    "metric",
                    models.CharField(
                        choices=[
                            ("thumbs_up_rate", "Thumbs-up rate (thumbs up among thumbs)"),
                            ("mean_score", "Mean score (1-5)"),
                        ],
                        max_length=20,
                    ),
                ),
                ("min_ratings_per_arm", models.PositiveIntegerField()),
                (
                    "no_difference_margin",
                    models.FloatField(
                        help_text="A difference smaller than this either way counts as none."
                    ),
                ),
                (
                    "ends_at",
                    models.DateTimeField(
                        help_text="The deadline: undecided then, not enough data."
                    ),
                ),
                ("auto_promote", models.BooleanField(default=False)),
                ("stop_on_loss", models.BooleanField(default=True)),
                ("error_rate_factor", models.FloatField(default=2.0)),
                ("latency_p95_factor", models.FloatField(default=2.0)),
                ("safety_min_requests", models.PositiveIntegerField(default=20)),
                (
                    "verdict",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("candidate_wins", "Candidate wins"),
                            ("control_wins", "Control wins"),
                            ("no_difference", "No difference"),
                            ("not_enough_data", "Not enough data at the deadline"),
                        ],
                        max_length=20,
                    ),
                ),
                ("evidence", models.JSONField(blank=True, default=dict)),
                ("history", models.JSONField(blank=True, default=list)),
                ("evaluated_at", models.DateTimeField(blank=True, null=True)),
                ("started_by_name", models.CharField(blank=True, max_length=300)),
                ("stopped_by_name", models.CharField(blank=True, max_length=300)),
                ("started_at", models.DateTimeField(auto_now_add=True)),
                ("stopped_at", models.DateTimeField(blank=True, null=True)),
                ("stop_reason", models.TextField(blank=True)),
                (
                    "candidate_index_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="experiments",
                        to="flywheel.indexversion",
                    ),
                ),
                (
                    "candidate_model_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="experiments",
                        to="flywheel.modelversion",
                    ),
                ),
                (
                    "control_index_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="flywheel.indexversion",
                    ),
                ),
                (
                    "control_model_version",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="flywheel.modelversion",
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="experiments",
                        to="flywheel.project",
                    ),
                ),
                (
                    "started_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["project", "-started_at"], name="experiment_recent")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("status", "running")),
                        fields=("project",),
                        name="experiment_one_running_per_project",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("candidate_share__gt", 0), ("candidate_share__lt", 1)),
                        name="experiment_candidate_share_range",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("shadow_share__gte", 0), ("shadow_share__lte", 1)),
                        name="experiment_shadow_share_range",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("candidate_model_version__isnull", False),
                            ("candidate_index_version__isnull", False),
                            _connector="OR",
                        ),
                        name="experiment_has_a_candidate",
                    ),
                ],
            },
        ),
    ]
