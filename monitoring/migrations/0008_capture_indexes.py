"""Capture write path: the task id stays unique without PostgreSQL's extra LIKE index on it.

``unique=True`` on a CharField makes Django add a ``varchar_pattern_ops`` index on PostgreSQL; no read path
filters task ids with LIKE, and every capture upsert (a non-HOT update) had to insert into it. The model now
declares a named ``UniqueConstraint`` instead. On PostgreSQL the existing unique constraint is renamed and the
LIKE index dropped, both instant, so a 10M-row table is not re-indexed; other databases (and the way back)
run the plain schema operations.
"""

from django.db import migrations, models
from django.db.migrations.operations.base import Operation

CONSTRAINT = models.UniqueConstraint(fields=["task_id"], name="jobrun_task_id_uniq")


class TaskIdUniqueConstraint(Operation):
    """``AlterField`` (drop unique=True) + ``AddConstraint``, done in place on PostgreSQL."""

    reversible = True

    def __init__(self) -> None:
        self.operations = [
            migrations.AlterField(model_name="jobrun", name="task_id",
                                  field=models.CharField(editable=False, max_length=255, verbose_name="task id")),
            migrations.AddConstraint(model_name="jobrun", constraint=CONSTRAINT),
        ]

    def deconstruct(self):
        return self.__class__.__name__, [], {}

    def state_forwards(self, app_label, state):
        for operation in self.operations:
            operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            state = from_state
            for operation in self.operations:
                after = state.clone()
                operation.state_forwards(app_label, after)
                operation.database_forwards(app_label, schema_editor, state, after)
                state = after
            return
        table, quote = to_state.apps.get_model(app_label, "JobRun")._meta.db_table, schema_editor.quote_name
        with schema_editor.connection.cursor() as cursor:
            found = schema_editor.connection.introspection.get_constraints(cursor, table)
        for name, info in found.items():
            if info["columns"] != ["task_id"]:
                continue
            if info["unique"] and not info["primary_key"]:
                schema_editor.execute(f"ALTER TABLE {quote(table)} RENAME CONSTRAINT {quote(name)} "
                                      f"TO {quote(CONSTRAINT.name)}")
            elif name.endswith("_like"):
                schema_editor.execute(f"DROP INDEX {quote(name)}")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        # Undo in reverse order, each step between the states it was applied between.
        states = [to_state]
        for operation in self.operations[:-1]:
            states.append(states[-1].clone())
            operation.state_forwards(app_label, states[-1])
        states.append(from_state)
        for index in reversed(range(len(self.operations))):
            self.operations[index].database_backwards(app_label, schema_editor, states[index + 1], states[index])

    def describe(self):
        return "Make task_id unique through a named constraint (no LIKE index on PostgreSQL)"


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0007_error_rollups")]
    operations = [TaskIdUniqueConstraint()]
