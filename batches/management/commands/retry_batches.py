"""Resubmit the failed and expired requests of finished batches (``--dry-run`` shows what would happen)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from monitoring.audit import Actor

from ... import pipeline
from ...models import TERMINAL_STATES, BatchJob


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise CommandError(f"--since takes a number of hours, e.g. --since 24; got {value!r}.") from None
    if hours <= 0:
        raise CommandError("--since must be a positive number of hours.")
    return hours


class Command(BaseCommand):
    help = "Resubmit the failed and expired requests of finished batches in a later batch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch_ids", nargs="*", type=int, help="Local batch ids (default: every match).")
        parser.add_argument("--status", choices=[str(s) for s in TERMINAL_STATES],
                            help="Only batches in this status.")
        parser.add_argument("--company", type=int, help="Only batches of this company id.")
        parser.add_argument("--job-type", help="Only batches of this job type.")
        parser.add_argument("--since", help="Only batches created in the last N hours.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be resubmitted; change nothing.")
        parser.add_argument("--user", help="Record the action under this Django username.")

    def handle(self, *args, **options) -> None:
        jobs = BatchJob.objects.filter(results_processed_at__isnull=False, failed_count__gt=0).order_by("id")
        if options["batch_ids"]:
            jobs = jobs.filter(id__in=options["batch_ids"])
        if options["status"]:
            jobs = jobs.filter(status=options["status"])
        if options["company"] is not None:
            jobs = jobs.filter(company_id=options["company"])
        if options["job_type"]:
            jobs = jobs.filter(job_type=options["job_type"])
        if options["since"]:
            jobs = jobs.filter(created_at__gte=timezone.now() - timedelta(hours=_hours(options["since"])))
        if options["user"] and not Actor.from_command(options["user"]).user:
            raise CommandError(f"No user named {options['user']!r}; give an existing username or leave out --user.")
        actor = Actor.from_command(options["user"])
        total = matched = 0
        for job in jobs:
            try:
                count = pipeline.retry_batch(job, actor, dry_run=options["dry_run"])
            except pipeline.ActionError as exc:
                self.stdout.write(f"skip {job}: {exc}")
                continue
            matched += 1
            total += count
            verb = "would resubmit" if options["dry_run"] else "resubmitted"
            self.stdout.write(f"{job}: {verb} {count} requests")
        if not matched:
            raise CommandError("No finished batch with failed or expired requests matches; check the filters "
                               "(batches are retried once their results are processed).")
        prefix = "Dry run: would resubmit" if options["dry_run"] else "Resubmitted"
        self.stdout.write(self.style.SUCCESS(f"{prefix} {total} requests from {matched} batches."))
