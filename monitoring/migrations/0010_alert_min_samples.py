"""A minimum number of samples for rate and average alert rules.

The default "High error rate" rule, if it still has its shipped metric and threshold, asks for 20 decided jobs
in its window: one failure out of three jobs at night is not a high error rate worth paging anyone for.
"""

from django.db import migrations, models

DEFAULT_ERROR_RULE = {"name": "High error rate", "metric": "error_rate", "threshold": 10}
DEFAULT_MIN_SAMPLES = 20


def require_samples(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(**DEFAULT_ERROR_RULE, min_samples=0).update(
        min_samples=DEFAULT_MIN_SAMPLES)


class Migration(migrations.Migration):

    dependencies = [
        ("monitoring", "0009_drop_root_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="alertrule",
            name="min_samples",
            field=models.PositiveIntegerField(default=0, help_text="Rates and averages only: fire only when the window holds at least this many finished jobs (requests, batches for batch metrics); 0 fires on any. Others must leave it 0.", verbose_name="minimum samples"),
        ),
        # Reversing drops the column, and the value with it: nothing to undo.
        migrations.RunPython(require_samples, migrations.RunPython.noop),
    ]
