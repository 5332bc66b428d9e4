"""Chainable QuerySet methods shared by the pipeline, metrics, API filters and commands."""

from __future__ import annotations

from datetime import datetime

from django.db import models


class CompanyQuerySet(models.QuerySet):
    def active(self) -> CompanyQuerySet:
        return self.filter(is_active=True)


class AIProcessingRequestQuerySet(models.QuerySet):
    def pending(self) -> AIProcessingRequestQuerySet:
        """Requests waiting to be put into a batch."""
        return self.filter(status="pending_batching")

    def retry_due(self, now: datetime) -> AIProcessingRequestQuerySet:
        """Scheduled retries whose backoff has passed."""
        return self.filter(status="retry_scheduled", next_attempt_at__lte=now)

    def failed(self) -> AIProcessingRequestQuerySet:
        return self.filter(status="failed")

    def in_range(self, start: datetime | None = None, end: datetime | None = None) -> AIProcessingRequestQuerySet:
        """Requests requested within [start, end)."""
        qs = self
        if start is not None:
            qs = qs.filter(requested_at__gte=start)
        if end is not None:
            qs = qs.filter(requested_at__lt=end)
        return qs


class BatchJobQuerySet(models.QuerySet):
    def local(self) -> BatchJobQuerySet:
        """Batches not yet accepted by the provider."""
        return self.filter(status="pending")

    def in_flight(self) -> BatchJobQuerySet:
        """Batches the provider is working on (polled by the check step)."""
        return self.filter(status__in=("validating", "in_progress", "finalizing", "cancelling"))

    def terminal(self) -> BatchJobQuerySet:
        return self.filter(status__in=("completed", "failed", "expired", "cancelled"))

    def unprocessed(self) -> BatchJobQuerySet:
        """Finished batches whose result files have not been read yet."""
        return self.terminal().filter(results_processed_at__isnull=True)

    def in_range(self, start: datetime | None = None, end: datetime | None = None) -> BatchJobQuerySet:
        """Batches created within [start, end)."""
        qs = self
        if start is not None:
            qs = qs.filter(created_at__gte=start)
        if end is not None:
            qs = qs.filter(created_at__lt=end)
        return qs
