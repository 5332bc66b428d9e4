"""Capture write path: no index on ``root_id``.

No read path looks jobs up by their root (children are found by ``parent_id``, retries by ``retry_of``), and
every Celery job has a root id (a top-level job is its own root), so the partial index on non-empty root ids
took an entry on every capture write, a non-HOT update that re-inserts all of a row's index entries. Dropping
an index is a catalog change on PostgreSQL: instant at any table size.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("monitoring", "0008_capture_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="jobrun",
            name="jobrun_root_idx",
        ),
    ]
