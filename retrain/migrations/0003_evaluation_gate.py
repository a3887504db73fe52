"""The promotion gate compares paired per-example scores and rests on a minimum number of
evaluation examples. Eval loss is no per-example metric: a policy that chose it compares on
token F1 from now on."""

from django.db import migrations, models


def eval_loss_to_token_f1(apps, schema_editor):
    CurationPolicy = apps.get_model("retrain", "CurationPolicy")
    CurationPolicy.objects.filter(promotion_metric="eval_loss").update(promotion_metric="token_f1")


class Migration(migrations.Migration):
    dependencies = [("retrain", "0002_retriever_training_jobs")]

    operations = [
        migrations.AddField(
            model_name="curationpolicy",
            name="min_eval_examples",
            field=models.PositiveIntegerField(
                default=30,
                help_text="Fewest paired evaluation examples a gate decision may rest on; below "
                "it the decision is 'insufficient evidence'.",
            ),
        ),
        migrations.RunPython(eval_loss_to_token_f1, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="curationpolicy",
            name="promotion_metric",
            field=models.CharField(
                choices=[
                    ("token_f1", "Token F1"),
                    ("rouge_l", "ROUGE-L"),
                    ("judge", "LLM judge score"),
                ],
                default="token_f1",
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="curationpolicy",
            name="promotion_margin",
            field=models.FloatField(
                default=0.01,
                help_text="Absolute difference on the metric (a score from 0 to 1) the candidate "
                "must be shown to beat production by, e.g. 0.01 = one point of token F1.",
            ),
        ),
    ]
