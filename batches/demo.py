"""Demo hooks (called by the host's demo command): seed 30 days of batch history, run a stand-in server."""

from __future__ import annotations

import atexit
import os
import random
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from monitoring.bulk import insert_objects

from . import conf, pricing
from .models import AIProcessingRequest, BatchJob, BatchStatus, Company, RequestStatus
from .submit import RequestSpec, submit_requests

COMPANIES = ("Acme Support", "Globex Helpdesk", "Initech Care", "Umbrella Chat", "Stark Service")
JOB_TYPES = {
    "sentiment": "Classify the sentiment of this chat session as positive, neutral or negative.",
    "category": "Assign this chat session one category: billing, technical, account, other.",
    "summary": "Summarise this chat session in two sentences.",
}
MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")
SESSIONS = ("My invoice shows a double charge for March.", "The app crashes when I upload a photo.",
            "How do I change the email on my account?", "Thanks, the new plan works great!",
            "I have been waiting for a refund for two weeks.", "Can I export my data to CSV?")
_server = None


def seed(now: datetime, days: int = 30, batches_per_day: int = 16) -> dict[str, int]:
    """Create demo companies and ``days`` of finished batches with their requests (bulk inserts, seconds)."""
    rng = random.Random(20261122)
    with transaction.atomic():
        companies = [Company.objects.get_or_create(name=name)[0] for name in COMPANIES]
        jobs, outcomes = [], []
        for index in range(days * batches_per_day):
            created = now - timedelta(days=days) + timedelta(hours=index * 24 / batches_per_day,
                                                              minutes=rng.randint(0, 50))
            if created >= now - timedelta(hours=2):
                break
            model, job_type = rng.choice(MODELS), rng.choice(list(JOB_TYPES))
            size = rng.randint(10, 120)
            roll = rng.random()
            status = (BatchStatus.FAILED if roll < 0.03 else BatchStatus.EXPIRED if roll < 0.06
                      else BatchStatus.COMPLETED)
            submitted = created + timedelta(seconds=rng.randint(5, 60))
            started = submitted + timedelta(seconds=rng.randint(20, 300))
            finished = started + timedelta(minutes=rng.randint(8, 240))
            job = BatchJob(company=rng.choice(companies), provider="openai", status=status, job_type=job_type,
                           endpoint="/v1/chat/completions", model=model, request_count=size, created_at=created,
                           provider_batch_id=f"batch_demo_{uuid.uuid4().hex[:20]}", submitted_at=submitted,
                           in_progress_at=None if status == BatchStatus.FAILED else started,
                           expires_at=submitted + timedelta(hours=24), results_processed_at=finished,
                           input_file_id=f"file_demo_{uuid.uuid4().hex[:16]}",
                           status_history=[{"status": s, "at": t.isoformat()} for s, t in
                                           (("pending", created), ("validating", submitted),
                                            ("in_progress", started), (status, finished))])
            setattr(job, f"{status}_at", finished)
            jobs.append(job)
            outcomes.append(_requests_for(job, size, rng, finished))
        # Totals first, so each batch is written once (no bulk_update pass).
        for job, rows in zip(jobs, outcomes, strict=True):
            summary: dict[str, int] = {}
            for request in rows:
                if request.status == RequestStatus.FAILED:
                    summary[request.error_code] = summary.get(request.error_code, 0) + 1
            job.completed_count = sum(1 for r in rows if r.status == RequestStatus.COMPLETED)
            job.failed_count = len(rows) - job.completed_count
            job.cost = sum((r.cost or Decimal(0) for r in rows), Decimal(0))
            job.sync_cost = sum((r.sync_cost or Decimal(0) for r in rows), Decimal(0))
            job.savings = job.sync_cost - job.cost
            job.input_tokens = sum(r.input_tokens for r in rows)
            job.output_tokens = sum(r.output_tokens for r in rows)
            job.error_summary = summary
        jobs = BatchJob.objects.bulk_create(jobs)
        requests = []
        for job, rows in zip(jobs, outcomes, strict=True):
            for request in rows:
                request.batch_id, request.company_id = job.pk, job.company_id
            requests.extend(rows)
        insert_objects(requests)
    return {"companies": len(companies), "batches": len(jobs), "requests": len(requests)}


