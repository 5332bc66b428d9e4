"""Demo tasks: realistic shapes of background work (fast, slow, flaky, failing, retrying)."""

from __future__ import annotations

import random
import time

from celery import shared_task


class DeliveryError(Exception):
    """The mail relay refused a message."""


class ReportTimeout(Exception):
    """A report query took too long."""


@shared_task(acks_late=True)
def noop() -> None:
    """Do nothing (the capture benchmark; acked after it ran, so the benchmark sees when all are done)."""


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task(bind=True, max_retries=3, default_retry_delay=2)
def send_email(self, to: str, subject: str, smtp_password: str = "") -> str:
    time.sleep(random.uniform(0.05, 0.4))
    if random.random() < 0.08:
        raise self.retry(exc=DeliveryError(f"421 relay busy for {to}"))
    if random.random() < 0.03:
        raise DeliveryError(f"550 mailbox unavailable: {to}")
    return f"sent to {to}"


@shared_task
def generate_report(report: str, rows: int = 1000) -> dict:
    time.sleep(random.uniform(0.5, 3.0))
    if random.random() < 0.06:
        raise ReportTimeout(f"query for {report} exceeded 30s")
    return {"report": report, "rows": rows}


@shared_task
def resize_image(image_id: int, width: int = 800) -> str:
    time.sleep(random.uniform(0.05, 0.3))
    if random.random() < 0.04:
        raise ValueError(f"image {image_id} is not a valid JPEG")
    return f"image {image_id} resized to {width}px"


@shared_task
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@shared_task
def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@shared_task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, fail_times: int = 1) -> str:
    if self.request.retries < fail_times:
        raise self.retry(exc=ConnectionError(f"attempt {self.request.retries + 1} failed"), countdown=0)
    return f"succeeded after {self.request.retries} retries"


@shared_task
def produce_demo_traffic(count: int = 6) -> int:
    """Publish a random mix of demo tasks (scheduled by beat so the demo data keeps moving)."""
    for _ in range(count):
        kind = random.random()
        if kind < 0.4:
            send_email.delay(f"user{random.randint(1, 500)}@example.com", "Your receipt", smtp_password="hunter2")
        elif kind < 0.6:
            generate_report.delay(random.choice(["sales", "churn", "inventory"]), rows=random.randint(100, 10_000))
        elif kind < 0.9:
            resize_image.delay(random.randint(1, 10_000))
        else:
            add.apply_async((random.randint(1, 9), random.randint(1, 9)), countdown=random.randint(5, 60))
    return count
