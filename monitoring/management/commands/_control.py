"""Shared plumbing of the control commands: the actor, service errors as CommandError, tables, progress."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring import control
from monitoring.audit import Actor
from monitoring.models import BulkOperation, JobRun, JobState


class ControlCommand(BaseCommand):
    """Base of retry_jobs, cancel_jobs, pause_queue, ...: audited as the OS user (or ``--user``)."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="Django username recorded in the audit trail (default: the OS user).")

    def actor(self, options: dict[str, Any]) -> Actor:
        actor = Actor.from_command(options.get("user"))
        if options.get("user") and actor.user is None:
            raise CommandError(f"No Django user {options['user']!r}; leave out --user to act as the OS user.")
        return actor

    def call(self, service: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a service; its refusal becomes a CommandError (exit status 1) that says what to do."""
        try:
            return service(*args, **kwargs)
        except control.InvalidOverride as exc:
            allowed = f" Allowed: {exc.allowed}." if exc.allowed is not None else ""
            raise CommandError(f"{exc.message}{allowed}") from exc
        except control.ControlError as exc:
            raise CommandError(exc.message) from exc

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Print rows as an aligned text table."""
        cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        line = "  ".join("-" * w for w in widths)
        self.stdout.write("  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)))
        self.stdout.write(line)
        for row in cells[1:]:
            self.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))

    def progress(self, operation: BulkOperation) -> None:
        """Show progress of a long run on stderr (one line, rewritten)."""
        if operation.total > 20:
            end = "\n" if operation.processed >= operation.total else ""
            self.stderr.write(f"\r{operation.action}: {operation.processed}/{operation.total} "
                              f"({operation.progress:.0%})", ending=end)
            sys.stderr.flush()

    def job_filters(self, parser: CommandParser, *, default_state: str | None) -> None:
        parser.add_argument("--state", action="append", choices=JobState.values,
                            help=f"Job state (repeatable; default {default_state or 'any'}).")
        parser.add_argument("--task-name", help="Exact task name.")
        parser.add_argument("--queue", help="Queue the job ran on.")
        parser.add_argument("--since", help="Jobs first seen at or after this ISO 8601 date/time.")
        parser.add_argument("--exception-type", help="Exception class name, e.g. DeliveryError.")
        parser.add_argument("--limit", type=int, help="Act on at most this many jobs (oldest first).")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be done; change nothing.")

    def filters(self, options: dict[str, Any], default_state: str | None) -> dict[str, Any]:
        states = options.get("state") or ([default_state] if default_state else None)
        return {k: v for k, v in {"state": states, "task_name": options.get("task_name"),
                                  "queue": options.get("queue"), "since": options.get("since"),
                                  "exception_type": options.get("exception_type")}.items() if v}

    def preview(self, filters: dict[str, Any], limit: int | None) -> None:
        """Print the jobs a filter selects (a dry run)."""
        qs = self.call(control.select_jobs, filters).order_by("created_at", "id")
        total = qs.count()
        shown = total if limit is None else min(total, limit)
        rows = [(j.task_id, j.task_name, j.queue, j.state, j.exception_type)
                for j in qs[:min(shown, 50)]]
        self.table(["task id", "task", "queue", "state", "exception"], rows)
        more = " (first 50 shown)" if shown > 50 else ""
        self.stdout.write(f"Dry run: {shown} job(s) selected{more}; nothing was changed.")

    def report(self, operation: BulkOperation, verb: str) -> None:
        """Print per-job outcomes and totals; fail (exit 1) if any job was skipped or failed."""
        problems = {p["task_id"]: p["reason"] for p in operation.problems}
        jobs = {j.task_id: j for j in JobRun.objects.filter(task_id__in=operation.task_ids[:50])}
        new_ids = iter(operation.new_task_ids)
        rows = []
        for task_id in operation.task_ids[:50]:
            job = jobs.get(task_id)
            outcome = problems.get(task_id)
            rows.append((task_id, job.task_name if job else "-", f"skipped: {outcome}" if outcome else verb,
                         "" if outcome or operation.action != "retry" else next(new_ids, "")))
        headers = ["task id", "task", "outcome"] + (["new task id"] if operation.action == "retry" else [])
        self.table(headers, [r if operation.action == "retry" else r[:3] for r in rows])
        self.stdout.write("")
        self.table(["selected", "done", "skipped", "failed"],
                   [(operation.total, operation.succeeded, operation.skipped, operation.failed)])
        if operation.skipped or operation.failed:
            raise CommandError(f"{operation.skipped + operation.failed} of {operation.total} job(s) were not "
                               f"{verb}; see the reasons above.")
