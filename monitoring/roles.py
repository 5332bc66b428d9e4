"""The two built-in roles, backed by model permissions a project can reuse in its own groups."""

from __future__ import annotations

from typing import Any

VIEWERS = "Job monitor viewers"
OPERATORS = "Job monitor operators"


def grant(apps: Any, group_name: str, app_label: str, codenames: list[str]) -> None:
    """Add the named permissions of ``app_label`` to a group (creating it); used by data migrations."""
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations (post_migrate); a data migration that
    # assigns them must create them first.
    # In a migration the app config is a stub without models_module, which create_permissions() skips.
    app_config = apps.get_app_config(app_label)
    previous = getattr(app_config, "models_module", None)
    app_config.models_module = previous or True
    try:
        create_permissions(app_config, apps=apps, verbosity=0)
    finally:
        app_config.models_module = previous
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=group_name)
    perms = Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
    group.permissions.add(*perms)


def view_codenames(apps: Any, app_label: str) -> list[str]:
    """``view_<model>`` for every model of an app as it is at this migration."""
    return [f"view_{model._meta.model_name}" for model in apps.get_app_config(app_label).get_models()]
