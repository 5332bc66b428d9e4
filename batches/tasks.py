"""Periodic Celery tasks: thin wrappers over the pipeline steps (schedule in the host's beat schedule)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import pipeline


def _summary(result: pipeline.StepResult) -> dict[str, Any]:
    return {"step": result.step, "items": result.items, "errors": result.errors, "queries": result.queries,
            "duration": round(result.duration, 3), **result.detail}


@shared_task(name="batches.create_batches", ignore_result=False)
def create_batches() -> dict[str, Any]:
    """Claim pending requests into batches and submit them."""
    return _summary(pipeline.create_batches())


@shared_task(name="batches.check_batches")
def check_batches() -> dict[str, Any]:
    """Poll in-flight batches."""
    return _summary(pipeline.check_batches())


@shared_task(name="batches.process_results")
def process_results() -> dict[str, Any]:
    """Store the results of finished batches."""
    return _summary(pipeline.process_results())


@shared_task(name="batches.retry_failed")
def retry_failed() -> dict[str, Any]:
    """Requeue retryable failures whose backoff has passed."""
    return _summary(pipeline.retry_failed())


@shared_task(name="batches.expire_batches")
def expire_batches() -> dict[str, Any]:
    """Cancel batches past their completion window."""
    return _summary(pipeline.expire_batches())


@shared_task(name="batches.submit_demo_requests")
def submit_demo_requests(count: int = 12) -> int:
    """Submit a few new demo analysis requests (the demo's beat schedule runs this)."""
    from . import demo

    return demo.submit_some(count)
