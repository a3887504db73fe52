"""Placeholder (experiments): the Experiment model."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("retrain", "0007_curation_scale"), ("flywheel", "0011_traffic_splits"), ("feedback", "0003_daily_rollups")]

    operations: list = []