def _requests_for(job: BatchJob, size: int, rng: random.Random, finished: datetime) -> list[AIProcessingRequest]:
    rows = []
    for _ in range(size):
        text = rng.choice(SESSIONS)
        body = {"model": job.model, "max_tokens": 60, "messages": [
            {"role": "system", "content": JOB_TYPES[job.job_type]}, {"role": "user", "content": text}]}
        request = AIProcessingRequest(job_type=job.job_type, model=job.model, endpoint=job.endpoint, body=body,
                                      line_bytes=300, attempts=1, requested_at=job.created_at - timedelta(
                                          minutes=rng.randint(0, 30)), metadata={"session": rng.randint(1, 5000)})
        failed_code = None
        if job.status == BatchStatus.FAILED:
            failed_code = "batch_failed"
        elif job.status == BatchStatus.EXPIRED and rng.random() < 0.3:
            failed_code = "batch_expired"
        elif rng.random() < 0.04:
            failed_code = rng.choice(["rate_limit_exceeded", "token_limit_exceeded", "server_error"])
        if failed_code:
            request.status, request.error_code = RequestStatus.FAILED, failed_code
            request.error_message = f"Demo failure: {failed_code}."
        else:
            request.status = RequestStatus.COMPLETED
            request.input_tokens = rng.randint(150, 1_200)
            request.cached_input_tokens = rng.choice([0, 0, request.input_tokens // 2])
            request.output_tokens = rng.randint(10, 60)
            cost = pricing.cost_of(job.model, request.input_tokens, request.cached_input_tokens,
                                   request.output_tokens)
            request.cost, request.sync_cost = cost.batch, cost.sync
            request.response_body = {"choices": [{"message": {"role": "assistant", "content": "neutral"}}]}
        request.completed_at = finished
        rows.append(request)
    return rows


def start_standin(port: int = 0, step_seconds: float = 20.0, *, own_process: bool = True) -> str:
    """Start a stand-in Batch API server (once per process) and return its base URL.

    By default it runs in its own child process, like the real API (it must not compete for this process's
    GIL); ``own_process=False`` runs it on a daemon thread instead. The child stops when this process exits.
    """
    global _server
    if _server is None:
        from .standin import start_in_process, start_in_thread

        if own_process:
            _server = start_in_process(port=port, step_seconds=step_seconds)
            atexit.register(_server.stop)
        else:
            _server = start_in_thread(port=port, step_seconds=step_seconds)
    return _server.url


def use_standin(url: str) -> None:
    """Point the batches app at ``url`` (the demo's stand-in) unless the host configured a base URL.

    Also sets OPENAI_BASE_URL/OPENAI_API_KEY in the environment so worker and beat processes started afterwards
    by the demo reach the same stand-in.
    """
    if conf.openai_base_url():
        return
    os.environ["OPENAI_BASE_URL"] = url
    os.environ.setdefault("OPENAI_API_KEY", "sk-demo")
    settings.BATCHES = {**getattr(settings, "BATCHES", {}), "OPENAI_BASE_URL": url,
                        "OPENAI_API_KEY": conf.openai_api_key() or "sk-demo"}
    conf.get_config.cache_clear()
    from .providers import get_provider

    get_provider.cache_clear()


def submit_some(count: int = 12) -> int:
    """Submit ``count`` new demo analysis requests for the demo companies (none when there are none)."""
    companies = list(Company.objects.active().filter(name__in=COMPANIES))
    if not companies:
        return 0
    rng = random.Random()
    specs = []
    for _ in range(count):
        job_type = rng.choice(list(JOB_TYPES))
        text = rng.choice(SESSIONS)
        # A few requests carry stand-in failure markers so the demo shows retries and permanent errors.
        if rng.random() < 0.05:
            text += " [[standin:rate_limit_exceeded]]"
        elif rng.random() < 0.03:
            text += " [[standin:token_limit_exceeded]]"
        specs.append(RequestSpec(company=rng.choice(companies), job_type=job_type, body={
            "model": "gpt-4o-mini", "max_tokens": 60, "messages": [
                {"role": "system", "content": JOB_TYPES[job_type]}, {"role": "user", "content": text}]},
            metadata={"session": rng.randint(1, 5000)}))
    return len(submit_requests(specs))
