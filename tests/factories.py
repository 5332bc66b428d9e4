"""Small factory helpers for the test suite."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, User
from django.utils import timezone

from monitoring.models import JobRun, JobState
from monitoring.roles import OPERATORS, VIEWERS

_counter = itertools.count()


def job_run(**fields: Any) -> JobRun:
    """Create a JobRun with sensible defaults; timestamps follow ``created_at`` and ``runtime``."""
    created = fields.pop("created_at", None) or timezone.now()
    state = fields.pop("state", JobState.SUCCESS)
    runtime = fields.pop("runtime", 1.0 if state in (JobState.SUCCESS, JobState.FAILURE) else None)
    wait = fields.pop("wait_time", 0.5)
    started = fields.pop("started_at", created + timedelta(seconds=wait) if state != JobState.PENDING else None)
    finished = fields.pop("finished_at", started + timedelta(seconds=runtime) if runtime is not None and started
                          else None)
    defaults: dict[str, Any] = {
        "task_id": str(uuid.uuid4()), "task_name": "jobmonitor.tasks.add", "queue": "default",
        "worker": "celery@test", "published_at": created, "received_at": started, "updated_at": timezone.now(),
    }
    defaults.update(fields)
    return JobRun.objects.create(state=state, created_at=created, started_at=started, finished_at=finished,
                                 runtime=runtime, wait_time=wait if started else None, **defaults)


def user(role: str | None = None, **fields: Any) -> User:
    """Create a user; ``role`` is "viewer", "operator" or "superuser"."""
    n = next(_counter)
    if role == "superuser":
        return User.objects.create_superuser(f"admin{n}", f"admin{n}@example.com", "pw")
    account = User.objects.create_user(fields.pop("username", f"user{n}"), password="pw", is_staff=True, **fields)
    if role:
        account.groups.add(Group.objects.get(name={"viewer": VIEWERS, "operator": OPERATORS}[role]))
    return account


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def aware(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ensure_roles() -> None:
    """Recreate the role groups a transactional test's flush removed (their data migrations ran only once)."""
    from django.apps import apps
    from django.contrib.auth.models import Permission

    if Group.objects.filter(name=OPERATORS).exists():
        return
    for app_label, operate in (("monitoring", ["operate_jobrun", "operate_queue"]), ("batches", ["operate_batchjob"])):
        views = [f"view_{model._meta.model_name}" for model in apps.get_app_config(app_label).get_models()]
        for name, codenames in ((VIEWERS, views), (OPERATORS, [*views, *operate])):
            group, _ = Group.objects.get_or_create(name=name)
            group.permissions.add(*Permission.objects.filter(content_type__app_label=app_label,
                                                              codename__in=codenames))
