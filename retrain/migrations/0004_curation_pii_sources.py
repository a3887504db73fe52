"""PII entity types per source, private IP addresses kept by default, scrubbing counts per
example, and each dataset record's interaction source."""

from django.db import migrations, models

import retrain.curation.pii
import retrain.models


class Migration(migrations.Migration):
    dependencies = [("retrain", "0003_evaluation_gate")]

    operations = [
        migrations.AddField(
            model_name="curationpolicy",
            name="pii_entities",
            field=models.JSONField(
                default=retrain.curation.pii.pii_entities_default,
                help_text="The kinds of PII scrubbed per source: user_messages, model_answers, "
                "corrections, each a list of EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SECRET.",
                validators=[retrain.models.validate_pii_entities],
            ),
        ),
        migrations.AddField(
            model_name="curationpolicy",
            name="scrub_private_ips",
            field=models.BooleanField(
                default=False,
                help_text="Scrub private-range IP addresses too (RFC 1918, loopback, "
                "link-local), wherever IP addresses are scrubbed.",
            ),
        ),
        migrations.AddField(
            model_name="instructionexample",
            name="pii_scrubbed",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="datasetrecord",
            name="source",
            field=models.CharField(blank=True, max_length=20),
        ),
    ]
