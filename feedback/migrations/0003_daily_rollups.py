"""Placeholder (dashboards): daily rollups."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("feedback", "0002_review_revisions"), ("flywheel", "0010_list_filter_indexes")]

    operations: list = []
