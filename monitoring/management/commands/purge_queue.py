"""Delete the messages waiting in one queue (never every queue)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from monitoring import control

from ._control import ControlCommand


class Command(ControlCommand):
    help = "Delete the waiting messages of one queue. Needs --yes; running and prefetched jobs are not touched."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("queue", help="Queue name.")
        parser.add_argument("--yes", action="store_true", help="Confirm: the messages cannot be brought back.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["yes"]:
            raise CommandError(f"Purging deletes every waiting message of queue {options['queue']!r} for good; "
                               "run again with --yes to confirm.")
        result = self.call(control.purge, self.actor(options), options["queue"])
        self.table(["queue", "messages deleted", "records marked revoked"],
                   [(result.queue, result.purged, result.records_revoked)])
        self.stdout.write(self.style.SUCCESS(result.message))
