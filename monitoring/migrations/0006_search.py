"""Full-text search over the arguments and exception messages of finished jobs (PostgreSQL only).

- ``monitoring_jobrun_search_document(message, args, kwargs)``: the searchable words of a job. A PL/pgSQL
  function, not an inlined expression, so its declared COST reaches the planner: computing the words of a
  row takes ~10 us, more than PostgreSQL assumes for to_tsvector, and without that the planner walks the
  created_at index computing it for millions of rows when a rare word is searched. (Higher costs make
  PostgreSQL JIT-compile common-term queries, ~100 ms each.) PARALLEL RESTRICTED: a search reads at most
  a few thousand rows, where starting parallel workers costs more than it saves on a busy machine.
- ``jobrun_search_idx``: a GIN index on it, partial on ``finished_at IS NOT NULL``. Every capture upsert
  rewrites all of a row's index entries (non-HOT update), so a row enters this index once, when it
  finishes, instead of on each of its three or four events. Built CONCURRENTLY, so migrating a large
  live table does not block capture's writes.
- ``jobrun_search_stats``: statistics on the function over all rows (the planner ignores the statistics of
  partial indexes), so it knows how common a word is. Gathered by ANALYZE only: nothing on the write path.

The SQL is copied here rather than imported from ``monitoring.search`` so this migration keeps building
what it was written for. Other databases keep the plain, unindexed search.
"""

from django.db import migrations

FUNCTION = "monitoring_jobrun_search_document"
INDEX = "jobrun_search_idx"
STATISTICS = "jobrun_search_stats"
DOCUMENT = f"{FUNCTION}(exception_message, args, kwargs)"

CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(message text, args jsonb, kwargs jsonb) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL RESTRICTED COST 1000 AS $$
BEGIN
    RETURN to_tsvector('simple'::regconfig, COALESCE(message, ''))
        || COALESCE(jsonb_to_tsvector('simple'::regconfig, args, '"all"'::jsonb), ''::tsvector)
        || COALESCE(jsonb_to_tsvector('simple'::regconfig, kwargs, '"all"'::jsonb), ''::tsvector);
END
$$
"""


def create_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_FUNCTION)
    # fastupdate (the default, stated because capture depends on it): a finishing job appends its few
    # words to the pending list, merged into the index in bulk, instead of one GIN insert per word.
    schema_editor.execute(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}" ON "monitoring_jobrun" '
                          f"USING gin (({DOCUMENT})) WITH (fastupdate = on) WHERE finished_at IS NOT NULL")
    schema_editor.execute(f'CREATE STATISTICS IF NOT EXISTS "{STATISTICS}" ON ({DOCUMENT}) FROM "monitoring_jobrun"')


def drop_search_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f'DROP STATISTICS IF EXISTS "{STATISTICS}"')
    schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"')
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}(text, jsonb, jsonb)")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction
    dependencies = [("monitoring", "0005_read_perf")]
    operations = [migrations.RunPython(create_search_index, drop_search_index)]
