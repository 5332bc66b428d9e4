"""Resume a paused queue: the workers that consumed it consume it again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from monitoring import control

from ._control import ControlCommand


class Command(ControlCommand):
    help = "Resume a queue paused with pause_queue."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("queue", help="Queue name.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = self.call(control.resume, self.actor(options), options["queue"])
        self.table(["queue", "state", "workers told"], [(result.queue, "active", ", ".join(result.workers) or "-")])
        self.stdout.write(self.style.SUCCESS(result.message))
