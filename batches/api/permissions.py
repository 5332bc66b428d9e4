"""API permissions of the batches app (the viewer and operator groups hold them)."""

from __future__ import annotations

from monitoring.api.permissions import RolePermission


class CanOperateBatches(RolePermission):
    """Viewers may read batches and requests; only operators may retry or cancel batches."""

    read_permission = "batches.view_batchjob"
    act_permission = "batches.operate_batchjob"


class CanViewRequests(RolePermission):
    read_permission = "batches.view_aiprocessingrequest"
    act_permission = "batches.operate_batchjob"
