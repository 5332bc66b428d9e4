"""Tasks the control tests send; they report what the worker saw (queue, priority, arguments, headers)."""

from __future__ import annotations

import time

from celery import shared_task

from monitoring.control import OperatorRetryPolicy


@shared_task(bind=True, name="tests.control.echo")
def echo(self, *args, **kwargs) -> dict:
    """Return the arguments and delivery details this execution received."""
    delivery = self.request.delivery_info or {}
    return {"args": list(args), "kwargs": kwargs, "queue": delivery.get("routing_key"),
            "priority": delivery.get("priority"), "headers": self.request.headers or {}}


@shared_task(bind=True, name="tests.control.always_retries", base=OperatorRetryPolicy, max_retries=0)
def always_retries(self) -> None:
    """Fail every attempt by asking for a retry (the operator's policy decides how often)."""
    raise self.retry(exc=ConnectionError(f"attempt {self.request.retries + 1} failed"))


@shared_task(name="tests.control.nap")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
