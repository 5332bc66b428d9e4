"""Grant the batches permissions to the monitoring viewer and operator groups."""

from django.db import migrations

from monitoring.roles import OPERATORS, VIEWERS, grant, view_codenames


def grant_roles(apps, schema_editor):
    views = view_codenames(apps, "batches")
    grant(apps, VIEWERS, "batches", views)
    grant(apps, OPERATORS, "batches", [*views, "operate_batchjob"])


def revoke_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perms = Permission.objects.filter(content_type__app_label="batches")
    for group in Group.objects.filter(name__in=[VIEWERS, OPERATORS]):
        group.permissions.remove(*perms)


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0001_initial"),
        ("monitoring", "0002_roles"),
    ]
    operations = [migrations.RunPython(grant_roles, revoke_roles)]
