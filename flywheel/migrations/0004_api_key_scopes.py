"""API keys carry scopes. Keys made before scopes keep what they could do: secret keys chat,
log, read and rate; public keys rate."""

import django.contrib.postgres.fields
from django.db import migrations, models

SCOPE_CHOICES = [
    ("chat", "chat: ask questions (/v1/chat/completions)"),
    ("log", "log: log interactions, add documents"),
    ("read", "read: read interactions, documents and version lists"),
    ("rate", "rate: submit ratings"),
    ("datasets", "datasets: snapshot, list and export dataset versions"),
    ("jobs", "jobs: start, follow and cancel jobs"),
    ("versions", "versions: promote, roll back and activate versions"),
]
# Written out rather than imported: a migration keeps the values of its time.
SECRET_SCOPES_BEFORE = ["chat", "log", "read", "rate"]
PUBLIC_SCOPES = ["rate"]


def existing_keys_scope(apps, schema_editor):
    api_key_model = apps.get_model("flywheel", "ApiKey")
    api_key_model.objects.filter(kind="secret").update(scopes=SECRET_SCOPES_BEFORE)
    api_key_model.objects.filter(kind="public").update(scopes=PUBLIC_SCOPES)


class Migration(migrations.Migration):
    dependencies = [("flywheel", "0003_verified_answers_retrievers")]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scopes",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(choices=SCOPE_CHOICES, max_length=20),
                default=list,
                help_text="What the key may do; each endpoint needs one scope.",
                size=None,
            ),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="kind",
            field=models.CharField(
                choices=[
                    ("secret", "Secret (server side, any scopes)"),
                    ("public", "Public (widget: rate only, from allowed origins)"),
                ],
                max_length=10,
            ),
        ),
        migrations.RunPython(existing_keys_scope, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.CheckConstraint(
                condition=models.Q(scopes__contained_by=[value for value, _ in SCOPE_CHOICES]),
                name="api_key_known_scopes",
            ),
        ),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.CheckConstraint(
                condition=models.Q(kind="secret") | models.Q(scopes__contained_by=PUBLIC_SCOPES),
                name="api_key_public_rates_only",
            ),
        ),
    ]
