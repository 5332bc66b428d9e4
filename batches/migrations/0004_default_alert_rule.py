"""The default "batch failed" alert rule (critical): any batch that fails as a whole."""

from django.db import migrations

RULE = {"name": "Batch failed", "metric": "batch_failed", "threshold": 1, "window": 3_600, "severity": "critical",
        "cooldown": 0, "scope": "all", "channels": []}


def create_rule(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.get_or_create(name=RULE["name"], defaults=RULE)


def remove_rule(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(name=RULE["name"], metric=RULE["metric"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0003_fewer_request_indexes"),
        ("monitoring", "0004_default_alert_rules"),
    ]
    operations = [migrations.RunPython(create_rule, remove_rule)]
