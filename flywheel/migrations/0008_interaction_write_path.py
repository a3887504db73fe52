"""Placeholder (ingestion at COPY speed): interaction indexes reconsidered for write cost."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0007_document_index_error")]

    operations: list = []
