"""The dashboard's interaction list filtered by index version reads this index newest first
(the filters on ratings and reviews have theirs in feedback 0003_daily_rollups)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0009_keyword_search")]

    operations: list = [
        migrations.AddIndex(
            model_name="interaction",
            index=models.Index(
                condition=models.Q(("index_version__isnull", False)),
                fields=["project", "index_version", "created_at"],
                name="interaction_index_time",
            ),
        ),
    ]
