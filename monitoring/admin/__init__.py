"""Django admin of the monitoring app: job records, the jobs dashboard, the audit trail and bulk operations."""

from .jobs import AuditEventAdmin, BulkOperationAdmin, JobRunAdmin

# alerts admin: imported here once it lands

__all__ = ["AuditEventAdmin", "BulkOperationAdmin", "JobRunAdmin"]
