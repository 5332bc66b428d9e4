"""Pause a queue: every worker stops consuming it, also after a restart, until resume_queue."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from monitoring import control

from ._control import ControlCommand


class Command(ControlCommand):
    help = "Pause a queue (its messages stay in the broker). Undo with resume_queue."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("queue", help="Queue name.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = self.call(control.pause, self.actor(options), options["queue"])
        self.table(["queue", "state", "workers told"], [(result.queue, "paused", ", ".join(result.workers) or "-")])
        self.stdout.write(self.style.SUCCESS(result.message))
