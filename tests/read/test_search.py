"""The jobs list's free-text search: per-column case-insensitive semantics (the same rows as ``icontains`` on
each column, or the exact task id), in a constant number of queries."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from monitoring import metrics
from monitoring.models import JobRun, JobState
from tests.factories import job_run

from .seed import NOW

pytestmark = pytest.mark.django_db

def plain_search(term: str) -> set[str]:
    """The reference semantics: exact task id, or the term inside any one searched column (icontains)."""
    term = term.strip()
    return set(JobRun.objects.filter(
        Q(task_id=term) | Q(task_name__icontains=term) | Q(exception_type__icontains=term)
        | Q(exception_message__icontains=term) | Q(args__icontains=term) | Q(kwargs__icontains=term),
    ).values_list("task_id", flat=True))


def seed_jobs(count: int = 300) -> list[JobRun]:
    rng = random.Random(11)
    messages = ["query 42 exceeded 30s", "550 mailbox unavailable: Ann@Example.com", "50% done_ok",
                r"path C:\temp\x not found", "Zeitüberschreitung bei Straße 7", "line one\nline two", ""]
    jobs = []
    for i in range(count):
        failed = rng.random() < 0.4
        jobs.append(job_run(
            task_name=rng.choice(["app.send_email", "app.Report", "billing.charge_card"]),
            state=JobState.FAILURE if failed else JobState.SUCCESS,
            exception_type=rng.choice(["TimeoutError", "DeliveryError", "KeyError"]) if failed else "",
            exception_message=rng.choice(messages) if failed else "",
            args=rng.choice([[i, f"user{i % 17}@example.com"], [], None, ["100%_sure"]]),
            kwargs=rng.choice([{"to": f"bob{i % 5}@Example.org", "n": i}, {}, None, {"path": "a\\b"}]),
            created_at=NOW - timedelta(minutes=i)))
    return jobs


TERMS = [
    "user3@example.com", "USER1", "example", "send_email", "APP.REPORT", "timeouterror", "Delivery",
    "mailbox unavailable", "ann@example.com", "bob4@example.org", '"to": "bob2', "query 42", "50%", "_ok", "%",
    "_", "100%_", "C:\\temp", "a\\b", "Straße", "ZEITÜBER", "line one\nline two", "one\nline", "ab", "e",
    # Spans two columns of one row in the concatenated document: must not match anything.
    "app.send_email TimeoutError", "TimeoutError query", "{} ", "zzz-nothing-like-this",
]


@pytest.mark.parametrize("term", TERMS)
def test_search_returns_exactly_the_rows_a_per_column_icontains_finds(term):
    jobs = seed_jobs()
    got = set(metrics.search_jobs(JobRun.objects.all(), term).values_list("task_id", flat=True))
    assert got == plain_search(term)
    # Independent check on the plain text columns, computed in Python from the created rows (ASCII terms:
    # how non-ASCII letters fold depends on the database's locale).
    if term.isascii():
        needle = term.strip().lower()
        text_hits = {j.task_id for j in jobs if any(needle in value.lower() for value in (
            j.task_name, j.exception_type, j.exception_message))}
        assert text_hits <= got


def test_search_by_task_id_is_an_exact_match():
    jobs = seed_jobs(20)
    target = jobs[7]
    assert list(metrics.search_jobs(JobRun.objects.all(), f"  {target.task_id} ").values_list(
        "task_id", flat=True)) == [target.task_id]
    # A fragment of an id is not an id match (ids are not in the searched text).
    assert target.task_id not in set(metrics.search_jobs(JobRun.objects.all(), target.task_id[:8]).values_list(
        "task_id", flat=True))


def test_blank_search_filters_nothing():
    seed_jobs(10)
    assert metrics.search_jobs(JobRun.objects.all(), "   ").count() == 10


def test_search_page_query_count_does_not_grow_with_matches(viewer):
    api = APIClient()
    api.force_authenticate(viewer)
    url = reverse("monitoring-api:job-list")
    job_run(task_name="app.only", exception_message="example", created_at=NOW)
    api.get(url)  # the viewer's permissions are cached on the user from here on

    def page() -> tuple[dict, int]:
        with CaptureQueriesContext(connection) as queries:
            response = api.get(url, {"search": "example"})
        assert response.status_code == 200
        return response.json(), len(queries)

    small, small_queries = page()
    assert small["count"] == 1
    seed_jobs(120)
    large, large_queries = page()
    assert large["count"] == len(plain_search("example")) > 50
    assert len(large["results"]) == 50
    assert small_queries == large_queries <= 2  # the page and its capped count
