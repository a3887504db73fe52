"""The admin lists "Curation policies", not "Curation policys"."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("retrain", "0005_recuration_jobs")]

    operations = [
        migrations.AlterModelOptions(
            name="curationpolicy",
            options={"verbose_name_plural": "curation policies"},
        ),
    ]
