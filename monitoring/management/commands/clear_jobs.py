"""Delete the finished job records of one queue by outcome, in batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from monitoring import control

from ._control import ControlCommand


class Command(ControlCommand):
    help = ("Delete finished records of one queue: --type completed (SUCCESS), failed (FAILURE, LOST) or all; "
            "optionally --older-than 2026-11-01. Running and waiting jobs are never deleted.")

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("queue", help="Queue name.")
        parser.add_argument("--type", default="all", choices=list(control.CLEAR_TYPES), help="Which outcomes.")
        parser.add_argument("--older-than", help="Only records finished before this ISO 8601 date/time.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--yes", action="store_true", help="Confirm the deletion.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["yes"] and not options["dry_run"]:
            raise CommandError("Clearing deletes job records for good; run with --dry-run to count them, or --yes "
                               "to delete.")
        actor = self.actor(options)
        total = None if options["dry_run"] else self.call(
            control.clearable_jobs, options["queue"], options["type"], options["older_than"]).count()

        def progress(done: int) -> None:
            if total and total > 20:
                self.stderr.write(f"\rdeleted {done}/{total} ({done / total:.0%})", ending="")

        result = self.call(control.clear, actor, options["queue"], options["type"], older_than=options["older_than"],
                           dry_run=options["dry_run"], progress=progress)
        if total and total > 20:
            self.stderr.write("")
        self.table(["queue", "type", "older than", "would delete" if result.dry_run else "deleted"],
                   [(result.queue, result.type, result.older_than or "-", result.deleted)])
        self.stdout.write(self.style.SUCCESS(result.message))
