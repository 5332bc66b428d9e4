"""Chainable QuerySet methods shared by admin filters, API filters, metrics and commands."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone


class JobRunQuerySet(models.QuerySet):
    def in_state(self, *states: str) -> JobRunQuerySet:
        return self.filter(state__in=states)

    def failed(self) -> JobRunQuerySet:
        return self.filter(state="FAILURE")

    def succeeded(self) -> JobRunQuerySet:
        return self.filter(state="SUCCESS")

    def active(self) -> JobRunQuerySet:
        """Jobs a worker holds: received, started or retrying."""
        return self.filter(state__in=("RECEIVED", "STARTED", "RETRY"))

    def running(self) -> JobRunQuerySet:
        return self.filter(state="STARTED")

    def waiting(self) -> JobRunQuerySet:
        """Published jobs no worker has picked up yet (includes scheduled ones)."""
        return self.filter(state="PENDING")

    def scheduled(self, now: datetime | None = None) -> JobRunQuerySet:
        return self.filter(state__in=("PENDING", "RECEIVED"), eta__gt=now or timezone.now())

    def finished(self) -> JobRunQuerySet:
        return self.filter(finished_at__isnull=False)

    def in_range(self, since: datetime | None = None, until: datetime | None = None) -> JobRunQuerySet:
        """Jobs first seen in ``[since, until)``."""
        qs = self
        if since is not None:
            qs = qs.filter(created_at__gte=since)
        if until is not None:
            qs = qs.filter(created_at__lt=until)
        return qs

    def stuck(self, threshold: timedelta, now: datetime | None = None) -> JobRunQuerySet:
        """Active jobs started (or received) longer than ``threshold`` ago."""
        cutoff = (now or timezone.now()) - threshold
        return self.active().filter(
            models.Q(started_at__lt=cutoff) | models.Q(started_at__isnull=True, received_at__lt=cutoff)
        )
