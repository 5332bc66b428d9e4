"""Django admin of the monitoring app: job records, the jobs dashboard, the audit trail and bulk operations."""

from .. import alerts_admin  # noqa: F401 - registers the alert rule and alert admins
from .jobs import AuditEventAdmin, BulkOperationAdmin, JobRunAdmin

__all__ = ["AuditEventAdmin", "BulkOperationAdmin", "JobRunAdmin"]
