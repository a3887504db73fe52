"""Placeholder (curation at scale)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("retrain", "0006_curation_policy_plural")]

    operations: list = []
