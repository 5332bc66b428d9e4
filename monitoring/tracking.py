"""Record non-Celery work (cron scripts, management commands) as ``JobRun`` rows.

    from monitoring.tracking import track

    @track("reports.nightly_export", queue="cron")
    def export(): ...

    with track("billing.sync") as job:
        job.result = f"{n} invoices"
"""

from __future__ import annotations

import functools
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from . import capture
from .models import JobOrigin, JobState

F = TypeVar("F", bound=Callable[..., Any])


class track:
    """Decorator and context manager that records one run of a job type, with its outcome."""

    def __init__(self, job_type: str, *, queue: str = "tracked", args: Any = None, kwargs: Any = None) -> None:
        self.job_type = job_type
        self.queue = queue
        self.args = args
        self.kwargs = kwargs
        self.task_id = ""
        self.result: Any = None
        self._clock = 0.0

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with track(self.job_type, queue=self.queue, args=list(args), kwargs=kwargs) as job:
                job.result = func(*args, **kwargs)
                return job.result

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> track:
        self.task_id = f"tracked-{uuid.uuid4()}"
        self._clock = time.monotonic()
        stamp = capture.now()
        capture.record(capture.make_row(
            self.task_id, JobState.STARTED, task_name=self.job_type, origin=JobOrigin.TRACKED, queue=self.queue,
            args=self.args, kwargs=self.kwargs, worker=socket.gethostname(), published_at=stamp,
            received_at=stamp, started_at=stamp,
        ))
        capture.flush()  # visible as running while it runs
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        runtime = time.monotonic() - self._clock
        if exc is None:
            row = capture.make_row(self.task_id, JobState.SUCCESS, task_name=self.job_type, finished_at=capture.now(),
                                   runtime=runtime, result="" if self.result is None else repr(self.result))
        else:
            row = capture.make_row(
                self.task_id, JobState.FAILURE, task_name=self.job_type, finished_at=capture.now(), runtime=runtime,
                exception_type=type(exc).__name__, exception_message=str(exc),
                traceback="".join(traceback.format_exception(exc_type, exc, tb)))
        capture.record(row)
        capture.flush()
        return False  # never swallow the job's exception
