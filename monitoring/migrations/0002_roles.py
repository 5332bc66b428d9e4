"""Create the viewer and operator groups with the monitoring app's permissions."""

from django.db import migrations

from monitoring.roles import OPERATORS, VIEWERS, grant, view_codenames


def create_roles(apps, schema_editor):
    views = view_codenames(apps, "monitoring")
    grant(apps, VIEWERS, "monitoring", views)
    grant(apps, OPERATORS, "monitoring", [*views, "operate_jobrun", "operate_queue"])


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[VIEWERS, OPERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
