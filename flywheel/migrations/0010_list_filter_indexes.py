"""Placeholder (dashboards): indexes for the interaction list filters."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0009_keyword_search")]

    operations: list = []
