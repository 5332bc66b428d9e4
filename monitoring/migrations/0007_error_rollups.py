"""Error rollups: failures per error group, task name, queue and bucket, backfilled for the covered span."""

from datetime import timedelta

from django.db import migrations, models


def backfill(apps, schema_editor):
    # Error groups over the covered span now read these rows, so the span already rolled up needs them.
    # Uses the app's own recompute (this table is new here, so the current model is this migration's).
    from monitoring import rollups

    state = apps.get_model("monitoring", "RollupState").objects.filter(pk=1).first()
    if state is None or state.covered_from is None or state.complete_until is None:
        return
    day = timedelta(days=1)
    start = state.covered_from
    while start < state.complete_until:  # a day at a time: bounded memory on big tables
        end = min(rollups.floor_time(start, rollups.DAY) + day, state.complete_until)
        rollups.recompute_errors(start, end, (rollups.floor_time(start, rollups.HOUR), rollups.ceil_time(end, rollups.HOUR)),
                                 (rollups.floor_time(start, rollups.DAY), rollups.ceil_time(end, rollups.DAY)))
        start = end


class Migration(migrations.Migration):

    dependencies = [
        ('monitoring', '0006_search'),
    ]

    operations = [
        migrations.CreateModel(
            name='ErrorRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('granularity', models.PositiveIntegerField(choices=[(300, '5 minutes'), (3600, '1 hour'), (86400, '1 day')], verbose_name='granularity (s)')),
                ('bucket', models.DateTimeField(verbose_name='bucket start')),
                ('exception_type', models.CharField(max_length=255, verbose_name='exception type')),
                ('message', models.TextField(verbose_name='normalised message')),
                ('task_name', models.CharField(max_length=255, verbose_name='task name')),
                ('queue', models.CharField(blank=True, default='', max_length=255, verbose_name='queue')),
                ('count', models.PositiveIntegerField(default=0, verbose_name='failures')),
                ('first_seen', models.DateTimeField(verbose_name='first failure')),
                ('last_seen', models.DateTimeField(verbose_name='last failure')),
                ('example', models.TextField(blank=True, default='', verbose_name='example message')),
            ],
            options={
                'verbose_name': 'error rollup',
                'verbose_name_plural': 'error rollups',
                'indexes': [models.Index(fields=['granularity', 'bucket'], name='errorrollup_bucket_idx')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
