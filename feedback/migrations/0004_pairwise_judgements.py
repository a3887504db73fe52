"""Placeholder (experiments): pairwise judgements of shadow answers."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("feedback", "0003_daily_rollups"), ("flywheel", "0011_traffic_splits")]

    operations: list = []
