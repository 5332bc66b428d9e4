"""Run the whole demo: migrate, create a superuser, seed 30 days, start web + worker + beat; Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from batches import conf as batches_conf
from batches import demo as batches_demo
from batches.models import AIProcessingRequest, BatchJob
from jobmonitor.demo.seed import seed_history
from monitoring.models import JobRun


class Command(BaseCommand):
    help = "Set up and run the jobmonitor demo (web server, Celery worker and beat on the embedded broker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="Port of the web server (default 8000).")
        parser.add_argument("--days", type=int, default=30, help="Days of history to seed (default 30).")
        parser.add_argument("--reseed", action="store_true", help="Delete the job history and seed it again.")
        parser.add_argument("--setup-only", action="store_true",
                            help="Migrate, create the user and seed, then exit without starting processes.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["days"] < 1:
            raise CommandError("--days must be at least 1 (for example --days 30).")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(self.style.SUCCESS(f"Database migrated: {settings.DATABASES['default']['NAME']}"))
        password = self._superuser()
        self._seed(options["days"], options["reseed"])
        if options["setup_only"]:
            self.stdout.write(f"Demo user: admin / {password}")
            return
        self._run(options["port"], password)

    def _superuser(self) -> str:
        # A fresh password each run: it is printed, never stored in plain text.
        password = secrets.token_urlsafe(12)
        User = get_user_model()
        user = User.objects.filter(username="admin").first() or User(username="admin", email="admin@example.com")
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password

    def _seed(self, days: int, reseed: bool) -> None:
        if reseed:
            JobRun.objects.all().delete()
            AIProcessingRequest.objects.all().delete()
            BatchJob.objects.all().delete()
        if JobRun.objects.exists() or BatchJob.objects.exists():
            self.stdout.write("Job history already seeded (use --reseed to start over).")
            return
        started = time.monotonic()
        count = seed_history(days=days)
        batch_counts = batches_demo.seed(timezone.now(), days=days)
        figures = ", ".join(f"{n:,} {what}" for what, n in batch_counts.items())
        self.stdout.write(self.style.SUCCESS(
            f"Seeded {count:,} job runs and {figures} over {days} days in {time.monotonic() - started:.1f}s."))

    def _run(self, port: int, password: str) -> None:
        # The OpenAI-compatible stand-in runs in this (otherwise idle) process; worker and beat inherit its URL
        # through OPENAI_BASE_URL unless the environment already points at a real API.
        standin_url = batches_conf.openai_base_url() or ""
        if not standin_url:
            standin_url = batches_demo.start_standin(step_seconds=15)
            batches_demo.use_standin(standin_url)
        env = {**os.environ, "JOBMONITOR_DEMO": "1", "PYTHONUNBUFFERED": "1"}
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        commands = {
            "web": [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
            "worker": [python, "-m", "celery", "-A", "jobmonitor", "worker", "-l", "warning", "-c", "2",
                       "-Q", "default,emails,reports,media", "-n", "demo@%h"],
            "beat": [python, "-m", "celery", "-A", "jobmonitor", "beat", "-l", "warning",
                     "-s", str(settings.VAR_DIR / "celerybeat-schedule")],
        }
        processes: dict[str, subprocess.Popen] = {}
        # Ctrl-C, and SIGTERM from a supervisor, stop everything (SIGINT may be inherited as ignored when the
        # demo is started from a script in the background).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            for name, command in commands.items():
                # Own process groups: a terminal's Ctrl-C reaches only us, and we stop each child in order.
                processes[name] = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, start_new_session=True)
            self.stdout.write(self.style.SUCCESS(
                f"\njobmonitor demo running\n"
                f"  admin:   http://127.0.0.1:{port}/admin/   user: admin   password: {password}\n"
                f"  API:     http://127.0.0.1:{port}/api/v1/   (docs: /api/v1/docs/)\n"
                f"  OpenAI Batch API: {standin_url}\n"
                f"Press Ctrl-C to stop the web server, the worker and beat.\n"))
            while True:
                for name, proc in processes.items():
                    if proc.poll() is not None:
                        raise CommandError(f"The demo {name} process exited with code {proc.returncode}.")
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the demo...")
        finally:
            stop_all(processes)


def stop_all(processes: dict[str, subprocess.Popen], grace: float = 15.0) -> None:
    """Stop child processes: SIGTERM, then SIGKILL their groups after ``grace`` seconds."""
    # SIGTERM to each main process only: a Celery worker then shuts its own pool down warmly (signalling
    # the whole group would kill pool children mid-task). Whatever is left after the grace period is killed.
    for proc in processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
