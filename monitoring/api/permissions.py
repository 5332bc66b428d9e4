"""API permissions backed by explicit model permissions (the viewer and operator groups hold them)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission


class RolePermission(BasePermission):
    """Reads need ``read_permission``; anything else needs ``act_permission`` too.

    Subclasses name the permissions, e.g. the batches app uses its own models' permissions.
    """

    read_permission = "monitoring.view_jobrun"
    act_permission = "monitoring.operate_jobrun"

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.has_perm(self.read_permission)):
            return False
        if request.method in SAFE_METHODS:
            return True
        return user.has_perm(self.act_permission)


class CanViewJobs(RolePermission):
    """Viewers and operators may read; only operators may act on jobs."""


class CanOperateQueues(RolePermission):
    act_permission = "monitoring.operate_queue"


def can_act(user: Any, permission: str = "monitoring.operate_jobrun") -> bool:
    """Whether ``user`` may act (used by templates and the admin to show or hide action buttons)."""
    return bool(user and user.is_authenticated and user.has_perm(permission))
