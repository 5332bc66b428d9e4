"""Default alert rules for a new install, and the alert permissions of the viewer and operator groups.

Thresholds and cooldowns follow the product documents: error rate over 10% (high, notify at once),
average processing time over an hour (medium, hourly), throughput under 0.5 jobs per hour (medium,
daily), jobs stuck over 30 minutes (medium). The batch-failure rule is created by the batches app.
"""

from django.db import migrations

from monitoring.roles import OPERATORS, VIEWERS, grant

DEFAULT_RULES = [
    {"name": "High error rate", "metric": "error_rate", "threshold": 10, "window": 3_600, "severity": "high",
     "cooldown": 900},
    {"name": "Long processing time", "metric": "avg_processing_time", "threshold": 3_600, "window": 3_600,
     "severity": "medium", "cooldown": 3_600},
    {"name": "Low throughput", "metric": "throughput", "threshold": 0.5, "window": 7_200, "severity": "medium",
     "cooldown": 86_400},
    {"name": "Jobs stuck over 30 minutes", "metric": "stuck_jobs", "threshold": 1_800, "window": 3_600,
     "severity": "medium", "cooldown": 3_600},
]
VIEW = ["view_alertrule", "view_alert", "view_alertdelivery"]
OPERATE = ["add_alertrule", "change_alertrule", "delete_alertrule", "operate_alert"]


def create_defaults(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for rule in DEFAULT_RULES:
        AlertRule.objects.get_or_create(name=rule["name"], defaults={**rule, "scope": "all", "channels": []})


def grant_alert_roles(apps, schema_editor):
    grant(apps, VIEWERS, "monitoring", VIEW)
    grant(apps, OPERATORS, "monitoring", [*VIEW, *OPERATE])


def remove_defaults(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(name__in=[r["name"] for r in DEFAULT_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0003_alerts"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [
        migrations.RunPython(create_defaults, remove_defaults),
        migrations.RunPython(grant_alert_roles, migrations.RunPython.noop),
    ]
