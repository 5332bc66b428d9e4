"""Cancel jobs by task id or filter: revoke waiting ones, terminate running ones (prefork workers)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from monitoring import control

from ._control import ControlCommand


class Command(ControlCommand):
    help = ("Cancel jobs given by task id, or matching filters (e.g. --state PENDING --queue emails). "
            "Running jobs are terminated where the worker's pool allows it (prefork).")

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("task_ids", nargs="*", help="Task ids to cancel.")
        self.job_filters(parser, default_state=None)
        parser.add_argument("--signal", default="SIGTERM", choices=control.TERMINATE_SIGNALS,
                            help="Signal for running jobs (default SIGTERM).")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = self.filters(options, None)
        if options["task_ids"] and filters:
            raise CommandError("Give task ids or filters, not both.")
        if not options["task_ids"] and not filters:
            raise CommandError("Give task ids, or filters such as --state PENDING --queue emails.")
        if options["dry_run"]:
            if filters:
                return self.preview(filters, options["limit"])
            self.stdout.write(f"Dry run: {len(options['task_ids'])} job(s) selected; nothing was changed.")
            return None
        selection = ({"ids": options["task_ids"]} if options["task_ids"] else
                     {"filters": filters, "limit": options["limit"]})
        operation = self.call(control.bulk, self.actor(options), "cancel", parameters={"signal": options["signal"]},
                              inline=True, progress=self.progress, **selection)
        self.report(operation, "cancelled")
