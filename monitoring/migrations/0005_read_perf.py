"""Read performance: daily rollup buckets, backfilled from the hourly ones."""

from datetime import UTC

from django.db import migrations, models
from django.db.models import Sum
from django.db.models.functions import Trunc

HOUR, DAY = 3_600, 86_400
KEYS = {"id", "granularity", "bucket", "task_name", "queue"}


def backfill_days(apps, schema_editor):
    # Reads over covered spans take whole days from daily rows, so days already rolled up need theirs.
    rollup = apps.get_model("monitoring", "JobRollup")
    sums = [f.name for f in rollup._meta.concrete_fields if f.name not in KEYS]
    rows = (rollup.objects.filter(granularity=HOUR).order_by().annotate(day=Trunc("bucket", "day", tzinfo=UTC))
            .values("day", "task_name", "queue").annotate(**{f"sum_{name}": Sum(name) for name in sums}))
    rollup.objects.filter(granularity=DAY).delete()
    rollup.objects.bulk_create([
        rollup(granularity=DAY, bucket=row["day"], task_name=row["task_name"], queue=row["queue"],
               **{name: row[f"sum_{name}"] or 0 for name in sums})
        for row in rows
    ], batch_size=2_000)


def drop_days(apps, schema_editor):
    apps.get_model("monitoring", "JobRollup").objects.filter(granularity=DAY).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0004_default_alert_rules")]
    operations = [
        migrations.AlterField(
            model_name="jobrollup",
            name="granularity",
            field=models.PositiveIntegerField(choices=[(300, "5 minutes"), (3600, "1 hour"), (86400, "1 day")],
                                              verbose_name="granularity (s)"),
        ),
        migrations.RunPython(backfill_days, drop_days),
    ]
