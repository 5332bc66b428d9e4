"""The batch pipeline end to end against the stand-in Batch API (real SDK over HTTP, real PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from batches import pipeline, tasks
from batches.models import AIProcessingRequest, BatchJob, BatchStatus, PipelineRun, ProviderCircuit, RequestStatus
from batches.providers import ProviderError

from ..factories import wait_until
from .conftest import control
from .helpers import company, submit

pytestmark = pytest.mark.django_db
MINI_IN, MINI_OUT = Decimal("0.15"), Decimal("0.60")


def run_until_processed(now=None, timeout: float = 10.0) -> None:
    """Poll the provider until no batch is in flight, then read every result file."""
    def settled() -> bool:
        pipeline.check_batches(now=now)
        return not BatchJob.objects.in_flight().exists()

    wait_until(settled, timeout=timeout, interval=0.05)
    pipeline.process_results(now=now)


def status_of(requests) -> dict[str, str]:
    by_id = dict(AIProcessingRequest.objects.filter(pk__in=[r.pk for r in requests]).values_list("custom_id",
                                                                                                "status"))
    return {r.custom_id: by_id[r.custom_id] for r in requests}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_requests_flow_through_a_real_worker_into_a_completed_batch(standin, celery_worker):
    acme = company(name="Acme")
    requests = submit(acme, [f"review {i}: great product" for i in range(10)])

    created = tasks.create_batches.delay().get(timeout=20)
    assert created["items"] == 10 and created["errors"] == 0
    job = BatchJob.objects.get()
    assert job.company == acme and job.request_count == 10 and job.status == BatchStatus.VALIDATING
    assert job.provider_batch_id.startswith("batch_") and job.input_file_id.startswith("file_")
    assert job.job_type == "sentiment" and job.model == "gpt-4o-mini"

    wait_until(lambda: tasks.check_batches.delay().get(timeout=20) and
               BatchJob.objects.get().status == BatchStatus.COMPLETED, timeout=20, interval=0.1)
    processed = tasks.process_results.delay().get(timeout=20)
    assert processed["items"] == 10

    job.refresh_from_db()
    assert job.status_history[0]["status"] == "pending"
    assert "validating" in [h["status"] for h in job.status_history]
    assert job.status_history[-1]["status"] == "completed"
    assert job.in_progress_at and job.completed_at and job.expires_at
    assert job.completed_count == 10 and job.failed_count == 0 and job.results_processed_at
    for request in AIProcessingRequest.objects.filter(pk__in=[r.pk for r in requests]):
        assert request.status == RequestStatus.COMPLETED
        assert request.response_body["choices"][0]["message"]["content"] == (
            f"Stand-in analysis of {request.custom_id}.")
        # The stand-in counts one prompt token per character and max_tokens completion tokens.
        prompt = len(request.body["messages"][0]["content"])
        assert (request.input_tokens, request.output_tokens) == (prompt, 20)
        sync = (prompt * MINI_IN + 20 * MINI_OUT) / 1_000_000
        assert request.sync_cost == sync and request.cost == sync / 2
    assert PipelineRun.objects.filter(step="create").exists() and PipelineRun.objects.filter(step="process").exists()


@pytest.mark.sqlite
def test_partial_failures_are_classified_and_retryable_ones_rescheduled(standin):
    acme = company()
    ok = submit(acme, [f"ok {i}" for i in range(7)])
    rate = submit(acme, ["busy [[standin:rate_limit_exceeded]]"])[0]
    server = submit(acme, ["boom [[standin:server_error]]"])[0]
    too_long = submit(acme, ["huge [[standin:token_limit_exceeded]]"])[0]
    broken = submit(acme, ["half a line [[standin:malformed]]"])[0]
    now = timezone.now()

    pipeline.create_batches(now=now)
    run_until_processed(now=now)

    assert set(status_of(ok).values()) == {RequestStatus.COMPLETED}
    rate.refresh_from_db()
    server.refresh_from_db()
    too_long.refresh_from_db()
    broken.refresh_from_db()
    assert (rate.status, rate.error_code) == (RequestStatus.RETRY_SCHEDULED, "rate_limit_exceeded")
    assert rate.next_attempt_at == now + timedelta(seconds=60)  # BACKOFF * 2 ** (1 - 1)
    assert (server.status, server.error_code) == (RequestStatus.RETRY_SCHEDULED, "server_error")
    assert (too_long.status, too_long.error_code) == (RequestStatus.FAILED, "token_limit_exceeded")
    assert "maximum context length" in too_long.error_message
    # A broken result line becomes that request's error; the step did not crash.
    assert (broken.status, broken.error_code) == (RequestStatus.FAILED, "malformed_result")
    job = BatchJob.objects.get()
    assert job.completed_count == 7 and job.failed_count == 4
    assert job.error_summary == {"rate_limit_exceeded": 1, "server_error": 1, "token_limit_exceeded": 1,
                                 "malformed_result": 1}

    # Nothing is resubmitted before the backoff has passed ...
    assert pipeline.retry_failed(now=now + timedelta(seconds=59)).items == 0
    # ... then both retryable failures go into a later batch (the group waited past MAX_WAIT).
    later = now + timedelta(minutes=31)
    assert pipeline.retry_failed(now=later).items == 2
    pipeline.create_batches(now=later)
    retry_job = BatchJob.objects.exclude(pk=job.pk).get()
    assert retry_job.request_count == 2
    assert set(retry_job.requests.values_list("pk", flat=True)) == {rate.pk, server.pk}
    rate.refresh_from_db()
    assert rate.attempts == 2


def test_attempts_are_capped(standin):
    acme = company(min_batch_size=1)
    request = submit(acme, ["always busy [[standin:rate_limit_exceeded]]"])[0]
    now = timezone.now()
    for attempt in range(1, 4):
        pipeline.create_batches(now=now)
        run_until_processed(now=now)
        request.refresh_from_db()
        assert request.attempts == attempt
        if attempt < 3:
            assert request.status == RequestStatus.RETRY_SCHEDULED
            assert request.next_attempt_at == now + timedelta(seconds=60 * 2 ** (attempt - 1))
            now = request.next_attempt_at
            pipeline.retry_failed(now=now)
    assert request.status == RequestStatus.FAILED and request.error_code == "rate_limit_exceeded"
    assert BatchJob.objects.count() == 3


def test_groups_wait_for_minimum_size_or_maximum_wait(standin):
    small, big = company(name="small"), company(name="big")
    submit(small, ["a", "b", "c"])
    submit(big, [f"x{i}" for i in range(10)])
    submit(big, [f"y{i}" for i in range(4)], model="gpt-4o")
    now = timezone.now()

    pipeline.create_batches(now=now)
    assert list(BatchJob.objects.values_list("company__name", "model", "request_count")) == [
        ("big", "gpt-4o-mini", 10)]

    pipeline.create_batches(now=now + timedelta(minutes=31))
    assert sorted(BatchJob.objects.values_list("company__name", "model", "request_count")) == [
        ("big", "gpt-4o", 4), ("big", "gpt-4o-mini", 10), ("small", "gpt-4o-mini", 3)]
    assert not AIProcessingRequest.objects.pending().exists()


def test_provider_limits_split_a_group(standin):
    acme = company()
    submit(acme, [f"r{i:02d}" for i in range(25)])
    with override_settings(BATCHES={**_batches(standin), "MAX_REQUESTS_PER_BATCH": 10}):
        pipeline.create_batches()
    assert sorted(BatchJob.objects.values_list("request_count", flat=True)) == [5, 10, 10]
    line = AIProcessingRequest.objects.first().line_bytes
    AIProcessingRequest.objects.update(status=RequestStatus.PENDING_BATCHING, batch=None)
    BatchJob.objects.all().delete()
    with override_settings(BATCHES={**_batches(standin), "MAX_FILE_BYTES": line * 12 + 5}):
        pipeline.create_batches()
    assert sorted(BatchJob.objects.values_list("request_count", flat=True)) == [1, 12, 12]


def _batches(standin) -> dict:
    return {"OPENAI_BASE_URL": standin.url, "OPENAI_API_KEY": "sk-test", "OPENAI_MAX_RETRIES": 0}


def test_inactive_companies_are_not_batched(standin):
    acme = company()
    submit(acme, [f"r{i}" for i in range(10)])
    acme.is_active = False
    acme.save()
    pipeline.create_batches()
    assert not BatchJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_create_runs_never_batch_a_request_twice(standin):
    companies = [company() for _ in range(4)]
    for owner in companies:
        submit(owner, [f"{owner.name} {i}" for i in range(30)])
    barrier = threading.Barrier(2)
    failures = []

    def run() -> None:
        try:
            barrier.wait()
            pipeline.create_batches()
        except Exception as exc:  # surfaced below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    # Each run skips the rows the other holds locked, so a company's rows may be split between them, and a
    # share under the minimum batch size waits for a later run: pending, in no batch, never attempted.
    claimed = AIProcessingRequest.objects.filter(status=RequestStatus.BATCHING_IN_PROGRESS)
    assert sum(BatchJob.objects.values_list("request_count", flat=True)) == claimed.count() > 0
    waiting = AIProcessingRequest.objects.exclude(pk__in=claimed.values("pk"))
    assert set(waiting.values_list("status", "batch", "attempts")) <= {(RequestStatus.PENDING_BATCHING, None, 0)}
    # Past the maximum wait a later run batches what is left; in the end every request was batched once.
    pipeline.create_batches(now=timezone.now() + timedelta(days=1))
    assert sum(BatchJob.objects.values_list("request_count", flat=True)) == 120
    assert AIProcessingRequest.objects.filter(status=RequestStatus.BATCHING_IN_PROGRESS).count() == 120
    assert set(AIProcessingRequest.objects.values_list("attempts", flat=True)) == {1}
    # The provider received each request exactly once.
    assert len(standin.batches) == BatchJob.objects.count()
    # (Counted in the input files: the stand-in, like the API, reads their lines only while validating.)
    lines = [line for b in standin.batches.values()
             for line in standin.files[b["input_file_id"]]["content"].splitlines()]
    assert len(lines) == len(set(lines)) == 120


@pytest.mark.django_db(transaction=True)
def test_create_skips_rows_another_scheduler_has_locked(standin):
    acme = company()
    locked = submit(acme, [f"locked {i}" for i in range(10)])
    free = submit(company(), [f"free {i}" for i in range(10)])
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM batches_aiprocessingrequest WHERE id = ANY(%s) FOR UPDATE",
                           [[r.pk for r in locked]])
        # Runs without waiting for the other transaction and leaves its rows alone.
        pipeline.create_batches()
        assert set(status_of(locked).values()) == {RequestStatus.PENDING_BATCHING}
        assert set(status_of(free).values()) == {RequestStatus.BATCHING_IN_PROGRESS}
    finally:
        other.rollback()
        other.close()
    pipeline.create_batches()
    assert set(status_of(locked).values()) == {RequestStatus.BATCHING_IN_PROGRESS}


class CrashingProvider:
    """The OpenAI provider of a process that dies right after uploading the input file."""

    def __init__(self) -> None:
        from batches.providers.openai import OpenAIProvider

        self.inner = OpenAIProvider()
        self.name = self.inner.name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create_batch(self, *args, **kwargs):
        raise SystemExit("worker killed between upload and batch creation")


class CrashAfterCreateProvider(CrashingProvider):
    """The process dies after the provider created the batch, before the pipeline saved its id."""

    def create_batch(self, *args, **kwargs):
        self.inner.create_batch(*args, **kwargs)
        raise SystemExit("worker killed after batch creation")


@pytest.mark.parametrize("crash", ["CrashingProvider", "CrashAfterCreateProvider"])
def test_a_crash_during_submission_neither_loses_nor_duplicates_requests(standin, crash):
    acme = company()
    requests = submit(acme, [f"r{i}" for i in range(10)])
    now = timezone.now()
    with override_settings(BATCHES={**_batches(standin), "PROVIDER": f"tests.batches.test_pipeline.{crash}"}), \
            pytest.raises(SystemExit):
        pipeline.create_batches(now=now)
    job = BatchJob.objects.get()
    assert job.status == BatchStatus.PENDING and job.submit_started_at == now
    assert set(status_of(requests).values()) == {RequestStatus.BATCHING_IN_PROGRESS}
    provider_batches_after_crash = len(standin.batches)

    # Within the lease nobody touches it (the crashed run might still be alive) ...
    pipeline.create_batches(now=now + timedelta(seconds=60))
    assert BatchJob.objects.get().status == BatchStatus.PENDING
    # ... after it, the next run resumes the same local batch.
    pipeline.create_batches(now=now + timedelta(seconds=301))
    job = BatchJob.objects.get()
    assert job.status != BatchStatus.PENDING and job.provider_batch_id
    assert len(standin.batches) == 1  # adopted, or created once after the crash before creation
    assert provider_batches_after_crash == (1 if crash == "CrashAfterCreateProvider" else 0)
    run_until_processed()
    assert set(status_of(requests).values()) == {RequestStatus.COMPLETED}
    assert sorted(standin.batches[job.provider_batch_id]["_lines"][i]["custom_id"] for i in range(10)) == sorted(
        r.custom_id for r in requests)


def test_expired_batch_keeps_finished_lines_and_retries_the_rest(standin):
    acme = company()
    finished = submit(acme, [f"done {i} [[standin:slow]]" for i in range(6)])
    unfinished = submit(acme, [f"late {i} [[standin:unfinished]]" for i in range(4)])
    now = timezone.now()
    pipeline.create_batches(now=now)
    wait_until(lambda: pipeline.check_batches(now=now) and
               BatchJob.objects.get().status == BatchStatus.IN_PROGRESS, timeout=5)
    control(standin, "advance", seconds=24 * 3600 + 1)
    run_until_processed(now=now)

    job = BatchJob.objects.get()
    assert job.status == BatchStatus.EXPIRED and job.expired_at
    assert set(status_of(finished).values()) == {RequestStatus.COMPLETED}
    assert set(status_of(unfinished).values()) == {RequestStatus.RETRY_SCHEDULED}
    assert job.completed_count == 6 and job.error_summary == {"batch_expired": 4}
    assert job.cost == sum(r.cost for r in AIProcessingRequest.objects.filter(pk__in=[f.pk for f in finished]))


def test_expire_step_cancels_a_batch_past_its_window_and_keeps_its_results(standin):
    acme = company()
    finished = submit(acme, [f"done {i} [[standin:slow]]" for i in range(7)])
    unfinished = submit(acme, [f"late {i} [[standin:unfinished]]" for i in range(3)])
    now = timezone.now()
    pipeline.create_batches(now=now)
    wait_until(lambda: pipeline.check_batches(now=now) and
               BatchJob.objects.get().status == BatchStatus.IN_PROGRESS, timeout=5)
    job = BatchJob.objects.get()
    # The provider has not expired it yet, but our clock is past expires_at + grace.
    later = job.expires_at + timedelta(minutes=16)
    assert pipeline.expire_batches(now=now).items == 0
    assert pipeline.expire_batches(now=later).items == 1
    assert BatchJob.objects.get().status == BatchStatus.CANCELLING
    run_until_processed(now=later)
    job.refresh_from_db()
    assert job.status == BatchStatus.CANCELLED and job.metadata["expired_locally"]
    assert set(status_of(finished).values()) == {RequestStatus.COMPLETED}
    assert {r.error_code for r in AIProcessingRequest.objects.filter(pk__in=[u.pk for u in unfinished])} == {
        "batch_expired"}


def test_failed_validation_fails_every_request_with_the_provider_reason(standin):
    acme = company()
    requests = submit(acme, [f"r{i}" for i in range(9)] + ["bad [[standin:batch_failed]]"])
    pipeline.create_batches()
    run_until_processed()
    job = BatchJob.objects.get()
    assert job.status == BatchStatus.FAILED and job.failed_at
    assert job.provider_errors[0]["code"] == "invalid_request"
    assert set(status_of(requests).values()) == {RequestStatus.FAILED}
    assert "Injected validation failure" in AIProcessingRequest.objects.first().error_message
    assert job.error_summary == {"batch_failed": 10}


@pytest.mark.parametrize("status", [500, 401])
def test_provider_errors_are_recorded_on_the_batch_and_retried(standin, status):
    acme = company()
    requests = submit(acme, [f"r{i}" for i in range(10)])
    control(standin, "control", fail_next={"status": status, "count": 1})
    result = pipeline.create_batches()
    assert result.errors == 1
    job = BatchJob.objects.get()
    assert job.status == BatchStatus.PENDING and job.provider_error_count == 1
    assert job.last_error.startswith("server HTTP 500" if status == 500 else "auth HTTP 401")
    assert job.submit_started_at is None
    # The next run submits the same batch.
    pipeline.create_batches()
    job.refresh_from_db()
    assert job.status == BatchStatus.VALIDATING and job.last_error == ""
    assert set(status_of(requests).values()) == {RequestStatus.BATCHING_IN_PROGRESS}


def test_network_errors_open_the_circuit_breaker(standin):
    acme = company()
    submit(acme, [f"r{i}" for i in range(10)])
    dead = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "k", "OPENAI_MAX_RETRIES": 0,
            "OPENAI_TIMEOUT": 2.0, "CIRCUIT_FAILURE_THRESHOLD": 2}
    now = timezone.now()
    with override_settings(BATCHES=dead):
        pipeline.create_batches(now=now)
        pipeline.create_batches(now=now)
        circuit = ProviderCircuit.objects.get()
        assert circuit.consecutive_failures == 2 and circuit.opened_until == now + timedelta(seconds=300)
        assert "network" in circuit.last_error
        skipped = pipeline.create_batches(now=now + timedelta(seconds=10))
        assert skipped.detail["skipped"] == "circuit open"
    job = BatchJob.objects.get()
    assert job.provider_error_count == 2 and job.status == BatchStatus.PENDING
    # Once the circuit closes again, a healthy provider takes the batch and resets the breaker.
    pipeline.create_batches(now=now + timedelta(seconds=301))
    assert BatchJob.objects.get().status == BatchStatus.VALIDATING
    assert ProviderCircuit.objects.get().consecutive_failures == 0


def test_step_query_counts_do_not_grow_with_companies_or_requests(standin, django_assert_max_num_queries):
    def scenario(companies: int, per_company: int) -> dict[str, int]:
        AIProcessingRequest.objects.all().delete()
        BatchJob.objects.all().delete()
        for _ in range(companies):
            submit(company(), [f"r{i}" for i in range(per_company)])
        counts = {"create": pipeline.create_batches().queries}
        wait_until(lambda: pipeline.check_batches() and not BatchJob.objects.in_flight().exists(), timeout=10)
        counts["check"] = pipeline.check_batches().queries
        counts["process"] = pipeline.process_results().queries
        counts["retry"] = pipeline.retry_failed().queries
        return counts

    pipeline.retry_failed()  # the first run of all creates the provider's circuit row
    ProviderCircuit.objects.get_or_create(provider="openai")
    small = scenario(1, 10)
    large = scenario(6, 25)
    assert small == large
    assert large["create"] <= 20  # the bench's ceiling; savepoints of the test transaction included


def test_active_companies_are_cached_until_a_company_changes(standin, django_assert_num_queries):
    acme = company()
    pipeline.active_companies()
    with django_assert_num_queries(0):
        assert acme.pk in pipeline.active_companies()
    beta = company()
    with django_assert_num_queries(1):
        assert beta.pk in pipeline.active_companies()


def test_process_survives_a_batch_whose_files_cannot_be_read(standin):
    acme = company()
    submit(acme, [f"r{i}" for i in range(10)])
    pipeline.create_batches()
    wait_until(lambda: pipeline.check_batches() and BatchJob.objects.get().status == BatchStatus.COMPLETED)
    control(standin, "control", fail_next={"status": 500, "count": 1})
    result = pipeline.process_results()
    assert result.errors == 1 and BatchJob.objects.get().results_processed_at is None
    assert "server HTTP 500" in BatchJob.objects.get().last_error
    assert pipeline.process_results().items == 10


def test_provider_error_types_come_from_the_sdk_not_message_text(standin):
    from batches.providers.openai import OpenAIProvider

    with pytest.raises(ProviderError) as missing:
        OpenAIProvider().retrieve_batch("batch_nope")
    assert missing.value.kind == "not_found" and missing.value.status_code == 404 and not missing.value.retryable


def test_all_requests_stay_accounted_for_in_one_transaction(standin):
    """A failing claim rolls back: requests stay pending and no empty batch is left behind."""
    acme = company()
    requests = submit(acme, [f"r{i}" for i in range(10)])
    with pytest.raises(RuntimeError), transaction.atomic():
        pipeline._claim_pending(timezone.now())
        raise RuntimeError("crash inside the claim transaction")
    assert not BatchJob.objects.exists()
    assert set(status_of(requests).values()) == {RequestStatus.PENDING_BATCHING}


def test_uploads_start_during_the_claim_and_batches_are_created_only_after_it(standin, monkeypatch):
    """Files go up while PostgreSQL rewrites the claimed rows; a claim that fails creates no provider batch."""
    acme = company()
    requests = submit(acme, [f"r{i}" for i in range(10)])
    save_claim = pipeline._save_claim
    seen = {}

    def failing_save_claim(jobs, members):
        wait_until(lambda: len(standin.files) == 1, timeout=5)  # the upload ran before the rows were rewritten
        seen["batches_at_provider"] = len(standin.batches)
        save_claim(jobs, members)
        raise RuntimeError("database gone before the claim committed")

    monkeypatch.setattr(pipeline, "_save_claim", failing_save_claim)
    with pytest.raises(RuntimeError):
        pipeline.create_batches()
    assert seen == {"batches_at_provider": 0}
    assert not standin.batches and not BatchJob.objects.exists()
    assert set(status_of(requests).values()) == {RequestStatus.PENDING_BATCHING}

    monkeypatch.setattr(pipeline, "_save_claim", save_claim)
    now = timezone.now()
    pipeline.create_batches(now=now)
    job = BatchJob.objects.get()
    # The claim leased its batch (no other run may submit it meanwhile) and the submission kept the lease.
    assert job.submit_started_at == now and job.status == BatchStatus.VALIDATING
    assert len(standin.batches) == 1


def test_the_claim_splits_many_companies_into_two_transactions():
    assert pipeline.claim_parts([]) == []
    assert pipeline.claim_parts(list(range(1, 100))) == [list(range(1, 100))]
    assert pipeline.claim_parts(list(range(250, 0, -1))) == [list(range(1, 126)), list(range(126, 251))]


@pytest.mark.sqlite
def test_a_claim_in_parts_submits_every_batch_once(standin, monkeypatch):
    monkeypatch.setattr(pipeline, "COMPANIES_PER_CLAIM_PART", 2)
    owners = [company() for _ in range(5)]
    requests = [r for owner in owners for r in submit(owner, [f"{owner.name} {i}" for i in range(10)])]
    result = pipeline.create_batches()
    assert result.items == 50 and result.detail["submitted_batches"] == 5
    assert set(status_of(requests).values()) == {RequestStatus.BATCHING_IN_PROGRESS}
    assert len(standin.batches) == 5 == BatchJob.objects.exclude(provider_batch_id=None).count()
    # Each input file holds its own batch's requests, as lines the stand-in validated.
    for job in BatchJob.objects.all():
        lines = standin.batches[job.provider_batch_id]["_lines"] or [
            orjson.loads(raw) for raw in standin.files[job.input_file_id]["content"].splitlines()]
        assert sorted(line["custom_id"] for line in lines) == sorted(
            AIProcessingRequest.objects.filter(batch=job).values_list("custom_id", flat=True))
    run_until_processed()
    assert set(status_of(requests).values()) == {RequestStatus.COMPLETED}


def test_a_failing_part_of_the_claim_leaves_its_requests_pending_and_submits_the_committed_part(
        standin, monkeypatch):
    monkeypatch.setattr(pipeline, "COMPANIES_PER_CLAIM_PART", 1)
    first, second = company(), company()
    committed = submit(first, [f"first {i}" for i in range(10)])
    failed = submit(second, [f"second {i}" for i in range(10)])
    save_claim = pipeline._save_claim

    def save_then_fail_the_second_part(jobs, members):
        saved = save_claim(jobs, members)
        if jobs[0].company_id == second.pk:
            raise RuntimeError("database gone before the second part committed")
        return saved

    monkeypatch.setattr(pipeline, "_save_claim", save_then_fail_the_second_part)
    with pytest.raises(RuntimeError):
        pipeline.create_batches()
    job = BatchJob.objects.get()
    assert job.company_id == first.pk and job.status == BatchStatus.VALIDATING and job.provider_batch_id
    assert set(status_of(committed).values()) == {RequestStatus.BATCHING_IN_PROGRESS}
    assert set(status_of(failed).values()) == {RequestStatus.PENDING_BATCHING}
    assert len(standin.batches) == 1

    monkeypatch.setattr(pipeline, "_save_claim", save_claim)
    pipeline.create_batches()
    assert len(standin.batches) == 2
    assert set(status_of(failed).values()) == {RequestStatus.BATCHING_IN_PROGRESS}


def test_step_query_counts_stay_within_20_when_the_claim_runs_in_parts(standin, monkeypatch):
    monkeypatch.setattr(pipeline, "COMPANIES_PER_CLAIM_PART", 1)
    ProviderCircuit.objects.get_or_create(provider="openai")
    for _ in range(4):
        submit(company(), [f"r{i}" for i in range(10)])
    result = pipeline.create_batches()
    assert result.detail["submitted_batches"] == 4
    assert result.queries <= 20
