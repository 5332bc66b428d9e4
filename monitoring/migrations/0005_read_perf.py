"""Read performance: daily rollup buckets (backfilled from the hourly ones) and a trigram search index.

The search index exists on PostgreSQL only; its expression must stay identical to
``monitoring.metrics.SearchDocument`` (the planner uses an expression index only for that exact
expression). Other databases keep the plain, unindexed search.
"""

from datetime import UTC

from django.db import migrations, models
from django.db.models import Sum
from django.db.models.functions import Trunc

INDEX = "jobrun_search_trgm_idx"
# Every part is immutable (text concatenation, jsonb's text output), as an index expression must be.
DOCUMENT = ("(task_name || ' ' || exception_type || ' ' || exception_message || ' ' || "
            "COALESCE(args::text, '') || ' ' || COALESCE(kwargs::text, ''))")
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


def create_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # fastupdate (the default, stated because the capture path depends on it): a job event appends its
    # entries to the pending list, merged into the index in bulk, instead of one GIN insert per trigram.
    schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{INDEX}" ON "monitoring_jobrun" '
                          f"USING gin ({DOCUMENT} gin_trgm_ops) WITH (fastupdate = on)")


def drop_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f'DROP INDEX IF EXISTS "{INDEX}"')


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
        migrations.RunPython(create_search_index, drop_search_index),
    ]
