"""The jobs list's free-text search: exact task id, substrings of task name and exception type, and word
prefixes in arguments, keyword arguments and exception message (PostgreSQL full-text search); a plain
substring match on SQLite. Results are checked against a Python reimplementation of the rules."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from monitoring import metrics, search
from monitoring.api import pagination
from monitoring.models import JobRun, JobState
from tests.factories import job_run

from .seed import NOW

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="full-text search is PostgreSQL's")

# PostgreSQL's text-search parser as far as the seeded texts need it: an email address, a dotted name or
# number is one word; otherwise a word is a run of letters and digits (punctuation and "_" separate).
WORD = re.compile(r"[^\W_][\w.+-]*@[^\W_]+(?:[.-][^\W_]+)*\.[^\W_]+|[^\W_]+(?:\.[^\W_]+)+|[^\W_]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def json_words(value: Any) -> list[str]:
    """Words of every key, string, number and boolean of a JSON value (null contributes none)."""
    if isinstance(value, dict):
        return [w for key, item in value.items() for w in words(key) + json_words(item)]
    if isinstance(value, list):
        return [w for item in value for w in json_words(item)]
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, str | int | float):
        return words(str(value))
    return []


def reference_search(jobs: list[JobRun], term: str) -> set[str]:
    """The rules of monitoring.search, computed in Python from the created rows."""
    term = term.strip()
    needle = term.lower()
    wanted = words(term)
    found = set()
    for job in jobs:
        text = words(job.exception_message) + json_words(job.args) + json_words(job.kwargs)
        last = wanted[-1] if wanted else ""
        by_words = bool(wanted) and all(part in text for part in wanted[:-1]) and (
            last in text if last.isdigit() else any(w.startswith(last) for w in text))
        whole = (bool(wanted) and not any(ch.isspace() for ch in term) and not term.isdigit()
                 and any(w.startswith(needle) for w in text))
        if (job.task_id == term or needle in job.task_name.lower() or needle in job.exception_type.lower()
                or by_words or whole):
            found.add(job.task_id)
    return found


def seed_jobs(count: int = 300) -> list[JobRun]:
    rng = random.Random(11)
    messages = ["query 42 exceeded 30s", "550 mailbox unavailable: Ann@Example.com", "50% done_ok",
                r"path C:\temp\x not found", "Zeitüberschreitung bei Straße 7", "line one\nline two",
                "rate 1.5 over v2.0.1", ""]
    jobs = []
    for i in range(count):
        # Finished rows are found through the index, unfinished ones (STARTED, PENDING, and REVOKED ones
        # the factory leaves without finished_at) through the finished_at index.
        state = rng.choice([JobState.SUCCESS, JobState.FAILURE, JobState.FAILURE, JobState.STARTED,
                            JobState.PENDING, JobState.REVOKED])
        failed = state == JobState.FAILURE or (state == JobState.REVOKED and rng.random() < 0.5)
        jobs.append(job_run(
            task_name=rng.choice(["app.send_email", "app.Report", "billing.charge_card"]),
            state=state,
            exception_type=rng.choice(["TimeoutError", "DeliveryError", "KeyError", "Straßenfehler"]) if failed else "",
            exception_message=rng.choice(messages) if failed else "",
            args=rng.choice([[i, f"user{i % 17}@example.com"], [], None, ["100%_sure"], ["Größe", 2.5]]),
            kwargs=rng.choice([{"to": f"bob{i % 5}@Example.org", "n": i}, {}, None, {"path": "a\\b"},
                               {"ok": True, "it's": "O'Brien"}]),
            created_at=NOW - timedelta(minutes=i)))
    return jobs


TERMS = [
    "user3@example.com", "USER1", "user1@", "example", "example.com", "send_email", "APP.REPORT", "timeouterror",
    "Delivery", "mailbox unavailable", "unavail mail", "unavailable mail", "ann@example.com", "ann@example", "Ann",
    "bob4@example.org",
    '"to": "bob2', "query 42", "42 query", "50%", "_ok", "ok", "true", "%", "_", "100%_", "100%_sure", "C:\\temp",
    "a\\b", "Straße", "straßen", "ZEITÜBER", "größe", "line one\nline two", "one\nline", "ab", "e", "1.5", "v2.0",
    "2.5", "it's", "o'brien", "'", "\\", "{} ", "app.send_email TimeoutError", "zzz-nothing-like-this", "7", "42",
    "query 4", "user1@example.com 1",
]
NO_MATCH = {"example", "unavail mail", "query 4", "user1@example.com 1", "example.com", "ab", "%", "'", "\\",
            "{} ", "app.send_email TimeoutError", "zzz-nothing-like-this"}


@postgresql_only
def test_search_matches_the_reference_rules():
    jobs = seed_jobs()  # once for all terms: seeding is most of this test's time
    mismatches = {}
    for term in TERMS:
        got = set(metrics.search_jobs(JobRun.objects.all(), term).values_list("task_id", flat=True))
        expected = reference_search(jobs, term)
        if got != expected:
            mismatches[term] = {"unexpected": len(got - expected), "missing": len(expected - got)}
        assert expected or term in NO_MATCH, f"{term!r} matches nothing: the seed no longer exercises it"
    assert not mismatches


@postgresql_only
def test_search_semantics_by_example():
    mail = job_run(state=JobState.FAILURE, task_name="app.mail", exception_type="DeliveryError",
                   exception_message="550 mailbox unavailable", args=["user77@example.com"], kwargs={"retry": 3})
    running = job_run(state=JobState.STARTED, task_name="app.report", args=[{"customer": "ACME-Corp"}])

    def found(term: str) -> set[str]:
        return set(metrics.search_jobs(JobRun.objects.all(), term).values_list("task_id", flat=True))

    both, neither = {mail.task_id, running.task_id}, set()
    assert found("user77@example.com") == found("USER77@EX") == found("mailbox unav") == {mail.task_id}
    assert found("retry") == found("3") == found("liveryErr") == found("p.ma") == {mail.task_id}
    assert found("acme") == found("corp") == found("acme-corp") == found("customer") == {running.task_id}
    assert found("app.") == both
    # Not substrings of words: the middle of a word, the domain of an email, a word out of its field order
    # spanning the task name.
    assert found("ailbox") == found("example.com") == found("77@example.com") == neither
    assert found("app.mail mailbox") == neither


@postgresql_only
@pytest.mark.parametrize(("term", "expected"), [
    # The parser keeps an email address or a host name whole: one prefix, not the same one twice.
    ("user77@example.com", "'user77@example.com':*"),
    ("Example.COM", "'example.com':*"),
    # Split into words: the words (the last one a prefix) or the whole term as the beginning of one word.
    ("ann@example", "'ann' & 'example':* | 'ann@example':*"),
    ("done_ok", "'done' & 'ok':* | 'done_ok':*"),
    ("mailbox unav", "'mailbox' & 'unav':*"),
    ("996", "'996'"),
])
def test_the_text_query_of_a_term(term, expected):
    sql, params = search.text_query(term)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ({sql})::text", params)
        assert cursor.fetchone()[0] == expected


@postgresql_only
def test_finished_rows_are_found_through_the_search_index():
    # The migration's index expression and search.DOCUMENT must be the same expression, or the planner
    # cannot use the index. Scans that read every row are made unattractive so this small table shows it.
    seed_jobs(20)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
    plan = metrics.search_jobs(JobRun.objects.all(), "user3@example.com").explain()
    assert search.INDEX_NAME in plan


def test_search_by_task_id_is_an_exact_match():
    jobs = seed_jobs(20)
    target = jobs[7]
    assert list(metrics.search_jobs(JobRun.objects.all(), f"  {target.task_id} ").values_list(
        "task_id", flat=True)) == [target.task_id]
    # A fragment of an id is not an id match (ids are not in the searched text).
    assert target.task_id not in set(metrics.search_jobs(JobRun.objects.all(), target.task_id[:8]).values_list(
        "task_id", flat=True))


@pytest.mark.sqlite
@pytest.mark.parametrize("term", ["", "   ", "\t\n"])
def test_blank_search_filters_nothing(term):
    seed_jobs(10)
    assert metrics.search_jobs(JobRun.objects.all(), term).count() == 10


@pytest.mark.sqlite
@pytest.mark.parametrize("term", ["user3@example.com", "USER1", "ample.co", "send_email", "50%", "_", "a\\b",
                                  "query 42", "ZZZ"])
def test_other_databases_match_substrings_of_each_field(term):
    if connection.vendor == "postgresql":
        pytest.skip("the fallback of databases without full-text search")
    jobs = seed_jobs(60)
    needle = term.strip().lower()
    expected = {j.task_id for j in jobs if j.task_id == term or any(needle in value.lower() for value in (
        j.task_name, j.exception_type, j.exception_message,
        "" if j.args is None else connection.ops.adapt_json_value(j.args, None),
        "" if j.kwargs is None else connection.ops.adapt_json_value(j.kwargs, None)))}
    got = set(metrics.search_jobs(JobRun.objects.all(), term).values_list("task_id", flat=True))
    assert got == expected


@pytest.fixture
def jobs_api(viewer):
    """GET the jobs list as a viewer: ``jobs_api({"search": ...})``."""
    api = APIClient()
    api.force_authenticate(viewer)
    url = reverse("monitoring-api:job-list")
    return lambda params: api.get(url, params)


def test_search_page_query_count_does_not_grow_with_matches(jobs_api):
    first = job_run(task_name="app.only", args=["user@example.com"], created_at=NOW)
    jobs_api({})  # the viewer's permissions are cached on the user from here on

    def page() -> tuple[dict, int]:
        with CaptureQueriesContext(connection) as queries:
            response = jobs_api({"search": "user"})
        assert response.status_code == 200
        return response.json(), len(queries)

    small, small_queries = page()
    assert small["count"] == 1
    jobs = [first, *seed_jobs(400)]
    large, large_queries = page()
    assert large["count"] == len(reference_search(jobs, "user")) > 50
    assert len(large["results"]) == 50
    # The page and its capped count; on PostgreSQL also the distinct task names, the distinct exception
    # types and the unfinished matches.
    assert small_queries == large_queries <= 5


@postgresql_only
def test_a_capped_search_pages_newest_first_through_recent_windows(jobs_api, monkeypatch):
    monkeypatch.setattr(pagination, "SEARCH_COUNT_LIMIT", 8)
    now = timezone.now()
    # Matches within the last hour, day and week and older, and rows that do not match in between.
    ages = [timedelta(minutes=5), timedelta(minutes=50), timedelta(hours=5), timedelta(days=3), timedelta(days=20)]
    matches = [job_run(args=[f"needle{i}"], created_at=now - age - timedelta(seconds=i))
               for age in ages for i in range(2)]
    for age in ages:
        job_run(args=["hay"], created_at=now - age + timedelta(seconds=30))
    newest = [j.task_id for j in sorted(matches, key=lambda j: (j.created_at, j.id), reverse=True)]

    for limit in (1, 2, 3, 5):
        for page in range(1, 8 // limit + 1):
            body = jobs_api({"search": "needle", "limit": limit, "page": page}).json()
            assert (body["count"], body["count_capped"]) == (8, True)
            assert [r["task_id"] for r in body["results"]] == newest[(page - 1) * limit:page * limit], (limit, page)
    oldest = jobs_api({"search": "needle", "limit": 3, "ordering": "created_at"}).json()
    assert [r["task_id"] for r in oldest["results"]] == newest[::-1][:3]
    beyond = jobs_api({"search": "needle", "limit": 4, "page": 3})
    assert beyond.status_code == 400 and "cursor" in beyond.json()["page"][0]


@postgresql_only
def test_a_branch_over_the_cap_caps_the_count_and_other_filters_still_apply(jobs_api, monkeypatch):
    monkeypatch.setattr(pagination, "SEARCH_COUNT_LIMIT", 3)
    for queue in ("a", "a", "a", "a", "b"):
        job_run(state=JobState.FAILURE, queue=queue, exception_type="DeliveryError", exception_message="x")
    job_run(queue="b", args=["delivery"])

    def count(**params) -> tuple[int, bool]:
        body = jobs_api({"search": "delivery", **params}).json()
        return body["count"], body["count_capped"]

    assert count() == (3, True)  # 6 matches
    assert count(queue="b") == (2, False)  # one by exception type, one by its arguments
    assert count(queue="b", state="FAILURE") == (1, False)
