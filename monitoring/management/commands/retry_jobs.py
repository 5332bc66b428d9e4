"""Retry the jobs matching a filter (default: failed ones), optionally with changed options."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from monitoring import control

from ._control import ControlCommand


class Command(ControlCommand):
    help = ("Retry jobs matching the filters (default --state FAILURE) with their stored arguments. "
            "Example: manage.py retry_jobs --exception-type DeliveryError --since 2026-11-22 --priority 9")

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        self.job_filters(parser, default_state="FAILURE")
        parser.add_argument("--priority", type=int, help=f"New priority (0-{control.MAX_PRIORITY}).")
        parser.add_argument("--queue-to", help="Send the retries to this queue instead.")
        parser.add_argument("--countdown", type=float, help="Seconds to wait before the retries run.")
        parser.add_argument("--max-retries", type=int, help="Retry limit (honoured by OperatorRetryPolicy tasks).")
        parser.add_argument("--rerun", action="store_true", help="Also run SUCCESS jobs again.")
        parser.add_argument("--remove-original", action="store_true", help="Delete each original record.")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = self.filters(options, "FAILURE")
        if options["dry_run"]:
            return self.preview(filters, options["limit"])
        overrides = {k: v for k, v in {"priority": options["priority"], "queue": options["queue_to"],
                                       "countdown": options["countdown"], "max_retries": options["max_retries"],
                                       "rerun": options["rerun"] or None,
                                       "remove_original": options["remove_original"] or None}.items()
                     if v is not None}
        operation = self.call(control.bulk, self.actor(options), "retry", filters=filters, parameters=overrides,
                              limit=options["limit"], inline=True, progress=self.progress)
        self.report(operation, "retried")
