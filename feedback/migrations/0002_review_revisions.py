"""Reviews keep their revisions."""

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import migrations, models
from django.db.models import F

DECISIONS = [
    ("approved", "Approved: the answer is good"),
    ("rejected", "Rejected: keep it out of training data"),
    ("corrected", "Corrected: the ideal answer is written"),
]


def first_revisions_create(apps, schema_editor):
    """Each existing review as revision 1, by its reviewer, when it was submitted."""
    Review = apps.get_model("feedback", "Review")
    ReviewRevision = apps.get_model("feedback", "ReviewRevision")
    # Historical models lack USERNAME_FIELD; the field it names is on them.
    username_field = get_user_model().USERNAME_FIELD
    Review.objects.update(updated_at=F("created_at"))
    reviews = Review.objects.select_related("reviewer").order_by("pk")
    batch = []
    for review in reviews.iterator(chunk_size=2000):
        batch.append(
            ReviewRevision(
                review_id=review.pk,
                number=1,
                decision=review.decision,
                ideal_answer=review.ideal_answer,
                note=review.note,
                revised_by_id=review.reviewer_id,
                author=getattr(review.reviewer, username_field),
            )
        )
        if len(batch) == 2000:
            ReviewRevision.objects.bulk_create(batch)
            batch = []
    ReviewRevision.objects.bulk_create(batch)
    # auto_now_add stamped them now; they were made when their reviews were.
    ReviewRevision.objects.update(
        created_at=models.Subquery(
            Review.objects.filter(pk=models.OuterRef("review_id")).values("created_at")[:1]
        )
    )


class Migration(migrations.Migration):
    dependencies = [("feedback", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="review",
            name="updated_at",
            field=models.DateTimeField(auto_now=True),
        ),
        migrations.CreateModel(
            name="ReviewRevision",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("decision", models.CharField(choices=DECISIONS, max_length=20)),
                ("ideal_answer", models.TextField(blank=True)),
                ("note", models.TextField(blank=True)),
                ("author", models.CharField(max_length=300)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "review",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="revisions",
                        to="feedback.review",
                    ),
                ),
                (
                    "revised_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="review_revisions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "revised_by_api_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="review_revisions",
                        to="flywheel.apikey",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("review", "number"), name="review_revision_number"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("revised_by__isnull", True),
                            ("revised_by_api_key__isnull", True),
                            _connector="OR",
                        ),
                        name="review_revision_one_author",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("decision", "corrected"), _negated=True),
                            models.Q(("ideal_answer", ""), _negated=True),
                            _connector="OR",
                        ),
                        name="review_revision_correction_has_answer",
                    ),
                ],
            },
        ),
        migrations.RunPython(first_revisions_create, migrations.RunPython.noop),
    ]
