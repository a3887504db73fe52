"""Placeholder (experiments): traffic splits, interaction arms, shadow answers."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0010_list_filter_indexes")]

    operations: list = []
