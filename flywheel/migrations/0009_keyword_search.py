"""Placeholder (hybrid search): what the keyword side of retrieval needs."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0008_interaction_write_path")]

    operations: list = []
