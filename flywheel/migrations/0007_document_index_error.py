"""A document remembers why its last indexing failed, for the documents page."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0006_outbox")]

    operations = [
        migrations.AddField(
            model_name="document",
            name="index_error",
            field=models.TextField(blank=True),
        ),
    ]
